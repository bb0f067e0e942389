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
over targets and one over sources ([`FusedGATAttention`], [`FusedDotAttention`]). On other devices (CUDA)
they work channel-major (`[B·H, N, C]`, one channel per cell and head): each channel's aggregation is a
CSR sparse–dense product and the UniMP logits / attention gradients are sampled dense–dense products
([`CSRAggregate`], [`CSREdgeDot`]).
"""

from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch_geometric.utils import add_remaining_self_loops, add_self_loops, remove_self_loops, scatter, softmax

from .cpu_kernels import (
    csr_matmul,
    dot_backward_sources,
    dot_backward_targets,
    dot_scores,
    gat_attention_vector_grads,
    gat_backward_sources,
    gat_backward_targets,
    gat_node_logits,
    gat_scores,
    normalize_aggregate,
    set_threads,
)


@dataclass
class TOSGGraph:
    """The entity graph shared by every cell: topology plus frozen prior embeddings.

    Entity indices: transcripts are `0..Nt-1`, proteins `Nt..Nt+Np-1` (`N = Nt + Np`).

    Attributes:
        num_transcripts: `Nt`.
        num_proteins: `Np`.
        internal_edge_index: LongTensor `[2, Ei]`, transcript (row 0, source) → protein (row 1, target,
            global index).
        ppi_edge_index: LongTensor `[2, Ep]`, protein–protein pairs (global indices) stored once per
            unordered pair; use [`ppi_directed`] for message passing.
        name_embeddings: FloatTensor `[N, 384]`, frozen text embedding of each entity's name.
        description_embeddings: FloatTensor `[N, 384]`, frozen text embedding of each description.
        entity_version: hash of the entity table these tensors were built from.
        sequence_embeddings: optional FloatTensor `[N, S]` (protein-sequence prior), or `None`.
        sequence_present: optional BoolTensor `[N]`: True where `sequence_embeddings` holds a real
            embedding (proteins with a sequence); elsewhere the model uses a learned "missing" vector.
    """

    num_transcripts: int
    num_proteins: int
    internal_edge_index: Tensor
    ppi_edge_index: Tensor
    name_embeddings: Tensor
    description_embeddings: Tensor
    entity_version: str
    sequence_embeddings: Tensor | None = None
    sequence_present: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        """`N = Nt + Np`."""
        return self.num_transcripts + self.num_proteins

    def to(self, device: torch.device | str) -> TOSGGraph:
        """Return a copy with every tensor moved to `device`."""
        seq = None if self.sequence_embeddings is None else self.sequence_embeddings.to(device)
        present = None if self.sequence_present is None else self.sequence_present.to(device)
        return replace(
            self,
            internal_edge_index=self.internal_edge_index.to(device),
            ppi_edge_index=self.ppi_edge_index.to(device),
            name_embeddings=self.name_embeddings.to(device),
            description_embeddings=self.description_embeddings.to(device),
            sequence_embeddings=seq,
            sequence_present=present,
        )

    def validate(self) -> None:
        """Raise `ValueError` if shapes or index ranges are inconsistent."""
        n, nt = self.num_nodes, self.num_transcripts
        for name in ("name_embeddings", "description_embeddings", "sequence_embeddings"):
            t = getattr(self, name)
            if t is not None and (t.dim() != 2 or t.size(0) != n):
                raise ValueError(f"{name} must have shape [N={n}, dim], got {tuple(t.shape)}.")
        if self.sequence_present is not None and (self.sequence_present.shape != (n,)
                                                  or self.sequence_present.dtype != torch.bool):
            raise ValueError(f"sequence_present must be a bool tensor [N={n}], got {self.sequence_present.dtype} "
                             f"{tuple(self.sequence_present.shape)}.")
        for name in ("internal_edge_index", "ppi_edge_index"):
            ei = getattr(self, name)
            if ei.dim() != 2 or ei.size(0) != 2 or ei.dtype != torch.long:
                raise ValueError(f"{name} must be a LongTensor [2, E], got {ei.dtype} {tuple(ei.shape)}.")
        ie, pe = self.internal_edge_index, self.ppi_edge_index
        if ie.numel() and not (ie[0].max() < nt and ie[0].min() >= 0 and ie[1].min() >= nt and ie[1].max() < n):
            raise ValueError(
                f"internal_edge_index must go from transcripts [0, {nt}) to proteins [{nt}, {n}); "
                f"got sources in [{int(ie[0].min())}, {int(ie[0].max())}] and targets in "
                f"[{int(ie[1].min())}, {int(ie[1].max())}]."
            )
        if pe.numel() and not (pe.min() >= nt and pe.max() < n):
            raise ValueError(
                f"ppi_edge_index must only contain protein indices [{nt}, {n}); "
                f"got [{int(pe.min())}, {int(pe.max())}]."
            )


def ppi_directed(edge_index: Tensor) -> Tensor:
    """Both directions of undirected pairs: `[2, E]` (each pair once) → `[2, 2E]` (u→v then v→u)."""
    return torch.cat([edge_index, edge_index.flip(0)], dim=1)


def _glorot(tensor: Tensor) -> Tensor:
    """PyG's `glorot`: uniform in ±sqrt(6 / (fan_in + fan_out)) over the last two dimensions."""
    bound = math.sqrt(6.0 / (tensor.size(-2) + tensor.size(-1)))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


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


def _csr_by(rows: Tensor, cols: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """CSR structure of the pattern `(rows[e], cols[e])`: (crow_indices [N+1], col_indices [E], order [E]),
    `order` putting edges in row-major order (stable, so equal rows keep their edge order)."""
    order = torch.argsort(rows, stable=True)
    crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=num_nodes).cumsum(0)
    return crow, cols[order], order


def _as_array(t: Tensor):
    """Zero-copy numpy view of a CPU tensor (no autograd history)."""
    return t.detach().numpy()


def _spmm(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor) -> Tensor:
    """`A @ dense` for the CSR matrix `A` (`[N, N]`, pattern `crow`/`col`, `values` [E]): `dense` `[N, ...]`
    (trailing dimensions flattened for the product) → a new tensor of `dense`'s shape and dtype that is not
    a view, so callers may modify it in place without autograd copying a base tensor (`CopySlices`).
    float32/float64 CPU inputs use [`csr_matmul`] (no temporary of the output's size); other devices and
    dtypes use torch's sparse CSR product."""
    dtype, out = dense.dtype, torch.empty_like(dense, memory_format=torch.contiguous_format)
    flat, out_flat = dense.reshape(dense.size(0), -1), out.view(dense.size(0), -1)
    if dense.device.type == "cpu" and dtype in (torch.float32, torch.float64):
        set_threads(torch.get_num_threads())
        csr_matmul(_as_array(crow), _as_array(col), _as_array(values.to(dtype)), _as_array(flat.contiguous()),
                   _as_array(out_flat))
        return out
    reduced = dtype in (torch.bfloat16, torch.float16)
    if reduced:  # CPU sparse kernels have no bf16/fp16 path (mixed precision): accumulate in float32
        values, flat = values.float(), flat.float()
    else:
        values = values.to(dtype)
    with warnings.catch_warnings(), torch.autocast(dense.device.type, enabled=False):
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta" is not actionable here
        a = torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, dense.size(0)), check_invariants=False)
        if reduced:
            out_flat.copy_(a @ flat)
        else:
            torch.mm(a, flat, out=out_flat)
    return out


class _ConstantSparseProduct(torch.autograd.Function):
    """`out = A @ x` for a constant CSR matrix `A` given with its transpose: backward is `Aᵀ @ ∂out`
    (no gradient w.r.t. `A`). `x` `[N, ...]` → same shape; `A` as (crow, col, values), `Aᵀ` likewise."""

    @staticmethod
    def forward(ctx, x, crow, col, values, crow_t, col_t, values_t):
        ctx.save_for_backward(crow_t, col_t, values_t)
        return _spmm(crow, col, values, x)

    @staticmethod
    def backward(ctx, grad_out):
        crow_t, col_t, values_t = ctx.saved_tensors
        grad_x = _spmm(crow_t, col_t, values_t, grad_out) if ctx.needs_input_grad[0] else None
        return grad_x, None, None, None, None, None, None


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
        _glorot(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        x = self.lin(x)
        operator = _TOPOLOGY.get(edge_index, ("gcn", n), lambda: self.normalized_operator(edge_index, n))
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
        crow, col, order = _csr_by(dst, src, num_nodes)
        crow_t, col_t, order_t = _csr_by(src, dst, num_nodes)
        return loops, norm, (crow, col, norm[order]), (crow_t, col_t, norm[order_t])

    @staticmethod
    def message_and_aggregate(x: Tensor, operator: tuple) -> Tensor:
        """`out[t] = Σ_{s→t} norm · x[s]` as one sparse product over all cells."""
        (crow, col, values), (crow_t, col_t, values_t) = operator[2], operator[3]
        return _ConstantSparseProduct.apply(x, crow, col, values, crow_t, col_t, values_t)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for reduced-precision inputs (CPU sparse kernels have no bf16/fp16 path, and sums over
    many edges lose too much in them)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


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
        crow, src_sorted, order = _csr_by(dst, src, num_nodes)
        dst_sorted = dst[order]
        crow_t, col_t, order_t = _csr_by(src_sorted, dst_sorted, num_nodes)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        small = torch.int32 if order.numel() < 2**31 - 1 and num_nodes < 2**31 - 1 else torch.long
        return cls(src_sorted.to(small), dst_sorted, crow.to(small), inverse.to(small), crow_t.to(small),
                   col_t.to(small), order_t.to(small), num_nodes)


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor, num_cols: int) -> Tensor:
    return torch.sparse_csr_tensor(crow, col, values, (crow.numel() - 1, num_cols), check_invariants=False)


def _per_channel_spmm(crow: Tensor, col: Tensor, values: Tensor, dense: Tensor) -> Tensor:
    """`out[k] = A_k @ dense[k]` for the CSR matrices `A_k` of one pattern (`crow`, `col`) and values
    `values[k]`: `values` `[K, E]`, `dense` `[K, N, C]` → `[K, rows, C]`, one sparse product per channel
    written in place (torch has no batched CSR product on CPU)."""
    out = torch.empty(dense.size(0), crow.numel() - 1, dense.size(2), dtype=dense.dtype, device=dense.device)
    with warnings.catch_warnings(), torch.autocast(dense.device.type, enabled=False):
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta" is not actionable here
        for k in range(dense.size(0)):
            torch.mm(_sparse_csr(crow, col, values[k], dense.size(1)), dense[k], out=out[k])
    return out


def _per_channel_sddmm(crow: Tensor, col: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """Sampled dense–dense product per channel: `out[k, i] = ⟨left[k, row_i], right[k, col[i]]⟩` for the
    `E` entries of the CSR pattern (`crow`, `col`), with `torch.sparse.sampled_addmm` (no `[E, C]`
    gathered operands are built): `left`, `right` `[K, N, C]` → `[K, E]`."""
    out = torch.empty(left.size(0), col.numel(), dtype=left.dtype, device=left.device)
    pattern = torch.zeros(col.numel(), dtype=left.dtype, device=left.device)
    with warnings.catch_warnings(), torch.autocast(left.device.type, enabled=False):
        warnings.simplefilter("ignore", UserWarning)
        for k in range(left.size(0)):
            sampled = torch.sparse.sampled_addmm(_sparse_csr(crow, col, pattern, right.size(1)), left[k], right[k].t(),
                                                 beta=0.0)
            out[k] = sampled.values()
    return out


class CSRAggregate(torch.autograd.Function):
    r"""`out[k, t] = Σ_{e: s→t} α[k, e] · x[k, s]` for K = B·H (cell, head) channels of one shared topology.

    Channel-major layout: `x` `[K, N, C]`, `alpha` `[K, E]` in the target-major edge order of `topology`
    ([`CSRTopology`]) → `[K, N, C]`. Each channel is one CSR sparse–dense product, so no `[E, K, C]`
    message tensor is ever built; only `x` and `α` are kept for the backward pass:

    - `∂x[k] = A_kᵀ ∂out[k]` (the transposed pattern, values gathered with `order_t`);
    - `∂α[k, e] = ⟨∂out[k, t], x[k, s]⟩` (a sampled dense–dense product on the pattern).

    It replaces gathering `x[s]` per edge chunk and scattering it (`index_add_`): a 2-layer GAT step
    at B = 16 on the real TOSG ran 1.5–2.2× faster on 2 CPU threads (same process, alternating,
    noisy host). Reduced-precision inputs are computed in float32.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, topology: CSRTopology) -> Tensor:
        acc = _accumulation_dtype(x.dtype)
        ctx.save_for_backward(x, alpha)
        ctx.topology = topology
        return _per_channel_spmm(topology.crow, topology.src, alpha.to(acc), x.to(acc)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, alpha = ctx.saved_tensors
        topo, acc = ctx.topology, _accumulation_dtype(x.dtype)
        g = grad_out.to(acc).contiguous()
        grad_x = grad_alpha = None
        if ctx.needs_input_grad[0]:
            values_t = alpha.to(acc).index_select(1, topo.order_t)
            grad_x = _per_channel_spmm(topo.crow_t, topo.col_t, values_t, g).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_alpha = _per_channel_sddmm(topo.crow, topo.src, g, x.to(acc)).to(alpha.dtype)
        return grad_x, grad_alpha, None


class CSREdgeDot(torch.autograd.Function):
    r"""`out[k, e] = ⟨q[k, t], key[k, s]⟩` for every edge `e: s → t` of a shared topology (the UniMP
    attention logits), as a sampled dense–dense product per channel; no gathered `[E, K, C]` queries or
    keys are built or kept. Backward: `∂q[k] = A_k(∂out) key[k]`, `∂key[k] = A_k(∂out)ᵀ q[k]`.

    Inputs: `q`, `key` `[K, N, C]`, `topology` ([`CSRTopology`]) → `[K, E]` in its target-major edge order
    (float32 computation for bf16/fp16).
    """

    @staticmethod
    def forward(ctx, q: Tensor, key: Tensor, topology: CSRTopology) -> Tensor:
        acc = _accumulation_dtype(q.dtype)
        ctx.save_for_backward(q, key)
        ctx.topology = topology
        return _per_channel_sddmm(topology.crow, topology.src, q.to(acc), key.to(acc)).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, key = ctx.saved_tensors
        topo, acc = ctx.topology, _accumulation_dtype(q.dtype)
        g = grad_out.to(acc)
        grad_q = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_q = _per_channel_spmm(topo.crow, topo.src, g.contiguous(), key.to(acc)).to(q.dtype)
        if ctx.needs_input_grad[1]:
            grad_k = _per_channel_spmm(topo.crow_t, topo.col_t, g.index_select(1, topo.order_t), q.to(acc)).to(key.dtype)
        return grad_q, grad_k, None


class GATEdgeSoftmax(torch.autograd.Function):
    r"""GAT attention `α[k, e] = softmax_{e → t}(LeakyReLU(a_src[s, k] + a_dst[t, k]))` in one function
    that saves only `α` and the sign of the logits (1 byte per entry) for the backward pass — autograd
    through the gather / add / LeakyReLU / PyG `softmax` chain keeps about five `[E, K]` float tensors.
    The softmax runs edge-major (row gathers and scatters over `[E, K]` are fast); the result is
    returned, and kept, channel-major `[K, E]`, the layout [`CSRAggregate`] takes, so only one copy of
    `α` is alive. Backward: `∂z = α ⊙ (∂α − Σ_{e' → t} α ∂α)` (softmax), times 1 or the negative slope
    (LeakyReLU), summed onto the source and target nodes.

    Inputs: `a_src`, `a_dst` `[N, K]`, `src`, `dst` `[E]`, `negative_slope` float → `α` `[K, E]`.
    """

    @staticmethod
    def forward(ctx, a_src: Tensor, a_dst: Tensor, src: Tensor, dst: Tensor, negative_slope: float) -> Tensor:
        logits = a_src.index_select(0, src) + a_dst.index_select(0, dst)
        positive = logits > 0
        logits = nn.functional.leaky_relu(logits, negative_slope)
        alpha = softmax(logits, dst, num_nodes=a_src.size(0), dim=0).t().contiguous()
        ctx.save_for_backward(alpha, positive, src, dst)
        ctx.negative_slope, ctx.num_nodes = negative_slope, a_src.size(0)
        return alpha

    @staticmethod
    def backward(ctx, grad_alpha: Tensor):
        alpha, positive, src, dst = ctx.saved_tensors
        n = ctx.num_nodes
        alpha, grad_alpha = alpha.t().contiguous(), grad_alpha.t()  # edge-major again
        weighted = alpha * grad_alpha
        per_target = scatter(weighted, dst, dim=0, dim_size=n, reduce="sum")
        grad_logits = weighted.sub_(alpha * per_target.index_select(0, dst))
        grad_logits = torch.where(positive, grad_logits, grad_logits * ctx.negative_slope)
        grad_src = None
        if ctx.needs_input_grad[0]:  # index_add_: `src` may be int32 (CSRTopology)
            grad_src = grad_logits.new_zeros(n, grad_logits.size(1)).index_add_(0, src, grad_logits)
        grad_dst = scatter(grad_logits, dst, dim=0, dim_size=n, reduce="sum") if ctx.needs_input_grad[1] else None
        return grad_src, grad_dst, None, None, None


def _dropout_keep(alpha_shape: tuple, p: float, training: bool, like: Tensor) -> Tensor:
    """Inverted-dropout multipliers for the attention weights (`0` or `1/(1-p)`, shape `[E, K]`), or an
    empty `[0, 0]` tensor (no dropout) — the `keep` argument of the fused kernels."""
    if not training or p == 0.0:
        return like.new_empty(0, 0)
    return like.new_empty(alpha_shape).bernoulli_(1.0 - p).div_(1.0 - p)


def _normalize_aggregate(ctx, shifted_scores: Tensor, value: Tensor, keep: Tensor, topology: CSRTopology,
                         cells: int):
    """Softmax of max-shifted scores `[E, K]` (torch `exp_`, then [`normalize_aggregate`])
    and the aggregation of `value` `[N, K, C]` → (`out` `[N, B, K/B·C]` with `B = cells`, heads
    concatenated — allocated in that shape, not a view, so the layer can add its bias in place without
    autograd copying a base tensor — and α `[E, K]`, not differentiable)."""
    n, k, c = value.shape
    alpha = shifted_scores.exp_()  # normalised in place by the kernel
    ctx.set_materialize_grads(False)  # α is not differentiable: no [E, K] zero gradient is filled for it
    out = value.new_empty(n, cells, k // cells * c)
    normalize_aggregate(_as_array(topology.crow), _as_array(topology.src), _as_array(alpha),
                        _as_array(value), _as_array(keep), _as_array(out.view(n, k, c)))
    ctx.mark_non_differentiable(alpha)
    return out, alpha


class FusedGATAttention(torch.autograd.Function):
    r"""GAT attention and aggregation for K = B·H channels on CPU, fused ([`cpu_kernels`]):
    `a_src[n, k] = ⟨h[n, k], att_src[k mod H]⟩` (`a_dst` likewise), `α[e, k] = softmax_{e → t}(LeakyReLU(
    a_src[s, k] + a_dst[t, k]))`, `out[t, k] = Σ_e α[e, k] keep[e, k] h[s, k]`.

    Inputs: `h` `[N, K, C]` (channel `k` = cell · H + head), `att_src`, `att_dst` `[H, C]`, `keep` `[E, K]`
    or `[0, 0]` (dropout), `topology` ([`CSRTopology`]), `negative_slope`, `cells` B → `out`
    `[N, B, H·C]` and `α` `[E, K]` (target-major edge order, not differentiable). Only `h`, the node
    logits `a_*` `[N, K]` and `α` are kept for the backward pass (the LeakyReLU branch is recomputed),
    which is a pass over targets, one over sources, and a chunked reduction for `∂att`. float32 or
    float64, contiguous.
    """

    @staticmethod
    def forward(ctx, h, att_src, att_dst, keep, topology, negative_slope, cells):
        set_threads(torch.get_num_threads())
        n, k, _ = h.shape
        a_src, a_dst = h.new_empty(n, k), h.new_empty(n, k)
        gat_node_logits(_as_array(h), _as_array(att_src), _as_array(att_dst), _as_array(a_src), _as_array(a_dst))
        scores = h.new_empty(topology.src.numel(), k)
        gat_scores(_as_array(topology.crow), _as_array(topology.src), _as_array(a_src), _as_array(a_dst),
                   negative_slope, _as_array(scores))
        out, alpha = _normalize_aggregate(ctx, scores, h, keep, topology, cells)
        ctx.save_for_backward(h, att_src, att_dst, a_src, a_dst, alpha, keep)
        ctx.topology, ctx.negative_slope = topology, negative_slope
        return out, alpha

    @staticmethod
    def backward(ctx, grad_out, _grad_alpha):
        h, att_src, att_dst, a_src, a_dst, alpha, keep = ctx.saved_tensors
        if grad_out is None:  # the output was not used in the loss
            return (None,) * 7
        topo, grad_out = ctx.topology, grad_out.contiguous().view(h.shape)
        set_threads(torch.get_num_threads())
        grad_logits, grad_dst = torch.empty_like(alpha), torch.empty_like(a_dst)
        gat_backward_targets(_as_array(topo.crow), _as_array(topo.src), _as_array(alpha), _as_array(keep),
                             _as_array(h), _as_array(grad_out), _as_array(a_src), _as_array(a_dst),
                             ctx.negative_slope, _as_array(grad_logits), _as_array(grad_dst))
        grad_h, grad_src = torch.empty_like(h), torch.empty_like(a_src)
        gat_backward_sources(_as_array(topo.crow_t), _as_array(topo.col_t), _as_array(topo.order_t),
                             _as_array(alpha), _as_array(keep), _as_array(grad_out), _as_array(grad_logits),
                             _as_array(att_src), _as_array(att_dst), _as_array(grad_dst), _as_array(grad_h),
                             _as_array(grad_src))
        partial = h.new_empty(min(64, h.size(0)), 2, *att_src.shape)
        gat_attention_vector_grads(_as_array(h), _as_array(grad_src), _as_array(grad_dst), _as_array(partial))
        grad_att = partial.sum(0)
        return grad_h, grad_att[0], grad_att[1], None, None, None, None


class FusedDotAttention(torch.autograd.Function):
    r"""Transformer (UniMP) attention and aggregation for K channels on CPU, fused
    ([`cpu_kernels`]): `α[e, k] = softmax_{e → t}(scale · ⟨query[t, k], key[s, k]⟩)`,
    `out[t, k] = Σ_e α[e, k] keep[e, k] value[s, k]`. Node-major `query`, `key`, `value` `[N, K, C]`,
    `keep` `[E, K]` or `[0, 0]`, `topology`, `scale`, `cells` B → `out` `[N, B, K/B·C]`, `α` `[E, K]` (not
    differentiable).
    Backward: `∂query[t] = Σ_e ∂score[e] key[s]` (target pass), `∂key[s] = Σ_e ∂score[e] query[t]` and
    `∂value` (source pass).
    """

    @staticmethod
    def forward(ctx, query, key, value, keep, topology, scale, cells):
        set_threads(torch.get_num_threads())
        scores = query.new_empty(topology.src.numel(), query.size(1))
        dot_scores(_as_array(topology.crow), _as_array(topology.src), _as_array(query), _as_array(key),
                   scale, _as_array(scores))
        out, alpha = _normalize_aggregate(ctx, scores, value, keep, topology, cells)
        ctx.save_for_backward(query, key, value, alpha, keep)
        ctx.topology, ctx.scale = topology, scale
        return out, alpha

    @staticmethod
    def backward(ctx, grad_out, _grad_alpha):
        query, key, value, alpha, keep = ctx.saved_tensors
        if grad_out is None:  # the output was not used in the loss
            return (None,) * 7
        topo, grad_out = ctx.topology, grad_out.contiguous().view(value.shape)
        set_threads(torch.get_num_threads())
        grad_scores, grad_query = torch.empty_like(alpha), torch.empty_like(query)
        dot_backward_targets(_as_array(topo.crow), _as_array(topo.src), _as_array(alpha), _as_array(keep),
                             _as_array(value), _as_array(grad_out), _as_array(key), ctx.scale,
                             _as_array(grad_scores), _as_array(grad_query))
        grad_value, grad_key = torch.empty_like(value), torch.empty_like(key)
        dot_backward_sources(_as_array(topo.crow_t), _as_array(topo.col_t), _as_array(topo.order_t),
                             _as_array(alpha), _as_array(keep), _as_array(grad_out),
                             _as_array(grad_scores), _as_array(query), _as_array(grad_value),
                             _as_array(grad_key))
        return grad_query, grad_key, grad_value, None, None, None, None


FUSED_CPU_ATTENTION = True
"""Whether the attention layers use the fused numba kernels for CPU inputs (default). `False` sends CPU
inputs down the channel-major torch path that CUDA inputs always take (used to test that path on CPU)."""


def _fused(x: Tensor) -> bool:
    """Whether the fused numba kernels serve this input: CPU tensors (CUDA uses the torch path)."""
    return FUSED_CPU_ATTENTION and x.device.type == "cpu"


def _channel_major(x: Tensor, heads: int) -> Tensor:
    """`[N, B, H·C]` → contiguous `[B·H, N, C]` (channel k = cell b · H + head h)."""
    n, b, hc = x.shape
    return x.view(n, b, heads, hc // heads).permute(1, 2, 0, 3).reshape(b * heads, n, hc // heads)


def _node_major(x: Tensor, cells: int, concat: bool) -> Tensor:
    """`[B·H, N, C]` → `[N, B, H·C]` (heads concatenated) or `[N, B, C]` (heads averaged)."""
    k, n, c = x.shape
    out = x.view(cells, k // cells, n, c).permute(2, 0, 1, 3)
    return out.reshape(n, cells, -1) if concat else out.mean(dim=2)


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
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot weights and attention vectors, zero bias, as PyG."""
        _glorot(self.lin.weight)
        _glorot(self.att_src)
        _glorot(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, return_attention_weights: bool = False):
        n, b, _ = x.shape
        h = self.heads
        topology = _TOPOLOGY.get(edge_index, ("gat-csr", n),
                                  lambda: CSRTopology.from_edge_index(_gat_self_loops(edge_index, n), n))
        if _fused(x):
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
        acc = _accumulation_dtype(x.dtype)
        hk = self.lin(x).to(acc).reshape(n, b * h, c)  # [N, K, C], k = cell · H + head
        keep = _dropout_keep((topology.src.numel(), b * h), self.dropout, self.training, hk)
        att_src, att_dst = (att.to(acc).view(h, c).contiguous() for att in (self.att_src, self.att_dst))
        out, alpha = FusedGATAttention.apply(hk, att_src, att_dst, keep, topology, self.negative_slope, b)
        out = out if self.concat else out.view(n, b, h, c).mean(dim=2)
        return out.to(x.dtype), alpha

    def _channel_major_forward(self, x: Tensor, topology: CSRTopology) -> tuple[Tensor, Tensor]:
        """CUDA (any non-CPU device): channel-major `[B·H, N, C]` torch path → (`[N, B, ·]`, α `[E, B·H]`)."""
        n, b, _ = x.shape
        h, c = self.heads, self.out_channels
        xk = _channel_major(self.lin(x), h)  # [B·H, N, C]
        per_head = xk.view(b, h, n, c)
        a_src = (per_head * self.att_src.view(1, h, 1, c)).sum(-1).view(b * h, n).t().contiguous()  # [N, B·H]
        a_dst = (per_head * self.att_dst.view(1, h, 1, c)).sum(-1).view(b * h, n).t().contiguous()
        # [B·H, E] in the target-major edge order: per cell and head, per target
        alpha = GATEdgeSoftmax.apply(a_src, a_dst, topology.src, topology.dst, self.negative_slope)
        out = self.message_and_aggregate(xk, nn.functional.dropout(alpha, self.dropout, self.training), topology)
        return _node_major(out, b, self.concat), alpha.t()

    @staticmethod
    def message_and_aggregate(xk: Tensor, alpha: Tensor, topology: CSRTopology) -> Tensor:
        """`out[k, t] = Σ_{s→t} α[k, e] · x[k, s]`: `xk` `[K, N, C]` (channel-major), `alpha` `[K, E]` in
        `topology`'s target-major edge order → `[K, N, C]` (see :class:`CSRAggregate`: one sparse product
        per channel, no `[E, K, C]` message tensor)."""
        return CSRAggregate.apply(xk, alpha, topology)


class SharedTransformerConv(nn.Module):
    r"""Graph transformer (UniMP, Shi et al. 2021) on a topology shared by all cells of a batch.

    Per cell and head: :math:`\alpha_{ij} = \mathrm{softmax}_{j \in N(i)}((W_q x_i)^\top (W_k x_j) /
    \sqrt{C})` and :math:`x'_i = W_r x_i + \|_h \sum_j \alpha_{ij} W_v x_j`, as PyG's `TransformerConv`
    defaults (`root_weight=True`, `beta=False`, no self-loops added, biases on all projections).

    Shapes: `x` `[N, B, F_in]`, `edge_index` `[2, E]` → `[N, B, H·C]` (`concat`) or `[N, B, C]`. With
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
    ):
        super().__init__()
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
        topology = _TOPOLOGY.get(edge_index, ("csr", n), lambda: CSRTopology.from_edge_index(edge_index, n))
        if _fused(x):
            acc = _accumulation_dtype(x.dtype)
            query, key, value = (lin(x).to(acc).reshape(n, b * h, c) for lin in (self.lin_query, self.lin_key,
                                                                               self.lin_value))
            keep = _dropout_keep((topology.src.numel(), b * h), self.dropout, self.training, query)
            out, alpha = FusedDotAttention.apply(query, key, value, keep, topology, 1.0 / math.sqrt(c), b)
            out = (out if self.concat else out.view(n, b, h, c).mean(dim=2)).to(x.dtype)
        else:  # channel-major torch path (CUDA)
            query, key = _channel_major(self.lin_query(x), h), _channel_major(self.lin_key(x), h)  # [B·H, N, C]
            scores = CSREdgeDot.apply(query, key, topology) / math.sqrt(c)  # [B·H, E], target-major edge order
            alpha = softmax(scores.t(), topology.dst, num_nodes=n, dim=0)  # [E, B·H]
            out = SharedGATConv.message_and_aggregate(
                _channel_major(self.lin_value(x), h),
                nn.functional.dropout(alpha.t().contiguous(), self.dropout, self.training), topology,
            )
            out = _node_major(out, b, self.concat)
        out = out + self.lin_skip(x)
        if return_attention_weights:
            return out, (edge_index, alpha.index_select(0, topology.inverse_order).view(-1, b, h))
        return out


def build_shared_conv(layer_type: str, channels: int, heads: int, dropout: float) -> nn.Module:
    """A `channels → channels` shared-topology layer of `layer_type` (`gcn`, `gat`, `transformer`);
    attention layers use `heads` heads of width `channels // heads`, concatenated."""
    if layer_type == "gcn":
        return SharedGCNConv(channels, channels)
    if layer_type == "gat":
        return SharedGATConv(channels, channels // heads, heads=heads, dropout=dropout)
    if layer_type == "transformer":
        return SharedTransformerConv(channels, channels // heads, heads=heads, dropout=dropout)
    raise ValueError(f"Unknown layer_type {layer_type!r}; accepted values: ['gcn', 'gat', 'transformer'].")


__all__ = [
    "TOSGGraph",
    "ppi_directed",
    "memoize_on_topology",
    "SharedGCNConv",
    "SharedGATConv",
    "SharedTransformerConv",
    "build_shared_conv",
]
