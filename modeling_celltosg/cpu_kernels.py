"""CPU kernels (numba) for message passing over ONE shared topology: GCN's sparse product and the fused
per-cell attention of GAT and UniMP.

GCN ([`SharedGCNConv`] in `graph.py`) needs `out = A @ X` for one CSR matrix and `X` `[N, B·F]`.
torch's CPU `sparse_csr @ dense` allocates its result internally and copies it into `out=` (measured
on the real TOSG at B = 16: one product peaks at twice its 19 MiB output); [`csr_matmul`] writes each
target row directly, at the same speed, so the product holds nothing beyond its output.

Attention layers on a shared graph ([`SharedGATConv`], [`SharedTransformerConv`] in `graph.py`) need,
for K = B·H channels (cell × head) and every edge `e: s → t`, a score, a softmax over each target's
incoming edges, and the weighted sum `out[t, k] = Σ_e α[e, k] · v[s, k]`. In torch this is a chain of
gathers, scatters, layout copies and one sparse product per channel; on a 2-thread CPU the copies and
element-wise passes cost more than the arithmetic (torch.profiler on the real TOSG at B = 16: `copy_`
and `mul` were 46 % of a GAT step, the sparse products 15 %). Here each pass is one loop over the
target-major CSR (parallel over targets, or over sources on the transposed CSR) that reads the node
features in their natural node-major layout `[N, K, C]`, so nothing is gathered per edge, no
`[E, K, C]` tensor exists, and no thread writes another's rows (no atomics, deterministic results).

Why numba rather than a library: neither torch nor PyG has a CPU sparse product whose edge weights
differ per channel (DGL's `u_mul_e_sum` does, but has no wheels for this torch), and numba is already
installed with the single-cell stack (umap-learn, SEACells).

Layouts: node features `[N, K, C]` and edge values `[E, K]` (edges in the target-major order of a
[`CSRTopology`]); index vectors int32 or int64. Kernels accept float32 or float64 arrays.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_JIT = dict(parallel=True, cache=True, nogil=True)
_INLINE = dict(cache=True, nogil=True, inline="always")
# Dot products over the C channels of a head may be reassociated (vectorised); nothing else is relaxed.
_DOT_MATH = {"reassoc", "contract"}
_JIT_DOT = dict(_JIT, fastmath=_DOT_MATH)


# Rows (targets, or sources on the transposed CSR) are processed in _ROW_PARTS consecutive parts of about
# equal cost, not one equal range of row indices per thread (numba's static `prange` split): in-degrees
# are skewed and ordered (on the real TOSG the first half of the node indices, mostly transcripts, has
# 7 % of the incoming edges), so an index split left one of two threads with 93 % of the work.
_ROW_PARTS = 256


@njit(**_INLINE)
def _balanced_row_parts(crow):  # pragma: no cover - compiled
    """Row boundaries `[P + 1]` (int64, P = `_ROW_PARTS`, first 0, last R) of P consecutive parts of the
    CSR rows `0..R` (`crow` `[R + 1]`) with about equal cost, one row costing its entries + 1."""
    rows = crow.shape[0] - 1
    base = np.int64(crow[0])
    total = np.int64(crow[rows]) - base + rows
    parts = np.empty(_ROW_PARTS + 1, dtype=np.int64)
    t = 0
    for p in range(_ROW_PARTS + 1):
        goal = total * p // _ROW_PARTS
        while t < rows and np.int64(crow[t]) - base + t < goal:
            t += 1
        parts[p] = t
    parts[_ROW_PARTS] = rows
    return parts


# ---------------------------------------------------------------------------------------------------
# GCN: a CSR sparse-dense product written in place
# ---------------------------------------------------------------------------------------------------


@njit(**_JIT)
def csr_matmul(crow, col, values, dense, out):  # pragma: no cover - compiled
    """`out[t, :] = Σ_{e ∈ row t} values[e] · dense[col[e], :]`: the CSR matrix (`crow` `[R+1]`, `col`,
    `values` `[E]`) times `dense` `[N, D]` → `out` `[R, D]` in place (rows in parallel, each summed in
    edge order: deterministic). `values` must have `dense`'s dtype."""
    width = dense.shape[1]
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        for t in range(parts[p], parts[p + 1]):
            for j in range(width):
                out[t, j] = 0.0
            for e in range(crow[t], crow[t + 1]):
                weight, s = values[e], col[e]
                for j in range(width):
                    out[t, j] += weight * dense[s, j]


# ---------------------------------------------------------------------------------------------------
# Forward: max-shifted scores (then torch's vectorised exp), normalisation + aggregation
# ---------------------------------------------------------------------------------------------------


@njit(**_INLINE)
def _shift_by_row_max(scores, lo, hi, row_max):  # pragma: no cover - compiled
    """`scores[lo:hi, k] -= row_max[k]`, the max over the rows (edges) `lo:hi`, kept in `row_max`."""
    for k in range(scores.shape[1]):
        row_max[k] = -np.inf
    for e in range(lo, hi):
        for k in range(scores.shape[1]):
            if scores[e, k] > row_max[k]:
                row_max[k] = scores[e, k]
    for e in range(lo, hi):
        for k in range(scores.shape[1]):
            scores[e, k] -= row_max[k]


@njit(**dict(_INLINE, fastmath=_DOT_MATH))
def _channel_dot(left, t, right, s, k):  # pragma: no cover - compiled
    """`⟨left[t, k, :], right[s, k, :]⟩`: the dot product of one channel's C features of two nodes."""
    acc = 0.0
    for c in range(left.shape[2]):
        acc += left[t, k, c] * right[s, k, c]
    return acc


@njit(**_JIT_DOT)
def gat_node_logits(h, att_src, att_dst, a_src, a_dst):  # pragma: no cover - compiled
    """GAT's per-node halves of the logits, `a_src[n, k] = ⟨h[n, k], att_src[k mod H]⟩` and the same with
    `att_dst`: `h` `[N, K, C]` (channel `k` = cell · H + head), `att_*` `[H, C]` → `a_*` `[N, K]` in place.
    (A `[N·B, H·C] @ [H·C, 2H]` product does the same, but GEMMs that thin ran at a fraction of the speed.)"""
    n, k_count, c_count = h.shape
    heads = att_src.shape[0]
    for i in prange(n):
        for k in range(k_count):
            head = k % heads
            left, right = 0.0, 0.0
            for c in range(c_count):
                left += h[i, k, c] * att_src[head, c]
                right += h[i, k, c] * att_dst[head, c]
            a_src[i, k] = left
            a_dst[i, k] = right


@njit(**_JIT_DOT)
def gat_attention_vector_grads(h, grad_a_src, grad_a_dst, partial):  # pragma: no cover - compiled
    """`∂att_src[head] = Σ_{n, k ∈ head} ∂a_src[n, k] · h[n, k]` (and `∂att_dst` likewise) as per-chunk
    partial sums: `partial` `[P, 2, H, C]` (P node chunks, summed by the caller), `h` `[N, K, C]`,
    `grad_a_*` `[N, K]`. Chunks keep the reduction free of races and deterministic."""
    n, k_count, c_count = h.shape
    chunks, heads = partial.shape[0], partial.shape[2]
    step = (n + chunks - 1) // chunks
    for p in prange(chunks):
        for side in range(2):
            for head in range(heads):
                for c in range(c_count):
                    partial[p, side, head, c] = 0.0
        for i in range(p * step, min(n, (p + 1) * step)):
            for k in range(k_count):
                head = k % heads
                gs, gd = grad_a_src[i, k], grad_a_dst[i, k]
                for c in range(c_count):
                    partial[p, 0, head, c] += gs * h[i, k, c]
                    partial[p, 1, head, c] += gd * h[i, k, c]


@njit(**_JIT)
def gat_scores(crow, src, a_src, a_dst, negative_slope, out):  # pragma: no cover - compiled
    """GAT logits `z[e, k] = LeakyReLU(a_src[s, k] + a_dst[t, k])`, minus their max over each target's
    incoming edges (PyG's `softmax` shift): `a_src`, `a_dst` `[N, K]` → `out` `[E, K]` in place."""
    k_count = a_dst.shape[1]
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        row_max = np.empty(k_count, dtype=out.dtype)
        for t in range(parts[p], parts[p + 1]):
            lo, hi = crow[t], crow[t + 1]
            for e in range(lo, hi):
                s = src[e]
                for k in range(k_count):
                    z = a_src[s, k] + a_dst[t, k]
                    out[e, k] = z if z > 0 else z * negative_slope
            _shift_by_row_max(out, lo, hi, row_max)


@njit(**_JIT_DOT)
def dot_scores(crow, src, query, key, scale, out):  # pragma: no cover - compiled
    """Transformer logits `scale · ⟨query[t, k], key[s, k]⟩`, minus their max over each target's
    incoming edges: `query`, `key` `[N, K, C]` → `out` `[E, K]` in place."""
    k_count = query.shape[1]
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        row_max = np.empty(k_count, dtype=out.dtype)
        for t in range(parts[p], parts[p + 1]):
            lo, hi = crow[t], crow[t + 1]
            for e in range(lo, hi):
                s = src[e]
                for k in range(k_count):
                    out[e, k] = _channel_dot(query, t, key, s, k) * scale
            _shift_by_row_max(out, lo, hi, row_max)


@njit(**_JIT)
def normalize_aggregate(crow, src, weight, value, keep, out):  # pragma: no cover - compiled
    """Second half of the softmax, and the aggregation, per target `t`: `α[e, k] = w[e, k] / (Σ_{e' → t}
    w[e', k] + 1e-16)` (PyG's `softmax` denominator) written over `weight`, then `out[t, k] =
    Σ_e α[e, k] · keep[e, k] · value[s, k]`.

    `weight` `[E, K]` = the exponentiated, max-shifted scores; `keep` `[E, K]` = the dropout mask scaled
    by `1/(1-p)`, or shape `[0, 0]` for none; `value` `[N, K, C]` → `out` `[N, K, C]` in place. (The `exp`
    in between runs in torch, vectorised: numba's scalar `exp` cost 4× the aggregation.)"""
    k_count, c_count = out.shape[1], out.shape[2]
    masked = keep.shape[0] > 0
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        inv = np.empty(k_count, dtype=weight.dtype)
        for t in range(parts[p], parts[p + 1]):
            lo, hi = crow[t], crow[t + 1]
            for k in range(k_count):
                inv[k] = 0.0
            for e in range(lo, hi):
                for k in range(k_count):
                    inv[k] += weight[e, k]
            for k in range(k_count):
                inv[k] = 1.0 / (inv[k] + 1e-16)
                for c in range(c_count):
                    out[t, k, c] = 0.0
            for e in range(lo, hi):
                s = src[e]
                for k in range(k_count):
                    a = weight[e, k] * inv[k]
                    weight[e, k] = a
                    w = a * keep[e, k] if masked else a
                    for c in range(c_count):
                        out[t, k, c] += w * value[s, k, c]


# ---------------------------------------------------------------------------------------------------
# Backward: a target-parallel pass (softmax gradient, target-side inputs) and a source-parallel pass on
# the transposed CSR (value and source-side inputs), so no two threads write the same row
# ---------------------------------------------------------------------------------------------------


@njit(**_INLINE)
def _softmax_grad_row(t, lo, hi, src, alpha, keep, value, grad_out, grad_scores, dot):  # pragma: no cover
    """For target `t`'s edges `lo:hi`: `∂α[e, k] = keep[e, k] · ⟨∂out[t, k], value[s, k]⟩`, then the
    softmax gradient `∂score[e, k] = α[e, k] (∂α[e, k] − Σ_{e'} α[e', k] ∂α[e', k])` into `grad_scores`."""
    k_count = grad_out.shape[1]
    masked = keep.shape[0] > 0
    for k in range(k_count):
        dot[k] = 0.0
    for e in range(lo, hi):
        s = src[e]
        for k in range(k_count):
            acc = _channel_dot(grad_out, t, value, s, k)
            if masked:
                acc *= keep[e, k]
            grad_scores[e, k] = acc
            dot[k] += alpha[e, k] * acc
    for e in range(lo, hi):
        for k in range(k_count):
            grad_scores[e, k] = alpha[e, k] * (grad_scores[e, k] - dot[k])


@njit(**_JIT_DOT)
def gat_backward_targets(crow, src, alpha, keep, value, grad_out, a_src, a_dst, negative_slope,
                         grad_logits, grad_a_dst):  # pragma: no cover - compiled
    """GAT backward, target side: `∂z[e, k]` = the softmax gradient times the LeakyReLU slope of the
    recomputed `a_src[s, k] + a_dst[t, k]` → `grad_logits` `[E, K]`, and `∂a_dst[t, k] = Σ_{e → t} ∂z[e, k]`
    → `grad_a_dst` `[N, K]` (both in place)."""
    k_count = a_dst.shape[1]
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        row = np.empty(k_count, dtype=grad_logits.dtype)
        for t in range(parts[p], parts[p + 1]):
            lo, hi = crow[t], crow[t + 1]
            _softmax_grad_row(t, lo, hi, src, alpha, keep, value, grad_out, grad_logits, row)
            for k in range(k_count):
                row[k] = 0.0
            for e in range(lo, hi):
                s = src[e]
                for k in range(k_count):
                    if not a_src[s, k] + a_dst[t, k] > 0:
                        grad_logits[e, k] *= negative_slope
                    row[k] += grad_logits[e, k]
            for k in range(k_count):
                grad_a_dst[t, k] = row[k]


@njit(**_JIT_DOT)
def dot_backward_targets(crow, src, alpha, keep, value, grad_out, key, scale, grad_scores,
                         grad_query):  # pragma: no cover - compiled
    """Transformer backward, target side: `∂score` (softmax gradient times `scale`) → `grad_scores`
    `[E, K]`, and `∂query[t, k] = Σ_{e → t} ∂score[e, k] · key[s, k]` → `grad_query` `[N, K, C]`."""
    k_count, c_count = grad_query.shape[1], grad_query.shape[2]
    parts = _balanced_row_parts(crow)
    for p in prange(parts.shape[0] - 1):
        row = np.empty(k_count, dtype=grad_scores.dtype)
        for t in range(parts[p], parts[p + 1]):
            lo, hi = crow[t], crow[t + 1]
            _softmax_grad_row(t, lo, hi, src, alpha, keep, value, grad_out, grad_scores, row)
            for k in range(k_count):
                for c in range(c_count):
                    grad_query[t, k, c] = 0.0
            for e in range(lo, hi):
                s = src[e]
                for k in range(k_count):
                    g = grad_scores[e, k] * scale
                    grad_scores[e, k] = g
                    for c in range(c_count):
                        grad_query[t, k, c] += g * key[s, k, c]


@njit(**_INLINE)
def _gather_from_targets(s, lo, hi, col_t, order_t, weight, keep, feature, out):  # pragma: no cover
    """`out[s, k] = Σ_{e: s → t} weight[e, k] · keep[e, k] · feature[t, k]` over source `s`'s out-edges
    `lo:hi` of the transposed CSR (`keep` of shape `[0, ·]`: no mask) — e.g. `∂value[s]` from `α` and
    `∂out`."""
    k_count, c_count = feature.shape[1], feature.shape[2]
    masked = keep.shape[0] > 0
    for k in range(k_count):
        for c in range(c_count):
            out[s, k, c] = 0.0
    for j in range(lo, hi):
        e, t = order_t[j], col_t[j]
        for k in range(k_count):
            w = weight[e, k] * keep[e, k] if masked else weight[e, k]
            for c in range(c_count):
                out[s, k, c] += w * feature[t, k, c]


@njit(**_JIT)
def gat_backward_sources(crow_t, col_t, order_t, alpha, keep, grad_out, grad_logits, att_src, att_dst,
                         grad_a_dst, grad_value, grad_a_src):  # pragma: no cover - compiled
    """GAT backward, source side (transposed CSR): `∂a_src[s, k] = Σ_{e: s →} ∂z[e, k]` → `grad_a_src`
    `[N, K]`, and the whole `∂h[s]` → `grad_value` `[N, K, C]`: the aggregation's `Σ α keep ∂out[t]` plus
    the node logits' `∂a_src[s, k] att_src[k mod H] + ∂a_dst[s, k] att_dst[k mod H]` (`grad_a_dst` from
    [`gat_backward_targets`]). In place."""
    k_count = grad_a_src.shape[1]
    heads, c_count = att_src.shape
    parts = _balanced_row_parts(crow_t)
    for p in prange(parts.shape[0] - 1):
        for s in range(parts[p], parts[p + 1]):
            lo, hi = crow_t[s], crow_t[s + 1]
            _gather_from_targets(s, lo, hi, col_t, order_t, alpha, keep, grad_out, grad_value)
            for k in range(k_count):
                grad_a_src[s, k] = 0.0
            for j in range(lo, hi):
                e = order_t[j]
                for k in range(k_count):
                    grad_a_src[s, k] += grad_logits[e, k]
            for k in range(k_count):
                head = k % heads
                gs, gd = grad_a_src[s, k], grad_a_dst[s, k]
                for c in range(c_count):
                    grad_value[s, k, c] += gs * att_src[head, c] + gd * att_dst[head, c]


@njit(**_JIT)
def dot_backward_sources(crow_t, col_t, order_t, alpha, keep, grad_out, grad_scores, query, grad_value,
                         grad_key):  # pragma: no cover - compiled
    """Transformer backward, source side (transposed CSR): `∂value[s]` → `grad_value` and `∂key[s, k] =
    Σ_{e: s → t} ∂score[e, k] · query[t, k]` → `grad_key` (both `[N, K, C]`, in place)."""
    parts = _balanced_row_parts(crow_t)
    for p in prange(parts.shape[0] - 1):
        for s in range(parts[p], parts[p + 1]):
            lo, hi = crow_t[s], crow_t[s + 1]
            _gather_from_targets(s, lo, hi, col_t, order_t, alpha, keep, grad_out, grad_value)
            _gather_from_targets(s, lo, hi, col_t, order_t, grad_scores, keep[:0], query, grad_key)


def set_threads(count: int) -> None:
    """Use `count` numba threads (capped at the pool size numba started with), e.g. torch's
    `torch.get_num_threads()`, so both libraries respect one thread budget."""
    numba.set_num_threads(max(1, min(int(count), numba.config.NUMBA_NUM_THREADS)))


__all__ = [
    "csr_matmul",
    "gat_node_logits",
    "gat_attention_vector_grads",
    "gat_scores",
    "dot_scores",
    "normalize_aggregate",
    "gat_backward_targets",
    "dot_backward_targets",
    "gat_backward_sources",
    "dot_backward_sources",
    "set_threads",
]
