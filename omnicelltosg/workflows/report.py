"""The demo's ``report.md`` (every stage's numbers, rendered from ``metrics.json``) and the model card
(``README.md``) of a checkpoint."""

from __future__ import annotations

from pathlib import Path

from dataset_script.build.recipe import RECIPE_DIR
from dataset_script.files import atomic_write_text
from omnicelltosg.train.arguments import PretrainingArguments


def _f(v: float) -> str:
    return f"{v:.3f}"


def write_report(m: dict, path: Path) -> Path:
    """Render the metrics dict of :func:`omnicelltosg.workflows.demo.run_demo` as Markdown (atomic write)."""
    d, p = m["dataset"], m["pretraining"]
    lines = ["# OmniCellTOSG demo report", "",
             "Real data from `../shared/data`; every number below was measured in this run "
             f"(seed {m['seed']}, {m['torch_threads']} torch threads).", "",
             "## 1. Dataset build", "",
             f"- entity graph `{d['entity_version']}`: {d['n_transcripts']:,} transcript nodes, "
             f"{d['n_proteins']:,} protein nodes, {d['n_internal_edges']:,} transcript→protein edges, "
             f"{d['n_ppi_edges']:,} PPI edges ({d['ppi_source']} ≥ 0.9)",
             f"- {d['n_metacells']:,} meta-cells; configs: " + ", ".join(f"`{c}`" for c in d["configs"]), "",
             "| dataset | cells | meta-cells | mean purity | genes in | unmapped | counts? |", "|---|---|---|---|---|---|---|"]
    for name, r in d["datasets"].items():
        lines.append(f"| {name} | {r['n_cells']:,} | {r['n_metacells']:,} | {_f(r['mean_purity'])} | {r['n_input']:,} | "
                     f"{r['unmapped']} | {r['values_are_counts']} |")
    lines += ["", "## 2. Pretraining (PPI edge masking)", "",
              f"- {p['n_cells']:,} meta-cells (the {p['excluded_test_metacells']} fine-tuning test meta-cells excluded), "
              f"{p['settings']['steps']} steps, batch {p['settings']['batch_size']}, "
              f"{p['seconds_per_step']:.2f} s/step",
              f"- held-out PPI edges: {p['n_test_edges']:,} (never seen in training; {p['n_train_edges']:,} training edges)",
              f"- **AUROC {_f(p['auroc'])}, AP {_f(p['ap'])}** against {p['negatives']}",
              f"- loss: mean of first 10 steps {_f(p['loss_first10'])} → last 10 steps {_f(p['loss_last10'])}",
              f"- save_pretrained → AutoModel.from_pretrained: max |Δ output| = {p['save_load_max_abs_diff']:.3g} "
              f"(identical: {p['save_load_identical']})", "", "![pretraining loss](pretraining_loss.png)", "",
              "## 3. Fine-tuning (donor-level splits; model selected on validation, scored once on test)", ""]
    for name, t in m["finetuning"].items():
        s = t["splits"]
        lines += [f"### {name} (`{t['label_column']}`: {', '.join(t['labels'])})", "",
                  "| split | meta-cells | donors | classes |", "|---|---|---|---|"]
        for split in ("train", "validation", "test"):
            lines.append(f"| {split} | {s[split]['n_metacells']} | {s[split]['n_donors']} | "
                         + ", ".join(f"{k}: {v}" for k, v in s[split]["class_counts"].items()) + " |")
        lines += ["", f"Validation is split at the {s['validation_level']} level "
                  + ("(too few donors for a donor-level validation split; it comes from the training donors)."
                     if s["validation_level"] != "donor" else "."), "",
                  "| model | test accuracy | test macro-F1 |", "|---|---|---|"]
        for model in ("celltosg_fm", "logistic_regression", "majority_class"):
            lines.append(f"| {model} | {_f(t[model]['accuracy'])} | {_f(t[model]['macro_f1'])} |")
        lines += ["", f"CellTOSG-FM best epoch (validation macro-F1): {t['celltosg_fm']['best_epoch']}; "
                  f"logistic regression C = {t['logistic_regression']['C']} (chosen on validation).", "",
                  f"![{name}](finetune_{name}.png)", ""]
    s = m["signaling"]
    net, kb = s["network"], s["known_biology"]
    lines += [f"## 4. Signaling inference: Kang IFN-β {s['case']} vs {s['control']}", "",
              f"Method `{s['method']}` (the default of `omnicelltosg signaling`): per-gene evidence at the "
              f"`{s['evidence']['level']}` level ({s['evidence']['reason']}), attributions of the fine-tuned "
              "condition classifier, and a prize-collecting Steiner tree over the PPI graph with a rewired-network "
              "null. The paper's attention method is scored next to it as a reproduction.", "",
              f"- {s['n_metacells']} meta-cells, {s['n_genes']:,} genes with a protein in the PPI graph, "
              f"{s['n_ppi_edges']:,} interactions",
              f"- network: {len(net['genes'])} genes, {net['edges']} interactions; top genes: "
              + ", ".join(net["top_genes"][:12]),
              f"- validated against {', '.join(kb['go_ids'])} ({kb['n_positives']} genes of the background)", "",
              "| ranking | AUPRC | prevalence | P@20 | P@50 | network genes | known in network |",
              "|---|---|---|---|---|---|---|"]
    for r in s["validation"]:
        known = "" if r.get("network_genes") in (None, "") or r["network_genes"] != r["network_genes"] else (
            f"{int(r['network_known'])} ({r['network_fraction_known']:.0%})")
        genes = "" if not known else int(r["network_genes"])
        lines.append(f"| {r['method']} | {_f(r['auprc'])} | {_f(r['prevalence'])} | {r['precision_at_20']:.2f} | "
                     f"{r['precision_at_50']:.2f} | {genes} | {known} |")
    lines += ["", f"Tables and the interactive network: `signaling/` (`{s['files']['html']}`).", "",
              f"![signaling network]({s['files']['figure']})", "",
              "## Time", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in m["seconds"].items()]
    return atomic_write_text(path, "\n".join(lines) + "\n")


MODEL_CARD_TEMPLATE = RECIPE_DIR / "model_card.md"


def write_model_card(checkpoint_dir: Path, *, name: str, config, pretraining: PretrainingArguments, dataset: dict,
                     training_data: str, metrics: dict[str, float | str], template: Path = MODEL_CARD_TEMPLATE) -> Path:
    """Render ``model_card.md`` with a checkpoint's real config, data and metrics into its folder
    as ``README.md`` (the Hub's model card file; written atomically).

    Args:
        checkpoint_dir: the checkpoint folder; name: the checkpoint's name in the title.
        config: its ``CellTOSGConfig``; pretraining: how its encoder was pretrained (the mask ratio).
        dataset: ``entity_version``, ``n_transcripts``, ``n_proteins``, ``n_ppi_edges`` of the build.
        training_data: one Markdown line saying what it was trained on.
        metrics: metric name → value (floats shown with 4 decimals).
        template: the Markdown template (``str.format`` fields).

    Returns: the ``README.md`` path.
    """
    rows = "\n".join(["| metric | value |", "|---|---|"] + [
        f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()])
    text = Path(template).read_text().format(
        checkpoint=name, path=str(checkpoint_dir), entity_version=dataset["entity_version"],
        n_transcripts=dataset["n_transcripts"], n_proteins=dataset["n_proteins"], n_ppi_edges=dataset["n_ppi_edges"],
        training_data=training_data, metrics=rows, hidden_size=config.hidden_size, num_layers=config.num_layers,
        layer_type=config.layer_type, num_heads=config.num_heads, dropout=config.dropout,
        mask_ratio=pretraining.mask_ratio, degree_loss_weight=config.degree_loss_weight)
    return atomic_write_text(Path(checkpoint_dir) / "README.md", text)
