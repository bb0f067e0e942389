"""What a fine-tuned condition classifier adds to signaling inference (issue 19): attributions of its
case-vs-control decision to genes (integrated gradients or gradient × input, Captum) and to PPI edges
(occlusion), as a case − control contrast with a permutation null and a degree correction.

The model is used only through its public call, ``model(expression [B, Nt], graph,
measured_mask=[B, Nt]).logits [B, K]``; the explained output is the logit difference
``logits[:, case] − logits[:, control]`` (the log-odds of case for a two-class model).

References: Sundararajan, Taly & Yan 2017 (integrated gradients); Shrikumar et al. 2016 (gradient ×
input); Kokhlikyan et al. 2020 (Captum).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

ATTRIBUTION_METHODS = ("integrated_gradients", "gradient_x_input")
#: Integration steps of integrated gradients (Gauss–Legendre, Captum's default rule).
IG_STEPS = 16
#: Label permutations of the case − control contrast null.
N_PERMUTATIONS = 200
#: Cells (half case, half control) whose output the edge occlusion measures.
OCCLUSION_CELLS = 16


def _logit_difference(model, graph, case_index: int, control_index: int):
    def forward(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = model(x, graph, measured_mask=mask).logits
        return logits[:, case_index] - logits[:, control_index]
    return forward


def expression_attributions(model: torch.nn.Module, expression, measured_mask, graph, *, case_index: int,
                            control_index: int, method: str = "integrated_gradients", n_steps: int = IG_STEPS,
                            batch_size: int = 16) -> np.ndarray:
    """Attribution of the case-vs-control logit difference to each input expression value.

    ``integrated_gradients``: Captum ``IntegratedGradients`` from an all-zero expression baseline
    (no expression measured) to the cell, ``n_steps`` Gauss–Legendre steps; the attributions of a cell
    sum to ``f(x) − f(0)`` up to the integration error. ``gradient_x_input``: Captum
    ``InputXGradient``. For a linear model both equal weight × input exactly.

    Args:
        model: a cell classifier with the call above (eval mode is set and restored).
        expression: float ``[M, Nt]`` ``log1p`` expression; measured_mask: bool ``[M, Nt]`` or None.
        graph: the model's ``TOSGGraph``; case_index / control_index: class indices of the logits.

    Returns: float32 ``[M, Nt]`` attributions (0 where the input is 0 for both methods).

    Raises:
        ValueError: unknown ``method``, shapes that do not match, ``n_steps`` or ``batch_size`` < 1.
    """
    from captum.attr import InputXGradient, IntegratedGradients

    if method not in ATTRIBUTION_METHODS:
        raise ValueError(f"method must be one of {ATTRIBUTION_METHODS}, got {method!r}.")
    if n_steps < 1 or batch_size < 1:
        raise ValueError(f"n_steps and batch_size must be >= 1, got {n_steps} and {batch_size}.")
    x = torch.as_tensor(expression, dtype=torch.float32)
    mask = torch.ones_like(x, dtype=torch.bool) if measured_mask is None else torch.as_tensor(measured_mask, dtype=torch.bool)
    if x.dim() != 2 or mask.shape != x.shape:
        raise ValueError(f"expression and measured_mask must both be [M, Nt], got {tuple(x.shape)} and {tuple(mask.shape)}.")
    forward = _logit_difference(model, graph, case_index, control_index)
    explainer = IntegratedGradients(forward) if method == "integrated_gradients" else InputXGradient(forward)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(x), batch_size):
            xb, mb = x[start:start + batch_size], mask[start:start + batch_size]
            if method == "integrated_gradients":
                a = explainer.attribute(xb, baselines=torch.zeros_like(xb), additional_forward_args=(mb,),
                                        n_steps=n_steps, internal_batch_size=batch_size)
            else:
                a = explainer.attribute(xb.clone().requires_grad_(True), additional_forward_args=(mb,))
            chunks.append(a.detach().float())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy().astype(np.float32)


def _permutation_weights(groups: np.ndarray, case, control, strata: np.ndarray, n_permutations: int,
                         seed: int) -> np.ndarray:
    """``[M, 1 + P]`` contrast weights (+1/n_case, −1/n_control, 0 otherwise): column 0 the real labels,
    then ``P`` label permutations within each stratum."""
    rng = np.random.default_rng(seed)
    cols = []
    for k in range(n_permutations + 1):
        g = groups.copy()
        if k:
            for s in np.unique(strata):
                rows = np.flatnonzero(strata == s)
                g[rows] = g[rng.permutation(rows)]
        w = np.where(g == case, 1.0 / max((g == case).sum(), 1), 0.0) - np.where(g == control, 1.0 / max((g == control).sum(), 1), 0.0)
        cols.append(w)
    return np.stack(cols, axis=1)


def attribution_contrast(attributions: np.ndarray, groups: Sequence, *, case, control, strata: Sequence | None = None,
                         n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> dict[str, np.ndarray]:
    """Case − control difference of the mean attribution per feature, against a label-permutation null.

    ``contrast_j = mean_case(a_j) − mean_control(a_j)``. The null permutes the group labels among the
    case and control rows within each stratum (e.g. donor), ``n_permutations`` times;
    ``z_j = (contrast_j − mean_null_j) / sd_null_j`` and the two-sided empirical
    ``p_j = (1 + #(|null − mean_null| >= |contrast − mean_null|)) / (1 + P)``.

    Args:
        attributions: float ``[M, F]``; groups: ``[M]`` labels; strata: ``[M]`` or None (one stratum).

    Returns: ``{"contrast", "z", "p_value"}``, float64 ``[F]`` each (z = 0 where the null has no spread).

    Raises:
        ValueError: shapes that do not match, missing groups, or ``n_permutations < 1``.
    """
    a = np.asarray(attributions, dtype=np.float64)
    groups = np.asarray(groups).astype(str)
    strata = np.zeros(len(groups)) if strata is None else np.asarray(strata).astype(str)
    if a.ndim != 2 or len(a) != len(groups) or strata.shape != groups.shape:
        raise ValueError(f"attributions must be [M, F] with M = len(groups) = len(strata); got {a.shape}, "
                         f"{groups.shape}, {strata.shape}.")
    for label in (case, control):
        if str(label) not in set(groups):
            raise ValueError(f"{label!r} is not a group; groups: {sorted(set(groups))}.")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}.")
    w = _permutation_weights(groups, str(case), str(control), strata, n_permutations, seed)
    stats = a.T @ w  # [F, 1 + P]
    real, null = stats[:, 0], stats[:, 1:]
    mu, sd = null.mean(1), null.std(1, ddof=1)
    z = np.divide(real - mu, sd, out=np.zeros_like(real), where=sd > 0)
    extreme = (np.abs(null - mu[:, None]) >= np.abs(real - mu)[:, None] - 1e-12).sum(1)
    return {"contrast": real, "z": z, "p_value": (1 + extreme) / (1 + n_permutations)}


def degree_corrected(score: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Residual of ``score`` after a least-squares line in ``log1p(degree)`` (NaN scores ignored in the
    fit and kept NaN), so that a score that grows with PPI degree does not favour hubs.

    Returns: float64 ``[N]``.
    """
    s = np.asarray(score, dtype=np.float64)
    x = np.log1p(np.asarray(degree, dtype=np.float64))
    ok = np.isfinite(s)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return s - np.nanmean(s) if ok.any() else s
    slope, intercept = np.polyfit(x[ok], s[ok], 1)
    return s - (slope * x + intercept)


def edge_occlusion(model: torch.nn.Module, expression, measured_mask, graph, pairs: np.ndarray, groups: Sequence, *,
                   case, control, case_index: int, control_index: int, n_cells: int = OCCLUSION_CELLS,
                   seed: int = 0) -> np.ndarray:
    """What each PPI edge contributes to the decision: the drop of the case-vs-control logit difference
    when the edge is removed from the graph (occlusion), case − control.

    For a sample of ``n_cells`` cells (half case, half control, fixed seed), ``Δ_e(x) = f(x; G) −
    f(x; G − e)``; the result is ``mean_case Δ_e − mean_control Δ_e``. ``G − e`` is the model's graph with
    the unordered pair removed from ``ppi_edge_index`` (either orientation).

    Args:
        pairs: int ``[K, 2]`` global protein indices of the edges to test.

    Returns: float64 ``[K]``.

    Raises:
        ValueError: a pair that is not an edge of ``graph``.
    """
    groups = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(groups == str(g)))[: n_cells // 2] for g in (case, control)])
    x = torch.as_tensor(expression, dtype=torch.float32)[pick]
    mask = None if measured_mask is None else torch.as_tensor(measured_mask, dtype=torch.bool)[pick]
    is_case = groups[pick] == str(case)
    ppi = graph.ppi_edge_index
    key = torch.minimum(ppi[0], ppi[1]) * graph.num_nodes + torch.maximum(ppi[0], ppi[1])
    forward = _logit_difference(model, graph, case_index, control_index)
    was_training = model.training
    model.eval()
    out = np.zeros(len(pairs))
    try:
        with torch.no_grad():
            full = forward(x, mask).numpy()
            for k, (u, v) in enumerate(np.asarray(pairs, dtype=np.int64).reshape(-1, 2)):
                drop = key == min(u, v) * graph.num_nodes + max(u, v)
                if not bool(drop.any()):
                    raise ValueError(f"pair ({u}, {v}) is not a PPI edge of the graph.")
                reduced = replace(graph, ppi_edge_index=ppi[:, ~drop])
                delta = full - _logit_difference(model, reduced, case_index, control_index)(x, mask).numpy()
                out[k] = delta[is_case].mean() - delta[~is_case].mean()
    finally:
        model.train(was_training)
    return out


__all__ = ["expression_attributions", "attribution_contrast", "degree_corrected", "edge_occlusion",
           "ATTRIBUTION_METHODS", "IG_STEPS", "N_PERMUTATIONS", "OCCLUSION_CELLS"]
