"""``omnicelltosg signaling``: the complete signaling analysis of a fine-tuned model on a cohort
(paper §2.5, ARCHITECTURE.md §7), with GO enrichment and an attention-free control.

Steps: cohort (all meta-cells matching ``conditions``, no split) → per-cell PPI attention of the model
(all layers and heads, :func:`omnicelltosg.tools.signaling.edge_attention`) → per-protein expression →
group statistics, importance, top-k, largest component, star-leaf pruning
(:func:`~omnicelltosg.tools.signaling.infer_signaling`) → tables, GraphML, network figure → GO
enrichment of the core genes against the measured genes (:mod:`omnicelltosg.tools.enrichment`).

The attention-free control runs the same pipeline with every edge weight set to 1 (node attention is
then 1 for every protein with a PPI edge, so importance = mean expression): what the control finds
without the model is what the model does not add.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dataset_script.files import atomic_file, atomic_write_text
from omnicelltosg.tools.enrichment import go_enrichment, load_go_annotations
from omnicelltosg.tools.signaling import (
    FDR_THRESHOLD,
    MIN_LEAVES,
    TOP_K,
    group_edge_attention,
    infer_signaling,
    node_expression,
    write_signaling,
)

#: GO terms counted as enriched in the summary and the report: BH FDR below this.
GO_FDR_THRESHOLD = 0.05
ANALYSES = {"model": "CellTOSG-FM attention", "uniform_control": "attention-free control (uniform weights)"}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else float("nan")


def _load_inputs(dataset, model_dir, *, conditions: dict, group_column: str, case: str, control: str):
    """The cohort (no split), its graph, gene symbols, the fine-tuned model and the dense inputs; checks
    that `case` and `control` are groups of the cohort."""
    from dataset_script.cohorts.loader import load_cohort
    from modeling_celltosg import CellTOSGForCellClassification

    cohort = load_cohort(dataset, conditions=conditions, label_column=group_column, split_by="none")
    graph, entities = cohort.graph(), cohort.entities()
    model = CellTOSGForCellClassification.from_pretrained(model_dir)
    x, m, _ = cohort.tensors()
    groups = np.asarray(cohort.cells[group_column]).astype(str)
    available = sorted(set(groups))
    for name, label in (("case", case), ("control", control)):
        if label not in available:
            raise ValueError(f"{name}={label!r} is not a value of {group_column!r} in this cohort; available: {available}.")
    symbols = entities["symbol"].to_numpy()[graph.num_transcripts:]
    return graph, symbols, model, x, m, groups


def _enrichment_background(measured_mask, graph, symbols) -> set[str]:
    """Symbols of the proteins whose transcript the cohort's dataset(s) measured: the GO background."""
    measured_transcripts = measured_mask.numpy().any(0)
    internal = graph.internal_edge_index.numpy()
    measured_proteins = sorted({int(p) - graph.num_transcripts for t, p in internal.T if measured_transcripts[t]})
    return {str(symbols[j]) for j in measured_proteins}


def _analysis_summary(res, enrichment, paths: dict, out: Path, top_k: int) -> dict:
    core_genes = sorted(res.nodes.loc[res.nodes["in_core_subgraph"], "symbol"])
    return {
        "core_nodes": len(core_genes), "core_edges": res.core.number_of_edges(),
        "core_significant": int(res.nodes.loc[res.nodes["in_core_subgraph"], "significant"].sum()),
        "core_genes": core_genes, "top_k_genes": sorted(set(res.nodes["symbol"].head(top_k))),
        "go_terms_fdr05": int((enrichment["fdr"] < GO_FDR_THRESHOLD).sum()) if len(enrichment) else 0,
        "top_go_terms": enrichment.head(10)[["go_id", "term", "ontology", "overlap", "fold_enrichment", "fdr"]]
        .to_dict("records") if len(enrichment) else [],
        "files": {k: str(Path(p).relative_to(out)) for k, p in paths.items()},
    }


def run_signaling(dataset: str | Path, model_dir: str | Path, out: str | Path, *, conditions: dict, group_column: str,
                  case: str, control: str, knowledge_dir: str | Path, top_k: int = TOP_K,
                  min_leaves: int = MIN_LEAVES, fdr_threshold: float = FDR_THRESHOLD,
                  title: str | None = None) -> dict:
    """Run the analysis and write ``out/{model,uniform_control}/`` (nodes / edges CSV, GraphML, PNG,
    ``go_enrichment.csv``), ``out/summary.json`` and ``out/report.md`` (each file written atomically).

    Args:
        dataset: built dataset folder; model_dir: a fine-tuned ``CellTOSGForCellClassification``.
        conditions: metadata query for the cohort; group_column: the column holding ``case`` / ``control``.
        knowledge_dir: folder with the GO tables (``../shared/data/knowledge``).
        top_k: proteins (by case importance) seeding the subgraph; min_leaves: leaves kept per hub by
            pruning; fdr_threshold: Mann–Whitney U BH-FDR cut-off for "significant" (defaults:
            :data:`omnicelltosg.tools.signaling.TOP_K`, ``MIN_LEAVES``, ``FDR_THRESHOLD``).
        title: figure / report title (default "case vs control").

    Returns: a summary dict (also in ``out/summary.json``).

    Raises:
        ValueError: ``case`` / ``control`` not in the cohort (lists the available groups), or a model
            trained on another entity table (names both versions).
    """
    out = Path(out)
    graph, symbols, model, x, m, groups = _load_inputs(dataset, model_dir, conditions=conditions,
                                                       group_column=group_column, case=case, control=control)
    t0 = time.perf_counter()
    # per-group means, streamed: memory does not grow with the number of meta-cells
    pairs, weights, _ = group_edge_attention(model, x, m, graph, groups)
    attention_s = time.perf_counter() - t0
    protein_expr = node_expression(x.numpy(), graph)
    background = _enrichment_background(m, graph, symbols)
    annotations = load_go_annotations(knowledge_dir)

    results, summary = {}, {}
    uniform = {label: np.ones_like(w) for label, w in weights.items()}
    for kind, w in (("model", weights), ("uniform_control", uniform)):
        res = infer_signaling(w, pairs, protein_expr, groups, case=case, control=control, symbols=symbols,
                              num_transcripts=graph.num_transcripts, top_k=top_k, min_leaves=min_leaves,
                              fdr_threshold=fdr_threshold)
        paths = write_signaling(res, out / kind, title=f"{title or f'{case} vs {control}'}: {ANALYSES[kind]}")
        enrichment = go_enrichment(sorted(res.nodes.loc[res.nodes["in_core_subgraph"], "symbol"]), background,
                                   annotations)
        with atomic_file(out / kind / "go_enrichment.csv") as tmp:
            enrichment.to_csv(tmp, index=False)
        results[kind] = res
        summary[kind] = _analysis_summary(res, enrichment, paths, out, top_k)
    fm, ctl = summary["model"], summary["uniform_control"]
    summary["comparison"] = {
        "core_jaccard": _jaccard(set(fm["core_genes"]), set(ctl["core_genes"])),
        "top_k_jaccard": _jaccard(set(fm["top_k_genes"]), set(ctl["top_k_genes"])),
        "core_only_in_model": sorted(set(fm["core_genes"]) - set(ctl["core_genes"])),
    }
    summary["cohort"] = {"n_metacells": int(len(groups)),
                         "groups": {g: int((groups == g).sum()) for g in sorted(set(groups))},
                         "conditions": conditions, "group_column": group_column, "case": case, "control": control,
                         "n_pairs_scored": int(pairs.shape[1]), "background_genes": len(background)}
    summary["parameters"] = {"top_k": top_k, "min_leaves": min_leaves, "fdr_threshold": fdr_threshold,
                             "model": str(model_dir), "entity_version": graph.entity_version}
    summary["cost"] = {"attention_seconds": attention_s, "total_seconds": time.perf_counter() - t0}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    _write_report(summary, results, out / "report.md", title=title or f"{case} vs {control}")
    return summary


def _write_report(summary: dict, results: dict, path: Path, *, title: str) -> None:
    c, p = summary["cohort"], summary["parameters"]
    lines = [f"# Signaling inference: {title}", "",
             f"Cohort `{json.dumps(c['conditions'])}`: {c['n_metacells']} meta-cells "
             f"({', '.join(f'{k}: {v}' for k, v in c['groups'].items())}); case `{c['case']}`, control `{c['control']}` "
             f"in `{c['group_column']}`. Model `{p['model']}` (entity table `{p['entity_version']}`). "
             f"{c['n_pairs_scored']:,} PPI pairs scored per meta-cell (attention summed over heads and layers, "
             "reciprocal directions averaged).", "",
             f"Parameters: top_k = {p['top_k']}, min_leaves = {p['min_leaves']}, FDR threshold = {p['fdr_threshold']} "
             "(Mann–Whitney U, Benjamini–Hochberg). GO enrichment: hypergeometric test of the core genes against the "
             f"{c['background_genes']:,} measured genes with a protein node (direct org.Hs.eg.db annotations), BH FDR.", ""]
    for kind, heading in (("model", "CellTOSG-FM attention"), ("uniform_control", "Attention-free control (uniform edge weights)")):
        s, res = summary[kind], results[kind]
        core = res.nodes[res.nodes["in_core_subgraph"]]
        lines += [f"## {heading}", "",
                  f"Core subgraph: {s['core_nodes']} genes ({s['core_significant']} significant), {s['core_edges']} interactions; "
                  f"{s['go_terms_fdr05']} GO terms at FDR < {GO_FDR_THRESHOLD}.", "",
                  f"![network]({s['files']['figure']})", "",
                  "| gene | importance (case) | attention (case) | log2 FC | FDR |", "|---|---|---|---|---|"]
        for _, r in core.head(15).iterrows():
            lines.append(f"| {r['symbol']} | {r['importance_case']:.4g} | {r['attention_case']:.4g} | "
                         f"{r['log2_fold_change']:.2f} | {r['fdr']:.2g} |")
        lines += ["", "| GO term | ontology | genes | fold | FDR |", "|---|---|---|---|---|"]
        for t in s["top_go_terms"]:
            lines.append(f"| {t['term']} ({t['go_id']}) | {t['ontology']} | {t['overlap']} | {t['fold_enrichment']:.1f} | {t['fdr']:.2g} |")
        lines.append("")
    cmp = summary["comparison"]
    lines += ["## What the model adds over the control", "",
              f"- Jaccard overlap of the core gene sets: {cmp['core_jaccard']:.2f}; of the top-{p['top_k']} genes: "
              f"{cmp['top_k_jaccard']:.2f}",
              f"- core genes found only with attention: {', '.join(cmp['core_only_in_model'][:40]) or 'none'}", "",
              f"Time {summary['cost']['total_seconds']:.1f} s (attention pass {summary['cost']['attention_seconds']:.1f} s).", "",
              "Files per analysis: `signaling_nodes.csv`, `signaling_edges.csv`, `signaling_core.graphml`, "
              "`signaling_network.png`, `go_enrichment.csv`; `summary.json`."]
    atomic_write_text(path, "\n".join(lines) + "\n")


__all__ = ["run_signaling"]
