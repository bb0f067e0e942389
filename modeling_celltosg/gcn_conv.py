"""Graph convolution (GCN) on a topology shared by all cells of a batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn.inits import glorot
from torch_geometric.utils import add_remaining_self_loops, scatter

from .sparse_functions import ConstantSparseProduct
from .topology import csr_by, memoize_on_topology


class SharedGCNConv(nn.Module):
    r"""Graph convolution (Kipf & Welling 2017) on a topology shared by all cells of a batch.

    :math:`X' = \hat D^{-1/2} \hat A \hat D^{-1/2} X W + b`, :math:`\hat A = A + I` (remaining self-loops
    added with weight 1, degree counted on the target), identical to PyG's `GCNConv` defaults.
    Aggregation is one CSR sparse–dense product `[N, N] @ [N, B·F]` for all cells; the normalised
    operator and its transpose (for the backward pass) are built once per `edge_index` tensor and reused
    (see `_TopologyCache`).

    Shapes: `x` `[N, B, F_in]`, `edge_index` `[2, E]` → `[N, B, F_out]`. With
    `return_attention_weights=True` also returns `(edge_index with self-loops [2, E'], weights [E', B, 1])`
    (the symmetric normalisation coefficients, identical for every cell).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and zero bias, as PyG."""
        glorot(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        x = self.lin(x)
        operator = memoize_on_topology(edge_index, ("gcn", n), lambda: self.normalized_operator(edge_index, n))
        out = self.message_and_aggregate(x, operator)
        if self.bias is not None:
            out = out.add_(self.bias)  # in place: the sparse product does not keep its output
        if return_attention_weights:
            loops, norm = operator[:2]
            return out, (loops, norm.to(out.dtype).view(-1, 1, 1).expand(-1, b, 1))
        return out

    @staticmethod
    def normalize(edge_index: Tensor, num_nodes: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Add remaining self-loops and compute `deg^-1/2[src] · deg^-1/2[dst]` per edge."""
        edge_index, _ = add_remaining_self_loops(edge_index, num_nodes=num_nodes)
        ones = torch.ones(edge_index.size(1), dtype=dtype, device=edge_index.device)
        deg = scatter(ones, edge_index[1], dim=0, dim_size=num_nodes, reduce="sum")
        deg_inv_sqrt = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        return edge_index, deg_inv_sqrt[edge_index[0]] * deg_inv_sqrt[edge_index[1]]

    @classmethod
    def normalized_operator(cls, edge_index: Tensor, num_nodes: int) -> tuple:
        """(edge_index with self-loops, norm [E'], CSR of `A` (rows = targets), CSR of `Aᵀ` (rows = sources)),
        CSR parts given as (crow, col, values); `norm` and the values are float32."""
        loops, norm = cls.normalize(edge_index, num_nodes)
        src, dst = loops
        crow, col, order = csr_by(dst, src, num_nodes)
        crow_t, col_t, order_t = csr_by(src, dst, num_nodes)
        return loops, norm, (crow, col, norm[order]), (crow_t, col_t, norm[order_t])

    @staticmethod
    def message_and_aggregate(x: Tensor, operator: tuple) -> Tensor:
        """`out[t] = Σ_{s→t} norm · x[s]` as one sparse product over all cells."""
        (crow, col, values), (crow_t, col_t, values_t) = operator[2], operator[3]
        return ConstantSparseProduct.apply(x, crow, col, values, crow_t, col_t, values_t)
