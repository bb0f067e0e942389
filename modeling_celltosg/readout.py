"""Readout of CellTOSG-FM's cell classifier: which nodes may be read, and how node states become one cell
vector — attention pooling (one query, v1, or several) or the gene-wise readout (v2 default)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .configuration_celltosg import CellTOSGConfig
from .tosg_graph import TOSGGraph


def measured_node_mask(measured_mask: Tensor | None, graph: TOSGGraph) -> Tensor | None:
    """Bool `[B, N]`: measured transcripts and every protein with at least one measured transcript
    (along `graph.internal_edge_index`); None when `measured_mask` is None (everything measured)."""
    if measured_mask is None:
        return None
    src, dst = graph.internal_edge_index
    proteins = torch.zeros(measured_mask.size(0), graph.num_proteins, device=measured_mask.device)
    proteins.index_add_(1, dst - graph.num_transcripts, measured_mask[:, src].float())
    return torch.cat([measured_mask, proteins > 0], dim=1)


class CellTOSGAttentionPooling(nn.Module):
    r"""Multi-query attention pooling over nodes: for each query `q`,
    :math:`a_{c,n} = \mathrm{softmax}_n(q^\top \tanh(W h_{c,n}) / \sqrt d)`, :math:`z_{c,q} = \sum_n a_{c,n} h_{c,n}`;
    the `Q = config.num_readout_queries` pooled vectors are concatenated (Q = 1: the v1 readout). Several
    queries let the cell vector keep several weighted views of its nodes instead of one mean.
    Parameters are `O(Q·d + d²)`, independent of `N`.

    Shapes: `hidden_states` `[B, N, d]`, optional `node_mask` bool `[B, N]` (nodes that may be pooled;
    the classifier passes measured transcripts and the proteins they encode, so the thousands of nodes
    whose state is identical in every cell do not drown the signal) → pooled `[B, Q·d]`, weights `[B, N]`
    (averaged over the queries).
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        d = config.hidden_size
        self.key = nn.Linear(d, d)
        self.query = nn.Parameter(torch.zeros(config.num_readout_queries, d))

    def forward(self, hidden_states: Tensor, node_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        scores = torch.tanh(self.key(hidden_states)) @ self.query.t() / math.sqrt(self.query.size(-1))  # [B, N, Q]
        if node_mask is not None:
            scores = scores.masked_fill(~node_mask.unsqueeze(-1), float("-inf"))
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bnq,bnd->bqd", weights, hidden_states)
        return pooled.flatten(1), weights.mean(-1)


class CellTOSGGeneWiseReadout(nn.Module):
    """Gene-wise readout: every node state `[d]` → `readout_channels` numbers by one shared linear map, and
    the numbers of all `N` nodes side by side form the cell vector `[N · r]` — like the genes × values input
    of a linear model or an MLP, but each number comes from a graph-contextualised node state. Nodes outside
    `node_mask` (unmeasured, unreached) read as 0.

    Shapes: `hidden_states` `[B, N, d]`, optional `node_mask` bool `[B, N]` → `[B, N · r]`, and per-node weights
    `[B, N]` (the norm of each node's numbers).
    """

    def __init__(self, config: CellTOSGConfig):
        super().__init__()
        self.project = nn.Linear(config.hidden_size, config.readout_channels)

    def forward(self, hidden_states: Tensor, node_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        values = self.project(hidden_states)  # [B, N, r]
        if node_mask is not None:
            values = values * node_mask.unsqueeze(-1)
        return values.flatten(1), values.norm(dim=-1)


def readout_width(config: CellTOSGConfig) -> int:
    """Width of the cell vector the readout of `config` gives."""
    if config.readout == "gene_wise":
        return (config.num_transcripts + config.num_proteins) * config.readout_channels
    return config.hidden_size * config.num_readout_queries


def build_readout(config: CellTOSGConfig) -> nn.Module:
    """The readout module `config.readout` names."""
    return CellTOSGGeneWiseReadout(config) if config.readout == "gene_wise" else CellTOSGAttentionPooling(config)


__all__ = ["measured_node_mask", "CellTOSGAttentionPooling", "CellTOSGGeneWiseReadout", "readout_width",
           "build_readout"]
