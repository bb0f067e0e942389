"""Graph transformer attention (UniMP) on a topology shared by all cells of a batch."""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch_geometric.utils import softmax

from .gat_conv import SharedGATConv
from .sparse_functions import (
    CSREdgeDot,
    FusedDotAttention,
    accumulation_dtype,
    channel_major,
    dropout_keep,
    node_major,
)
from .topology import CSRTopology, memoize_on_topology


class SharedTransformerConv(nn.Module):
    r"""Graph transformer (UniMP, Shi et al. 2021) on a topology shared by all cells of a batch.

    Per cell and head: :math:`\alpha_{ij} = \mathrm{softmax}_{j \in N(i)}((W_q x_i)^\top (W_k x_j) /
    \sqrt{C})` and :math:`x'_i = W_r x_i + \|_h \sum_j \alpha_{ij} W_v x_j`, as PyG's `TransformerConv`
    defaults (`root_weight=True`, `beta=False`, no self-loops added, biases on all projections).

    Shapes: `x` `[N, B, F_in]`, `edge_index` `[2, E]` → `[N, B, H·C]` (`concat`) or `[N, B, C]`. With
    `cpu_kernels=False` makes CPU inputs take the channel-major torch path of other devices. With
    `return_attention_weights=True` also returns `(edge_index [2, E], α [E, B, H])`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
        cpu_kernels: bool = True,
    ):
        super().__init__()
        # CPU inputs take the fused numba kernels; False sends them down the channel-major torch path that
        # other devices (CUDA) always take.
        self.cpu_kernels = cpu_kernels
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.dropout = concat, dropout
        self.lin_key = nn.Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_query = nn.Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_value = nn.Linear(in_channels, heads * out_channels, bias=bias)
        self.lin_skip = nn.Linear(in_channels, heads * out_channels if concat else out_channels, bias=bias)

    def reset_parameters(self) -> None:
        """PyTorch default `Linear` initialisation on every projection (as PyG's `Linear` default)."""
        for lin in (self.lin_key, self.lin_query, self.lin_value, self.lin_skip):
            lin.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        h, c = self.heads, self.out_channels
        topology = memoize_on_topology(edge_index, ("csr", n), lambda: CSRTopology.from_edge_index(edge_index, n))
        if self.cpu_kernels and x.device.type == "cpu":
            acc = accumulation_dtype(x.dtype)
            query, key, value = (lin(x).to(acc).reshape(n, b * h, c) for lin in (self.lin_query, self.lin_key,
                                                                               self.lin_value))
            keep = dropout_keep((topology.src.numel(), b * h), self.dropout, self.training, query)
            out, alpha = FusedDotAttention.apply(query, key, value, keep, topology, 1.0 / math.sqrt(c), b)
            out = (out if self.concat else out.view(n, b, h, c).mean(dim=2)).to(x.dtype)
        else:  # channel-major torch path (CUDA)
            query, key = channel_major(self.lin_query(x), h), channel_major(self.lin_key(x), h)  # [B·H, N, C]
            scores = CSREdgeDot.apply(query, key, topology) / math.sqrt(c)  # [B·H, E], target-major edge order
            alpha = softmax(scores.t(), topology.dst, num_nodes=n, dim=0)  # [E, B·H]
            out = SharedGATConv.message_and_aggregate(
                channel_major(self.lin_value(x), h),
                nn.functional.dropout(alpha.t().contiguous(), self.dropout, self.training), topology,
            )
            out = node_major(out, b, self.concat)
        out = out + self.lin_skip(x)
        if return_attention_weights:
            return out, (edge_index, alpha.index_select(0, topology.inverse_order).view(-1, b, h))
        return out
