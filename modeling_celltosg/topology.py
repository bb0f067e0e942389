"""Message passing over ONE shared graph for a whole batch of cells.

All cells of a batch share the Text-Omic Signaling Graph (TOSG) topology; only node features differ.
Features are therefore laid out `[N, B, F]` (nodes, cells, channels) and every layer does a single pass
over the `E` edges for all `B` cells at once: the edge list is never replicated per cell and no PyG
`Batch` is built. Conventions follow PyG: `edge_index[0]` is the source, `edge_index[1]` the target,
messages flow 0 → 1, and self-loops are handled as by the matching PyG layer's defaults.

Layers: [`SharedGCNConv`] (Kipf & Welling 2017), [`SharedGATConv`] (Veličković et al. 2018) and
[`SharedTransformerConv`] (UniMP, Shi et al. 2021). Each matches its PyG counterpart (`GCNConv`,
`GATConv`, `TransformerConv` with default arguments) applied to every cell separately. GCN's
aggregation is one CSR product for all cells (on CPU [`csr_matmul`], written in place). On CPU the
attention layers run fused numba kernels ([`cpu_kernels`]) over node-major `[N, B·H, C]` features:
scores, softmax and aggregation per target in one pass over the target-major CSR, backward in one pass
over targets and one over sources (`FusedGATAttention`, `FusedDotAttention`). On other devices (CUDA)
they work channel-major (`[B·H, N, C]`, one channel per cell and head): each channel's aggregation is a
CSR sparse–dense product and the UniMP logits / attention gradients are sampled dense–dense products
(`CSRAggregate`, `CSREdgeDot`).

This module holds the per-topology preprocessing the layers share: a memo keyed on the `edge_index`
tensor and CSR structures. The layers are in `gcn_conv.py`, `gat_conv.py` and `transformer_conv.py`, their
autograd functions in `sparse_functions.py`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor


class _TopologyCache:
    """Per-topology memo: values derived from an `edge_index` tensor (self-loops, normalisation, sparse
    structures), kept while that very tensor object is alive and not modified in place.

    Keyed by object identity plus the tensor's in-place version counter (`Tensor._version`), with a weak
    reference, so a different tensor that happens to reuse the same memory can never hit a stale entry.
    The shared topology is the same for every batch (and every layer of a forward pass), so the
    `O(E log E)` preprocessing runs once instead of once per layer and step.
    """

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, int, dict]] = {}

    def get(self, edge_index: Tensor, key: tuple, build):
        """Return `build()` memoised under `(edge_index, key)`."""
        ident = id(edge_index)
        entry = self._entries.get(ident)
        if entry is None or entry[0]() is not edge_index or entry[1] != edge_index._version:
            ref = weakref.ref(edge_index, lambda _ref, ident=ident: self._drop(ident, _ref))
            entry = (ref, edge_index._version, {})
            self._entries[ident] = entry
        values = entry[2]
        if key not in values:
            values[key] = build()
        return values[key]

    def _drop(self, ident: int, ref: weakref.ref) -> None:
        entry = self._entries.get(ident)
        if entry is not None and entry[0] is ref:
            del self._entries[ident]


_TOPOLOGY = _TopologyCache()


def memoize_on_topology(edge_index: Tensor, key: tuple, build):
    """`build()` computed once per `edge_index` tensor object (and `key`), then reused while that tensor
    is alive and unmodified — for per-topology preprocessing such as self-loops or a directed copy."""
    return _TOPOLOGY.get(edge_index, key, build)


def csr_by(rows: Tensor, cols: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR structure of the pattern `(rows[e], cols[e])`: (crow_indices [N+1], col_indices [E], order [E]),
    `order` putting edges in row-major order (stable, so equal rows keep their edge order)."""
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=num_nodes).cumsum(0)
    return crow, cols[order], order


@dataclass(frozen=True)
class CSRTopology:
    """One edge list in compressed sparse row form, both ways, for per-channel attention products.

    Edges are put in target-major order (stable): `src[i] → dst[i]` is edge `j` of the original list
    where `inverse_order[j] = i`, and `crow` (`[N+1]`) delimits each target's incoming edges, so per-channel weights laid out
    `[K, E]` in this order are directly the values of K CSR matrices `A_k` (rows = targets, columns =
    sources). The transpose `A_kᵀ` (rows = sources) has row pointers `crow_t` and columns `col_t`; its
    values are the weights gathered with `order_t`.
    """

    src: Tensor
    dst: Tensor
    crow: Tensor
    inverse_order: Tensor
    crow_t: Tensor
    col_t: Tensor
    order_t: Tensor
    num_nodes: int

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> CSRTopology:
        """Build from a LongTensor `[2, E]` (row 0 sources, row 1 targets) over `num_nodes` nodes.

        Index vectors that only serve sparse products and `index_select` are stored as int32 when
        `E < 2³¹` (half the memory of this per-topology cache); `dst` stays int64 for PyG's scatter."""
        src, dst = edge_index
        crow, src_sorted, order = csr_by(dst, src, num_nodes)
        dst_sorted = dst[order]
        crow_t, col_t, order_t = csr_by(src_sorted, dst_sorted, num_nodes)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        small = torch.int32 if order.numel() < 2**31 - 1 and num_nodes < 2**31 - 1 else torch.long
        return cls(src_sorted.to(small), dst_sorted, crow.to(small), inverse.to(small), crow_t.to(small),
                   col_t.to(small), order_t.to(small), num_nodes)
