"""Graph attention (GAT) on a topology shared by all cells of a batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.inits import glorot
from torch_geometric.utils import add_self_loops, remove_self_loops

from .sparse_functions import (
    CSRAggregate,
    FusedGATAttention,
    GATEdgeSoftmax,
    accumulation_dtype,
    channel_major,
    dropout_keep,
    node_major,
)
from .topology import CSRTopology, memoize_on_topology


def _gat_self_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    """PyG `GATConv` default: existing self-loops removed, then one self-loop per node appended."""
    edge_index, _ = remove_self_loops(edge_index)
    edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
    return edge_index


class SharedGATConv(nn.Module):
    r"""Graph attention (GAT, Veličković et al. 2018) on a topology shared by all cells of a batch.

    Per cell `c` and head `h`: :math:`\alpha_{ij} = \mathrm{softmax}_{j \in N(i) \cup \{i\}}
    (\mathrm{LeakyReLU}_{0.2}(a_s^\top W x_j + a_t^\top W x_i))` and :math:`x'_i = \|_h \sum_j
    \alpha_{ij} W x_j + b` (heads concatenated, or averaged with `concat=False`). Existing self-loops
    are replaced by one per node, as PyG's `GATConv` defaults. Attention is computed per cell: α is
    `[E, B, H]` over the shared edge list.

    Shapes: `x` `[N, B, F_in]`, `edge_index` `[2, E]` → `[N, B, H·C]` (`concat`) or `[N, B, C]`. With
    `cpu_kernels=False` makes CPU inputs take the channel-major torch path of other devices. With
    `return_attention_weights=True` also returns `(edge_index with self-loops [2, E'], α [E', B, H])`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        bias: bool = True,
        cpu_kernels: bool = True,
    ):
        super().__init__()
        # CPU inputs take the fused numba kernels; False sends them down the channel-major torch path that
        # other devices (CUDA) always take.
        self.cpu_kernels = cpu_kernels
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and attention vectors, zero bias, as PyG."""
        glorot(self.lin.weight)
        glorot(self.att_src)
        glorot(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        h = self.heads
        topology = memoize_on_topology(edge_index, ("gat-csr", n),
                                  lambda: CSRTopology.from_edge_index(_gat_self_loops(edge_index, n), n))
        if self.cpu_kernels and x.device.type == "cpu":
            out, alpha = self._fused_forward(x, topology)
        else:
            out, alpha = self._channel_major_forward(x, topology)
        if self.bias is not None:
            out = out.add_(self.bias)  # in place: the aggregation does not keep its output
        if return_attention_weights:
            loops = _gat_self_loops(edge_index, n)  # recomputed: not kept alive for every step
            return out, (loops, alpha.index_select(0, topology.inverse_order).view(-1, b, h))
        return out

    def _fused_forward(self, x: Tensor, topology: CSRTopology) -> tuple[Tensor, Tensor]:
        """CPU: node-major `[N, B·H, C]` features through [`FusedGATAttention`] → (`[N, B, ·]`, α `[E, B·H]`)."""
        n, b, _ = x.shape
        h, c = self.heads, self.out_channels
        acc = accumulation_dtype(x.dtype)
        hk = self.lin(x).to(acc).reshape(n, b * h, c)  # [N, K, C], k = cell · H + head
        keep = dropout_keep((topology.src.numel(), b * h), self.dropout, self.training, hk)
        att_src, att_dst = (att.to(acc).view(h, c).contiguous() for att in (self.att_src, self.att_dst))
        out, alpha = FusedGATAttention.apply(hk, att_src, att_dst, keep, topology, self.negative_slope, b)
        out = out if self.concat else out.view(n, b, h, c).mean(dim=2)
        return out.to(x.dtype), alpha

    def _channel_major_forward(self, x: Tensor, topology: CSRTopology) -> tuple[Tensor, Tensor]:
        """CUDA (any non-CPU device): channel-major `[B·H, N, C]` torch path → (`[N, B, ·]`, α `[E, B·H]`)."""
        n, b, _ = x.shape
        h, c = self.heads, self.out_channels
        xk = channel_major(self.lin(x), h)  # [B·H, N, C]
        per_head = xk.view(b, h, n, c)
        a_src = (per_head * self.att_src.view(1, h, 1, c)).sum(-1).view(b * h, n).t().contiguous()  # [N, B·H]
        a_dst = (per_head * self.att_dst.view(1, h, 1, c)).sum(-1).view(b * h, n).t().contiguous()
        # [B·H, E] in the target-major edge order: per cell and head, per target
        alpha = GATEdgeSoftmax.apply(a_src, a_dst, topology.src, topology.dst, self.negative_slope)
        out = self.message_and_aggregate(xk, nn.functional.dropout(alpha, self.dropout, self.training), topology)
        return node_major(out, b, self.concat), alpha.t()

    @staticmethod
    def message_and_aggregate(xk: Tensor, alpha: Tensor, topology: CSRTopology) -> Tensor:
        """`out[k, t] = Σ_{s→t} α[k, e] · x[k, s]`: `xk` `[K, N, C]` (channel-major), `alpha` `[K, E]` in
        `topology`'s target-major edge order → `[K, N, C]` (see :class:`CSRAggregate`: one sparse product
        per channel, no `[E, K, C]` message tensor)."""
        return CSRAggregate.apply(xk, alpha, topology)
