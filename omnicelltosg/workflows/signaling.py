"""``omnicelltosg signaling``: the key proteins and interactions behind a condition, validated against
known biology (issue 19; ARCHITECTURE.md §7).

Methods, all on the same meta-cells:

- ``evidence_network`` (the default, :mod:`omnicelltosg.tools.evidence_network`): per-gene evidence
  at the right level (:mod:`omnicelltosg.tools.differential`: pseudobulk DESeq2 per donor × group
  where counts and donors allow, meta-cell Welch t otherwise) + the fine-tuned classifier's integrated
  gradients as a case − control contrast (permutation null within donors, degree-corrected;
  :mod:`omnicelltosg.tools.attribution`) → prize-collecting Steiner tree and random walk with restart
  over the PPI graph, with a degree-preserving rewired null (:mod:`omnicelltosg.tools.network`); the
  tree's edges get occlusion attributions of the model;
- ``paper`` (a REPRODUCTION of arXiv 2504.02148 §2.5, :mod:`omnicelltosg.tools.signaling`): node
  attention × case mean expression → top-k → largest component → star-leaf pruning;
- the attention-free control: the paper pipeline with every attention weight 1;
- the fold-change baseline: genes sorted by the meta-cell log2 fold change.

Every run writes a validation table (AUPRC and precision@k of each ranking against the genes of
given GO terms; size, connectivity and known-gene fraction of each network), the same analysis per
cell type, and the figures (static PNG, interactive HTML).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dataset_script.files import atomic_file, atomic_write_text
from omnicelltosg.plotting.signaling import plot_cell_type_comparison, plot_evidence_network, write_network_html
from omnicelltosg.tools import attribution as attr
from omnicelltosg.tools.differential import differential_evidence
from omnicelltosg.tools.enrichment import (
    gene_set_validation,
    go_enrichment,
    go_term_genes,
    load_go_annotations,
    ranking_validation,
)
from omnicelltosg.tools.evidence_network import DIRECTION, PPINetwork, infer_evidence_network
from omnicelltosg.tools.signaling import FDR_THRESHOLD, MIN_LEAVES, TOP_K, group_edge_attention, infer_signaling, node_expression, write_signaling
from omnicelltosg.tools.signaling_report import write_report

METHODS = ("evidence_network", "paper")
DEFAULT_METHOD = "evidence_network"
#: Known-biology gene sets for the validation, chosen from the biology before any result was seen.
KNOWN_BIOLOGY = {
    "type_i_interferon": {
        "go_ids": ["GO:0060337", "GO:0034340", "GO:0051607"],
        "why": "IFN-β stimulation (Kang 2018) acts through the type-I interferon receptor and JAK–STAT; the "
               "expected response is the interferon-stimulated genes (type I interferon signalling pathway, "
               "response to type I interferon, defence response to virus)."},
    "neural_development": {
        "go_ids": ["GO:0007399", "GO:0007417", "GO:0022008", "GO:0042063"],
        "why": "Malignant oligodendroglioma cells are glial progenitor-like (OPC-like, astrocyte-like and "
               "stem-like programmes; Tirosh 2016) while the non-malignant cells are microglia / macrophages "
               "and mature oligodendrocytes: higher in malignant = neural development (nervous system "
               "development, CNS development, neurogenesis, gliogenesis)."},
}
#: Smallest number of meta-cells per group for a per-cell-type analysis.
MIN_METACELLS_PER_GROUP = 4
#: STRING table whose combined score gives the PPI edge confidence (edges without it get 1).
STRING_TABLE = "string_human_score900_symbols_mossn.tsv.gz"
#: Epochs of the small condition classifier fine-tuned when no model is given.
CLASSIFIER_EPOCHS = 4
#: Meta-cells whose attributions are computed (a stratified sample over group × donor): the model pass
#: with gradients is the costly step, and the contrast's permutation null needs rows, not all of them.
ATTRIBUTION_CELLS = 64
#: Attribution method of the default analysis (see omnicelltosg.tools.attribution.ATTRIBUTION_METHODS).
ATTRIBUTION_METHOD = "gradient_x_input"
#: Meta-cells per gradient pass: the backward pass keeps every layer's activations of the whole graph per
#: meta-cell, so the batch sets the peak memory (measured on the demo graph, benchmarks/bench_signaling.py:
#: 16 → +457 MiB, 8 → +269 MiB, 4 → +175 MiB, below the paper pipeline's streamed pass; the same values).
ATTRIBUTION_BATCH_SIZE = 4


def attribution_rows(groups, donors, *, n_cells: int = ATTRIBUTION_CELLS, seed: int = 0) -> np.ndarray:
    """At most ``n_cells`` row positions, spread evenly over the group × donor strata (each stratum gives
    ``n_cells // n_strata`` rows or all it has; fixed seed), sorted."""
    strata = pd.Series([f"{g}|{d}" for g, d in zip(np.asarray(groups).astype(str), np.asarray(donors).astype(str))])
    per = max(1, n_cells // max(strata.nunique(), 1))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(strata.to_numpy() == s))[:per] for s in sorted(strata.unique())]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


@dataclasses.dataclass
class _Inputs:
    """Everything one analysis needs, loaded once: model inputs, metadata, counts, symbols."""

    graph: object
    x: object  # torch float [M, Nt]
    m: object  # torch bool [M, Nt]
    meta: pd.DataFrame
    counts: sp.csr_matrix  # [M, Nt] raw counts (or input values when not counts)
    counts_available: bool
    transcript_symbols: np.ndarray
    protein_symbols: np.ndarray
    genes: np.ndarray  # transcript positions measured by the cohort that have a protein node


def _load_inputs(dataset, *, conditions: dict, group_column: str, case: str, control: str) -> _Inputs:
    from dataset_script.cohorts.loader import load_cohort

    cohort = load_cohort(dataset, conditions=conditions, label_column=group_column, split_by="none")
    graph, entities = cohort.graph(), cohort.entities()
    x, m, _ = cohort.tensors()
    cells = cohort.cells
    meta = cells.select_columns([c for c in cells.column_names if not c.startswith("expression")]).to_pandas()
    meta[group_column] = meta[group_column].astype(str)
    available = sorted(set(meta[group_column]))
    for name, label in (("case", case), ("control", control)):
        if label not in available:
            raise ValueError(f"{name}={label!r} is not a value of {group_column!r} in this cohort; available: {available}.")
    cols = cells.select_columns(["expression_indices", "expression_values"]).with_format("numpy")
    indptr, idx, val = [0], [], []
    for row in cols:
        idx.append(row["expression_indices"])
        val.append(row["expression_values"])
        indptr.append(indptr[-1] + len(row["expression_indices"]))
    counts = sp.csr_matrix((np.concatenate(val).astype(np.float64), np.concatenate(idx).astype(np.int64), indptr),
                           shape=(len(meta), graph.num_transcripts))
    symbols = entities.sort_values("entity_index")["symbol"].astype(str).to_numpy()
    internal = graph.internal_edge_index.numpy()
    has_protein = np.zeros(graph.num_transcripts, bool)
    has_protein[internal[0]] = True
    genes = np.flatnonzero(m.numpy().any(0) & has_protein)
    return _Inputs(graph, x, m, meta, counts, bool(meta["values_are_counts"].all()), symbols[:graph.num_transcripts],
                   symbols[graph.num_transcripts:], genes)


def _ppi(inputs: _Inputs, knowledge_dir: Path) -> PPINetwork:
    """The model graph's PPI pairs among the measured genes, with STRING confidence where known."""
    g = inputs.graph
    pairs = g.ppi_edge_index.numpy().T - g.num_transcripts
    sym = inputs.protein_symbols
    pair_symbols = [(sym[a], sym[b]) for a, b in pairs]
    conf = np.ones(len(pairs))
    path = Path(knowledge_dir) / STRING_TABLE
    if path.exists():
        table = pd.read_csv(path, sep="\t")
        score = {frozenset((a, b)): s for a, b, s in zip(table["gene_a"], table["gene_b"], table["combined_score"])}
        conf = np.array([score.get(frozenset(p), 1.0) for p in pair_symbols], dtype=np.float64)
        conf = np.where(conf > 1, conf / 1000.0, conf)
    return PPINetwork.from_pairs(inputs.transcript_symbols[inputs.genes], pair_symbols, conf)


def _evidence(inputs: _Inputs, rows: np.ndarray, *, group_column: str, case: str, control: str,
              donor_column: str, cell_type_column: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Differential evidence of ``rows``; ``cell_type_column`` = the cell type as a covariate (whole cohort)."""
    counts = inputs.counts[rows][:, inputs.genes]
    log_x = inputs.x.numpy()[rows][:, inputs.genes]
    return differential_evidence(counts=counts, log_expression=log_x, samples=inputs.meta.iloc[rows],
                                 symbols=inputs.transcript_symbols[inputs.genes], group_column=group_column, case=case,
                                 control=control, donor_column=donor_column if donor_column in inputs.meta else None,
                                 counts_available=inputs.counts_available, cell_type_column=cell_type_column)


def _fold_change(inputs: _Inputs, rows: np.ndarray, groups: np.ndarray, case: str, control: str) -> pd.Series:
    """The baseline: log2 fold change of group mean ``log1p`` expression (the paper table's definition)."""
    x = inputs.x.numpy()[rows][:, inputs.genes].astype(np.float64)
    a, b = x[groups == case].mean(0), x[groups == control].mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2((np.expm1(a) + 1e-9) / (np.expm1(b) + 1e-9))
    return pd.Series(lfc, index=inputs.transcript_symbols[inputs.genes])


def _attribution_table(per_cell: np.ndarray, att_rows: np.ndarray, inputs: _Inputs, ppi: PPINetwork,
                       rows: np.ndarray, *, group_column: str, case: str, control: str,
                       donor_column: str) -> pd.DataFrame | None:
    """Per-gene case − control contrast of the attributions (permutation null within donors),
    degree-corrected; ``per_cell`` is ``[len(att_rows), G]`` over ``inputs.genes``; uses the attributed
    rows among ``rows``. None when fewer than 2 attributed rows per group remain."""
    keep = np.isin(att_rows, rows)
    meta = inputs.meta.iloc[att_rows[keep]]
    labels = meta[group_column].to_numpy()
    if min((labels == case).sum(), (labels == control).sum()) < 2:
        return None
    strata = meta[donor_column].astype(str).to_numpy() if donor_column in meta else None
    res = attr.attribution_contrast(per_cell[keep], labels, case=case, control=control, strata=strata)
    deg = pd.Series(np.bincount(ppi.edges.ravel(), minlength=len(ppi.symbols)), index=ppi.symbols)
    symbols = inputs.transcript_symbols[inputs.genes]
    z = attr.degree_corrected(res["z"], deg.reindex(symbols).fillna(0).to_numpy())
    return pd.DataFrame({"symbol": symbols, "contrast": res["contrast"], "z_raw": res["z"], "z": z,
                         "p_value": res["p_value"]})


def _paper_results(model, inputs: _Inputs, groups, case, control, top_k, min_leaves, fdr_threshold) -> dict:
    """The paper pipeline (reproduction) and its attention-free control on the same meta-cells."""
    g = inputs.graph
    pairs, weights, _ = group_edge_attention(model, inputs.x, inputs.m, g, groups)
    protein_expr = node_expression(inputs.x.numpy(), g)
    uniform = {label: np.ones_like(w) for label, w in weights.items()}
    return {kind: infer_signaling(w, pairs, protein_expr, groups, case=case, control=control,
                                  symbols=inputs.protein_symbols, num_transcripts=g.num_transcripts, top_k=top_k,
                                  min_leaves=min_leaves, fdr_threshold=fdr_threshold)
            for kind, w in (("paper", weights), ("uniform_control", uniform))}


def check_signaling_arguments(*, case: str, control: str, method: str = DEFAULT_METHOD,
                              known_biology: str | None = None, direction: str = DIRECTION, top_k: int = TOP_K,
                              min_leaves: int = MIN_LEAVES, fdr_threshold: float = FDR_THRESHOLD,
                              has_model: bool = True) -> None:
    """Check the arguments of :func:`run_signaling` that need no data, before any work (and before
    ``--finetune-epochs`` trains a classifier into the output folder).

    Raises:
        ValueError: naming the argument and what is accepted: ``method`` not in :data:`METHODS`,
            ``known_biology`` not a key of :data:`KNOWN_BIOLOGY`, ``method='paper'`` without a model
            (``has_model``), ``direction`` not in ``DIRECTIONS``, ``top_k`` < 1, ``min_leaves`` < 0,
            ``fdr_threshold`` outside (0, 1], or ``case`` equal to ``control``.
    """
    from omnicelltosg.tools.evidence_network import DIRECTIONS

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if known_biology is not None and known_biology not in KNOWN_BIOLOGY:
        raise ValueError(f"known_biology must be one of {sorted(KNOWN_BIOLOGY)}, got {known_biology!r}.")
    if method == "paper" and not has_model:
        raise ValueError("method='paper' needs a fine-tuned model (model_dir).")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if not _whole(top_k) or top_k < 1:
        raise ValueError(f"top_k (--top-k) must be an integer >= 1, got {top_k!r}.")
    if not _whole(min_leaves) or min_leaves < 0:
        raise ValueError(f"min_leaves (--min-leaves) must be an integer >= 0, got {min_leaves!r}.")
    if isinstance(fdr_threshold, bool) or not isinstance(fdr_threshold, (int, float)) or not 0 < fdr_threshold <= 1:
        raise ValueError(f"fdr_threshold (--fdr) must be a number in (0, 1], got {fdr_threshold!r}.")
    if str(case) == str(control):
        raise ValueError(f"case and control must differ, both are {case!r}.")


def _whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def finetune_condition_classifier(dataset, out_dir, *, conditions: dict, group_column: str, case: str, control: str,
                                  epochs: int = CLASSIFIER_EPOCHS, seed: int = 0) -> Path:
    """Fine-tune a small ``CellTOSGForCellClassification`` (default config, from scratch) on the cohort's
    ``control`` / ``case`` meta-cells, to explain: an 80/20 stratified META-CELL split picks the epoch
    (the model is explained, not evaluated, so no donor is held out). Saved to ``out_dir``; returns it.

    Raises ``ValueError`` (before any training, so nothing is written) for ``epochs`` < 1, ``case`` equal
    to ``control``, or a ``case`` / ``control`` that is not a value of ``group_column`` in the cohort;
    the errors of :func:`dataset_script.cohorts.loader.load_cohort` for the dataset and query."""
    from dataset_script.cohorts.loader import load_cohort
    from dataset_script.files import atomic_directory
    from modeling_celltosg import CellTOSGConfig, CellTOSGForCellClassification
    from omnicelltosg.train import finetune
    import torch

    if not _whole(epochs) or epochs < 1:
        raise ValueError(f"epochs (--finetune-epochs) must be an integer >= 1, got {epochs!r}.")
    if str(case) == str(control):
        raise ValueError(f"case and control must differ, both are {case!r}.")
    cohort = load_cohort(dataset, conditions=conditions, label_column=group_column, split_by="none")
    groups = np.asarray(cohort.cells[group_column]).astype(str)
    available = sorted(set(groups))
    for name, label in (("case", case), ("control", control)):
        if label not in available:
            raise ValueError(f"{name}={label!r} is not a value of {group_column!r} in this cohort; available: {available}.")
    graph = cohort.graph()
    x, m, _ = cohort.tensors()
    keep = np.flatnonzero(np.isin(groups, [control, case]))
    y = torch.as_tensor((groups[keep] == case).astype(np.int64))
    rng = np.random.default_rng(seed)
    val, test = [], []
    for k in (0, 1):
        members = rng.permutation(np.flatnonzero(y.numpy() == k))
        n = max(1, int(0.15 * len(members)))
        val.append(members[:n])
        test.append(members[n:2 * n])
    val, test = np.concatenate(val), np.concatenate(test)
    train = np.setdiff1d(np.arange(len(keep)), np.concatenate([val, test]))
    labels = {"num_labels": 2, "id2label": {0: control, 1: case}, "label2id": {control: 0, case: 1}}
    torch.manual_seed(seed)
    model = CellTOSGForCellClassification(CellTOSGConfig.for_graph(graph, **labels))
    res = finetune(model, x[keep], m[keep], y, graph, train_idx=train, val_idx=val, test_idx=test, epochs=epochs,
                   seed=seed)
    with atomic_directory(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps({
            "epochs": epochs, "seed": seed, "best_epoch": res["best_epoch"], "val_macro_f1": res["val_macro_f1"],
            "test_macro_f1": res["macro_f1"], "split": "stratified meta-cell 70/15/15 (explained, not evaluated)"}))
    return Path(out_dir)


def _validate(rankings: dict, networks: dict, positives: set, background: set) -> pd.DataFrame:
    rows = []
    for name, scores in rankings.items():
        v = ranking_validation(scores, positives, background)
        net = networks.get(name)
        row = {"method": name, "auprc": v["auprc"], "prevalence": v["prevalence"],
               **{f"precision_at_{k}": p for k, p in v["precision_at"].items()}}
        if net is not None:
            s = gene_set_validation(net.nodes, positives, background)
            import networkx as nx

            row.update(network_genes=net.number_of_nodes(), network_edges=net.number_of_edges(),
                       network_connected=bool(net.number_of_nodes() and nx.is_connected(net)),
                       network_known=s["n_known"], network_fraction_known=s["fraction_known"],
                       network_hypergeom_p=s["hypergeom_p"])
        rows.append(row)
    return pd.DataFrame(rows)


def _symbol_graph(core, inputs: _Inputs):
    import networkx as nx

    return nx.relabel_nodes(core, {n: str(core.nodes[n]["symbol"]) for n in core.nodes})


def _model_attributions(model_dir, inputs: _Inputs, ppi: PPINetwork, rows, groups, *, case, control, group_column,
                        donor_column, seed) -> dict:
    """Load the classifier and attribute its case-vs-control decision on a stratified sample of rows."""
    from modeling_celltosg import CellTOSGForCellClassification

    model = CellTOSGForCellClassification.from_pretrained(model_dir)
    label2id = {str(k): int(v) for k, v in model.config.label2id.items()}
    if case not in label2id or control not in label2id:
        raise ValueError(f"the model's labels {sorted(label2id)} do not include case {case!r} and control {control!r}.")
    donors = inputs.meta[donor_column] if donor_column in inputs.meta else np.zeros(len(groups))
    att_rows = rows[attribution_rows(groups[rows], np.asarray(donors)[rows], seed=seed)]
    per_cell = attr.expression_attributions(model, inputs.x[att_rows], inputs.m[att_rows], inputs.graph,
                                            case_index=label2id[case], control_index=label2id[control],
                                            method=ATTRIBUTION_METHOD, batch_size=ATTRIBUTION_BATCH_SIZE)[:, inputs.genes]
    table = _attribution_table(per_cell, att_rows, inputs, ppi, rows, group_column=group_column, case=case,
                               control=control, donor_column=donor_column)
    return {"model": model, "index": (label2id[case], label2id[control]), "per_cell": per_cell, "rows": att_rows,
            "table": table}


def _add_edge_occlusion(result, model: dict, inputs: _Inputs, groups, *, case, control, seed) -> None:
    """The model's occlusion contrast on each edge of the network (in place)."""
    if not len(result.edges):
        return
    index = {s: i + inputs.graph.num_transcripts for i, s in enumerate(inputs.protein_symbols)}
    pairs = np.array([[index[a], index[b]] for a, b in zip(result.edges["source"], result.edges["target"])])
    occl = attr.edge_occlusion(model["model"], inputs.x, inputs.m, inputs.graph, pairs, groups, case=case,
                               control=control, case_index=model["index"][0], control_index=model["index"][1], seed=seed)
    result.edges["occlusion_contrast"] = occl
    for (a, b), v in zip(result.edges[["source", "target"]].itertuples(index=False), occl):
        result.network[a][b]["occlusion_contrast"] = float(v)


def _rankings(default, without, attribution, fold_change: pd.Series, paper: dict, inputs: _Inputs,
              direction: str) -> tuple[dict, dict]:
    """Every ranking (symbol → score, higher first) and network compared in the validation table."""
    sign = {"up": 1.0, "down": -1.0}.get(direction)
    directed = (lambda s: s * sign) if sign is not None else np.abs  # noqa: E731
    series = lambda res: pd.Series(directed(res.nodes["score"].to_numpy()), index=res.nodes["symbol"])  # noqa: E731
    rankings, networks = {"evidence_network": series(default)}, {"evidence_network": default.network}
    if attribution is not None:
        rankings["evidence_only"], networks["evidence_only"] = series(without), without.network
        rankings["attribution_only"] = pd.Series(directed(attribution["z"].to_numpy()), index=attribution["symbol"])
    rankings["rwr_propagation"] = pd.Series(default.nodes["rwr"].to_numpy(), index=default.nodes["symbol"])
    rankings["fold_change_baseline"] = directed(fold_change)
    for kind, res in paper.items():
        rankings[kind] = pd.Series(res.nodes["importance_case"].to_numpy(), index=res.nodes["symbol"])
        networks[kind] = _symbol_graph(res.core, inputs)
    return rankings, networks


def run_signaling(dataset: str | Path, model_dir: str | Path | None, out: str | Path, *, conditions: dict,
                  group_column: str, case: str, control: str, knowledge_dir: str | Path,
                  method: str = DEFAULT_METHOD, known_biology: str | None = None, go_ids: list[str] | None = None,
                  direction: str = DIRECTION, donor_column: str = "donor_id", cell_type_column: str = "cell_type",
                  top_k: int = TOP_K, min_leaves: int = MIN_LEAVES, fdr_threshold: float = FDR_THRESHOLD,
                  title: str | None = None, seed: int = 0) -> dict:
    """Run every method on one cohort, validate them against known genes, and write ``out``.

    Args:
        dataset: built dataset folder; model_dir: a fine-tuned ``CellTOSGForCellClassification`` with
            labels ``case`` / ``control`` (None = no model: evidence only, and no paper method).
        conditions: cohort query; group_column: column holding ``case`` / ``control``.
        knowledge_dir: the GO and STRING tables (``../shared/data/knowledge``).
        method: the primary method (``evidence_network``, default, or ``paper``, the reproduction).
        known_biology: a key of :data:`KNOWN_BIOLOGY`, or ``go_ids``: GO IDs whose genes validate.
        direction: ``up`` / ``down`` / ``both`` (evidence network); top_k, min_leaves, fdr_threshold:
            the paper pipeline's parameters; donor_column / cell_type_column: metadata columns.

    Returns: the summary dict (also ``out/summary.json``); files: ``evidence_network/``, ``paper/``,
    ``uniform_control/``, ``cell_types/``, ``validation.csv``, ``report.md``.

    Raises:
        ValueError: a bad argument (:func:`check_signaling_arguments`, checked first), ``case`` / ``control``
            not in the cohort. Every error comes before the first file is written into ``out``.
    """
    check_signaling_arguments(case=case, control=control, method=method, known_biology=known_biology,
                              direction=direction, top_k=top_k, min_leaves=min_leaves, fdr_threshold=fdr_threshold,
                              has_model=model_dir is not None)
    out, t0 = Path(out), time.perf_counter()
    inputs = _load_inputs(dataset, conditions=conditions, group_column=group_column, case=case, control=control)
    groups = inputs.meta[group_column].to_numpy()
    rows = np.flatnonzero(np.isin(groups, [case, control]))
    annotations = load_go_annotations(knowledge_dir)
    ppi = _ppi(inputs, knowledge_dir)
    background = set(ppi.symbols)
    go = go_ids or (KNOWN_BIOLOGY[known_biology]["go_ids"] if known_biology else [])
    positives = go_term_genes(annotations, go, background) if go else set()
    common = dict(case=case, control=control, group_column=group_column, donor_column=donor_column)
    evidence, level = _evidence(inputs, rows, cell_type_column=cell_type_column, **common)
    timings = {"evidence_s": time.perf_counter() - t0}
    t = time.perf_counter()
    model = _model_attributions(model_dir, inputs, ppi, rows, groups, seed=seed, **common) if model_dir else None
    attribution = model["table"] if model else None
    timings["attribution_s"] = time.perf_counter() - t
    t = time.perf_counter()
    default = infer_evidence_network(evidence, ppi, case=case, control=control, attribution=attribution,
                                     direction=direction, seed=seed)
    without = infer_evidence_network(evidence, ppi, case=case, control=control, direction=direction, n_null=0,
                                     seed=seed) if attribution is not None else default
    if model:
        _add_edge_occlusion(default, model, inputs, groups, case=case, control=control, seed=seed)
    timings["network_s"] = time.perf_counter() - t
    paper = _paper_results(model["model"], inputs, groups, case, control, top_k, min_leaves, fdr_threshold) if model else {}
    rankings, networks = _rankings(default, without, attribution, _fold_change(inputs, rows, groups[rows], case, control),
                                   paper, inputs, direction)
    validation = _validate(rankings, networks, positives, background) if positives else pd.DataFrame()
    per_type = _per_cell_type(inputs, ppi, model, rows, groups, positives, background, direction=direction, seed=seed,
                              cell_type_column=cell_type_column, **common)
    timings["total_s"] = time.perf_counter() - t0
    title = title or f"{case} vs {control}"
    files = _write(out, default, paper, annotations, background, validation, per_type, evidence, title=title)
    summary = {
        "title": title, "method": method, "direction": direction, "evidence": dict(level),
        "cohort": {"conditions": conditions, "group_column": group_column, "case": case, "control": control,
                   "n_metacells": int(len(rows)), "groups": {str(g): int((groups[rows] == g).sum()) for g in (case, control)},
                   "genes": len(background), "ppi_edges": int(len(ppi.edges))},
        "known_biology": {"key": known_biology, "go_ids": go, "why": KNOWN_BIOLOGY.get(known_biology, {}).get("why"),
                          "n_positives": len(positives)},
        "model": None if model_dir is None else str(model_dir),
        "attribution": None if not model else {"method": ATTRIBUTION_METHOD, "metacells": int(len(model["rows"]))},
        "validation": validation.to_dict("records"),
        "network": {"genes": sorted(default.network.nodes), "edges": int(default.network.number_of_edges()),
                    "terminals": int(default.nodes["terminal"].sum()), "top_genes": default.nodes["symbol"].head(20).tolist()},
        "cell_types": per_type["summary"], "timings": timings, "files": files,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    write_report(summary, validation, default, out / "report.md")
    return summary


def _per_cell_type(inputs, ppi, model, rows, groups, positives, background, *, case, control, group_column,
                   donor_column, cell_type_column, direction, seed) -> dict:
    """The evidence network within each cell type with enough meta-cells per group."""
    out = {"summary": [], "results": {}}
    if cell_type_column not in inputs.meta:
        return out
    types = inputs.meta[cell_type_column].astype(str).to_numpy()
    for ct in sorted(set(types[rows])):
        sub = rows[types[rows] == ct]
        n = {g: int((groups[sub] == g).sum()) for g in (case, control)}
        if min(n.values()) < MIN_METACELLS_PER_GROUP:
            out["summary"].append({"cell_type": ct, "skipped": f"too few meta-cells {n}"})
            continue
        ev, level = _evidence(inputs, sub, group_column=group_column, case=case, control=control, donor_column=donor_column)
        att = None
        if model:
            att = _attribution_table(model["per_cell"], model["rows"], inputs, ppi, sub, group_column=group_column,
                                     case=case, control=control, donor_column=donor_column)
        res = infer_evidence_network(ev, ppi, case=case, control=control, attribution=att, direction=direction,
                                     seed=seed)
        sign = {"up": 1.0, "down": -1.0}.get(direction)
        score = res.nodes["score"].to_numpy()
        scores = pd.Series(score * sign if sign is not None else np.abs(score), index=res.nodes["symbol"])
        row = {"cell_type": ct, "metacells": n, "level": level["level"], "with_attribution": att is not None,
               "network_genes": res.network.number_of_nodes(),
               "top_genes": res.nodes["symbol"].head(10).tolist()}
        if positives:
            row["auprc"] = ranking_validation(scores, positives, background)["auprc"]
            row["network_fraction_known"] = gene_set_validation(res.network.nodes, positives, background)["fraction_known"]
        out["summary"].append(row)
        out["results"][ct] = res
    return out


def _write(out: Path, default, paper: dict, annotations, background, validation, per_type, evidence, *, title: str) -> dict:
    """Every file of the run (each written atomically); returns name → path relative to ``out``."""
    import networkx as nx

    from omnicelltosg.tools.evidence_network import EDGE_COLUMNS

    d = out / "evidence_network"
    files = {}
    with atomic_file(d / "signaling_nodes.csv") as tmp:
        default.nodes[default.nodes["in_network"]].to_csv(tmp, index=False)
    with atomic_file(d / "signaling_edges.csv") as tmp:
        default.edges[EDGE_COLUMNS].to_csv(tmp, index=False)
    with atomic_file(d / "gene_ranking.csv") as tmp:
        default.nodes[["rank", "symbol", "score", "log2_fold_change", "statistic", "fdr", "attribution_z"]].to_csv(
            tmp, index=False, float_format="%.5g")
    with atomic_file(d / "evidence.csv") as tmp:
        evidence.to_csv(tmp, index=False, float_format="%.5g")
    with atomic_file(d / "signaling_network.graphml") as tmp:
        nx.write_graphml(default.network, tmp)
    plot_evidence_network(default, d / "signaling_network.png", title=f"{title}: evidence network (default method)")
    write_network_html(default, d / "signaling_network.html", title=f"{title}: evidence network (default method)")
    enrichment = go_enrichment(sorted(default.network.nodes), background, annotations)
    with atomic_file(d / "go_enrichment.csv") as tmp:
        enrichment.to_csv(tmp, index=False)
    files.update({k: str(Path("evidence_network") / v) for k, v in (
        ("nodes", "signaling_nodes.csv"), ("edges", "signaling_edges.csv"), ("ranking", "gene_ranking.csv"),
        ("graphml", "signaling_network.graphml"), ("figure", "signaling_network.png"),
        ("html", "signaling_network.html"), ("go_enrichment", "go_enrichment.csv"))})
    labels = {"paper": "paper method (REPRODUCTION of arXiv 2504.02148 §2.5)",
              "uniform_control": "attention-free control (paper pipeline, uniform weights)"}
    for kind, res in paper.items():
        write_signaling(res, out / kind, title=f"{title}: {labels[kind]}")
        core_genes = sorted(res.nodes.loc[res.nodes["in_core_subgraph"], "symbol"])
        with atomic_file(out / kind / "go_enrichment.csv") as tmp:
            go_enrichment(core_genes, background, annotations).to_csv(tmp, index=False)
        files[f"{kind}_figure"] = str(Path(kind) / "signaling_network.png")
    if len(validation):
        with atomic_file(out / "validation.csv") as tmp:
            validation.to_csv(tmp, index=False, float_format="%.4g")
        files["validation"] = "validation.csv"
    if per_type["results"]:
        plot_cell_type_comparison(per_type["results"], out / "cell_types" / "cell_type_comparison.png", title=title)
        rows = [r.nodes.assign(cell_type=ct)[["cell_type", "rank", "symbol", "score", "log2_fold_change", "fdr",
                                             "in_network"]].head(100) for ct, r in per_type["results"].items()]
        with atomic_file(out / "cell_types" / "top_genes.csv") as tmp:
            pd.concat(rows).to_csv(tmp, index=False, float_format="%.5g")
        files["cell_type_figure"] = "cell_types/cell_type_comparison.png"
    return files


__all__ = ["run_signaling", "finetune_condition_classifier", "check_signaling_arguments", "attribution_rows", "METHODS",
           "DEFAULT_METHOD", "KNOWN_BIOLOGY", "ATTRIBUTION_CELLS", "ATTRIBUTION_METHOD"]
