"""The Markdown report of ``omnicelltosg signaling`` (written by
:func:`omnicelltosg.workflows.signaling.run_signaling`): methods and their levels, the validation
table against known biology, the network, the per-cell-type view, and what the model adds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dataset_script.files import atomic_write_text

METHOD_LABELS = {
    "evidence_network": "**default**: evidence + model attributions → PCST network",
    "evidence_only": "evidence alone (default without the model attributions)",
    "attribution_only": "model attributions alone (case − control contrast, degree-corrected)",
    "rwr_propagation": "random walk with restart from the default prizes",
    "fold_change_baseline": "fold-change baseline (meta-cell log2 FC)",
    "paper": "paper method (REPRODUCTION, attention × expression)",
    "uniform_control": "attention-free control (paper pipeline, uniform weights)",
}


def _fmt(v, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and spec == "d"):
        return str(int(v))
    return format(v, spec) if isinstance(v, float) else str(v)


def _validation_lines(validation: pd.DataFrame) -> list[str]:
    if not len(validation):
        return ["No GO terms were given: no validation table.", ""]
    ks = [c for c in validation.columns if c.startswith("precision_at_")]
    head = ["method", "AUPRC"] + [f"P@{c.rsplit('_', 1)[1]}" for c in ks] + [
        "network genes", "edges", "connected", "fraction in GO", "hypergeom. p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in validation.iterrows():
        cells = [METHOD_LABELS.get(r["method"], r["method"]), _fmt(r["auprc"])] + [_fmt(r[c], ".2f") for c in ks]
        cells += [_fmt(r.get("network_genes"), "d"), _fmt(r.get("network_edges"), "d"), _fmt(r.get("network_connected")),
                  _fmt(r.get("network_fraction_known"), ".2f"), _fmt(r.get("network_hypergeom_p"), ".2g")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    prevalence = validation["prevalence"].iloc[0]
    lines += ["", f"Chance AUPRC (prevalence of the GO genes among the ranked genes): {prevalence:.3f}.", ""]
    return lines


def _adds_lines(validation: pd.DataFrame) -> list[str]:
    v = validation.set_index("method") if len(validation) else None
    if v is None or "evidence_only" not in v.index:
        return ["No model was given: the ranking is the evidence alone.", ""]
    a, b = v.loc["evidence_network"], v.loc["evidence_only"]
    delta = a["auprc"] - b["auprc"]
    verdict = ("the attributions improve the ranking" if delta > 0.005 else
               "the attributions make the ranking worse" if delta < -0.005 else "the attributions change nothing measurable")
    return [f"AUPRC with the model attributions {a['auprc']:.3f}, without {b['auprc']:.3f} (difference {delta:+.3f}; "
            f"P@50 {a.get('precision_at_50', float('nan')):.2f} vs {b.get('precision_at_50', float('nan')):.2f}): "
            f"{verdict}. The attributions alone reach AUPRC {v.loc['attribution_only', 'auprc']:.3f}.", ""]


def write_report(summary: dict, validation: pd.DataFrame, default, path: Path) -> Path:
    """Write ``report.md`` (atomically) from the run's summary, validation table and default result."""
    c, kb, ev = summary["cohort"], summary["known_biology"], summary["evidence"]
    lines = [f"# Signaling inference: {summary['title']}", "",
             f"Cohort `{c['conditions']}`: {c['n_metacells']} meta-cells ({c['groups']}); case `{c['case']}`, control "
             f"`{c['control']}` in `{c['group_column']}`; {c['genes']:,} measured genes with a protein node, "
             f"{c['ppi_edges']:,} PPI edges among them. Direction: `{summary['direction']}`. Model: "
             f"`{summary['model']}`.", "",
             "## Evidence", "", f"Level: **{ev['level']}** — {ev['reason']}.", ""]
    if ev.get("design"):
        lines += [f"Design: `{ev['design']}`"
                  + (f"; left out (one group only): {', '.join(ev['left_out'])}" if ev.get("left_out") else "") + ".", ""]
    if ev.get("samples"):
        lines += ["Pseudobulk samples: " + "; ".join(f"{s}" for s in ev["samples"]), ""]
    lines += ["## Validation against known biology", ""]
    if kb["go_ids"]:
        lines += [f"GO terms {', '.join(kb['go_ids'])} ({kb['n_positives']} of the ranked genes; direct "
                  f"org.Hs.eg.db annotations). {kb['why'] or ''}", ""]
    lines += _validation_lines(validation)
    lines += ["## What the model adds", ""] + _adds_lines(validation)
    net = summary["network"]
    lines += ["## The network (default method)", "",
              f"{len(net['genes'])} genes ({net['terminals']} terminals given a prize), {net['edges']} interactions: "
              f"{', '.join(net['genes'])}.", "", f"![network]({summary['files']['figure']})", "",
              f"Interactive: `{summary['files']['html']}`; GraphML `{summary['files']['graphml']}`.", "",
              "| gene | rank | log2 FC | FDR | attribution z | tree p | walk p |", "|---|---|---|---|---|---|---|"]
    nodes = default.nodes[default.nodes["in_network"]]
    for _, r in nodes.head(40).iterrows():
        lines.append(f"| {r['symbol']} | {r['rank']} | {r['log2_fold_change']:.2f} | {r['fdr']:.2g} | "
                     f"{_fmt(r['attribution_z'], '.2f')} | {_fmt(r['p_tree'], '.2g')} | {_fmt(r['p_rwr'], '.2g')} |")
    lines += ["", "Tree p: fraction of degree-preserving rewired networks whose tree also holds the gene (small = "
              "kept because of the real wiring, not its degree); walk p: fraction whose walk gives it at least the "
              "real probability.", "", "## Per cell type", ""]
    for row in summary["cell_types"]:
        if "skipped" in row:
            lines.append(f"- {row['cell_type']}: skipped ({row['skipped']})")
        else:
            extra = f", AUPRC {row['auprc']:.3f}, network fraction in GO {row['network_fraction_known']:.2f}" if "auprc" in row else ""
            lines.append(f"- {row['cell_type']} ({row['metacells']}, {row['level']}): network {row['network_genes']} genes"
                         f"{extra}; top genes {', '.join(row['top_genes'])}")
    if "cell_type_figure" in summary["files"]:
        lines += ["", f"![cell types]({summary['files']['cell_type_figure']})"]
    t, a = summary["timings"], summary.get("attribution") or {}
    att = (f"{a['method'].replace('_', ' ')} on {a['metacells']} meta-cells (stratified by group × donor), "
           "200 label permutations within donors, degree-corrected" if a else "no model attributions")
    lines += ["", "## Cost", "", ", ".join(f"{k} {v:.1f}" for k, v in t.items()), "",
              "Parameters fixed a priori (none tuned on the GO labels): equal-weight Stouffer combination of evidence "
              "and attribution z; 50 terminals (readability); edge cost 0.25 + (1 − STRING confidence) + Omics "
              f"Integrator 2's hub penalty (γ = 20); restart 0.5; 20 rewired networks (5 swaps per edge); {att}; "
              "edge occlusion on 16 meta-cells.", ""]
    return atomic_write_text(path, "\n".join(lines) + "\n")


__all__ = ["write_report", "METHOD_LABELS"]
