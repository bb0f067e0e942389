"""Sparse autograd functions over a shared topology: CSR products (GCN), and attention on the fused CPU
kernels or channel-major torch products (CUDA). Inputs and outputs are documented per function."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

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
from .topology import CSRTopology


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


class ConstantSparseProduct(torch.autograd.Function):
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


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for reduced-precision inputs (CPU sparse kernels have no bf16/fp16 path, and sums over
    many edges lose too much in them)."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


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
        acc = accumulation_dtype(x.dtype)
        ctx.save_for_backward(x, alpha)
        ctx.topology = topology
        return _per_channel_spmm(topology.crow, topology.src, alpha.to(acc), x.to(acc)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, alpha = ctx.saved_tensors
        topo, acc = ctx.topology, accumulation_dtype(x.dtype)
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
        acc = accumulation_dtype(q.dtype)
        ctx.save_for_backward(q, key)
        ctx.topology = topology
        return _per_channel_sddmm(topology.crow, topology.src, q.to(acc), key.to(acc)).to(q.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, key = ctx.saved_tensors
        topo, acc = ctx.topology, accumulation_dtype(q.dtype)
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


def dropout_keep(alpha_shape: tuple, p: float, training: bool, like: Tensor) -> Tensor:
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


def channel_major(x: Tensor, heads: int) -> Tensor:
    """`[N, B, H·C]` → contiguous `[B·H, N, C]` (channel k = cell b · H + head h)."""
    n, b, hc = x.shape
    return x.view(n, b, heads, hc // heads).permute(1, 2, 0, 3).reshape(b * heads, n, hc // heads)


def node_major(x: Tensor, cells: int, concat: bool) -> Tensor:
    """`[B·H, N, C]` → `[N, B, H·C]` (heads concatenated) or `[N, B, C]` (heads averaged)."""
    k, n, c = x.shape
    out = x.view(cells, k // cells, n, c).permute(2, 0, 1, 3)
    return out.reshape(n, cells, -1) if concat else out.mean(dim=2)
