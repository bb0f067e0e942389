"""GATv2 (dynamic graph attention) on a topology shared by all cells of a batch, through PyG's `GATv2Conv`."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv

from .topology import memoize_on_topology


class SharedGATv2Conv(nn.Module):
    r"""GATv2 (Brody, Alon & Yahav, ICLR 2022): :math:`\alpha_{ij} = \mathrm{softmax}_j(a^\top
    \mathrm{LeakyReLU}(W_s x_j + W_t x_i))` — attention that depends on the query and key jointly ("dynamic"),
    where GAT's ranking of neighbours is the same for every query ("static"). PyG's `GATv2Conv` (self-loops
    replaced by one per node, heads concatenated) is applied to the `B` cells as one disjoint graph of `B`
    copies of the shared edge list (built once per edge tensor and batch size). Unlike `SharedGATConv` there
    is no fused CPU kernel: the per-edge `[B·E, H, C]` intermediate of GATv2 is materialised.

    Shapes: `x` `[N, B, F_in]`, `edge_index` `[2, E]` → `[N, B, H·C]`; with `return_attention_weights=True`
    also `(edge_index with one self-loop per node [2, E'], α [E', B, H])` in the order of PyG's
    `GATv2Conv` (the edges without self-loops, then the self-loops).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv = GATv2Conv(in_channels, out_channels, heads=heads, dropout=dropout, add_self_loops=True)

    def _batched_edges(self, edge_index: Tensor, num_nodes: int, batch: int) -> Tensor:
        def build() -> Tensor:
            offsets = torch.arange(batch, device=edge_index.device).repeat_interleave(edge_index.size(1)) * num_nodes
            return edge_index.repeat(1, batch) + offsets
        return memoize_on_topology(edge_index, ("gatv2-batched", num_nodes, batch), build)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        flat = x.transpose(0, 1).reshape(b * n, -1)  # cell-major: node i of cell c at row c·N + i
        edges = self._batched_edges(edge_index, n, b)
        out, (loops_index, alpha) = self.conv(flat, edges, return_attention_weights=True)
        out = out.view(b, n, -1).transpose(0, 1)
        if not return_attention_weights:
            return out
        kept = loops_index.size(1) - b * n  # PyG drops existing self-loops, then appends one per node
        per_cell = kept // b
        edge_alpha = alpha[:kept].view(b, per_cell, -1).transpose(0, 1)
        loop_alpha = alpha[kept:].view(b, n, -1).transpose(0, 1)
        index = torch.cat([loops_index[:, :per_cell], torch.arange(n, device=x.device).expand(2, n)], dim=1)
        return out, (index, torch.cat([edge_alpha, loop_alpha], dim=0))


__all__ = ["SharedGATv2Conv"]
