"""A scientist's own single-cell matrix → model inputs on the transcript nodes of an entity graph, the
way the build maps its inputs (no dataset build needed).

Every step is the build's own code, imported, not re-implemented:

1. the matrix: ``.X``, ``.raw`` or a layer (:func:`dataset_script.build.ingest._expression_matrix`),
   refused when empty or when a gene name repeats (``ingest._check_matrix``);
2. what the values are — ``counts``, ``log`` or ``linear`` — and a refusal of negative (scaled) values
   (:func:`dataset_script.build.ingest.detect_value_transform`); values are then cast to float32 as the
   build's ingest does;
3. gene identifiers → Entrez IDs: symbols (official, then unambiguous alias) or Ensembl IDs with or
   without version (:func:`dataset_script.build.knowledge.resolve_gene_ids`);
4. genes → transcript nodes: counts summed, other values averaged over input genes that land on the
   same node, other genes dropped (``dataset_script.build.pipeline._to_transcripts``);
5. per row: counts → counts per 10,000 over the values on transcript nodes → log1p; log-scale values
   kept as they are; linear values rescaled like counts
   (:func:`dataset_script.cohorts.loader.normalize_expression`), then densified with the measured mask
   = every transcript node some input gene landed on
   (:func:`dataset_script.cohorts.loader.expression_tensors`).

A build with one cell per meta-cell (``cells_per_metacell: 1``, e.g. ``build/pbmc68k.yaml``) makes each
meta-cell the sum (counts) or mean (other values) of one cell, i.e. the cell itself, so a row here equals
the dataset row of the same cell.

The private build helpers are reached only through this module, so that a change in their names touches
one file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import datasets
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from dataset_script.build import ingest, pipeline
from dataset_script.build.knowledge import GeneTable, load_gene_table, resolve_gene_ids
from dataset_script.build.recipe import DatasetEntry
from dataset_script.cohorts.loader import expression_tensors, normalize_expression

#: The name the input gets where the build's helpers want a dataset_id (messages, the measured panel).
INPUT_NAME = "input"
#: ``status`` of an input gene in the mapping table.
GENE_STATUSES = ("mapped", "not_in_graph", "ambiguous", "unmapped")


@functools.lru_cache(maxsize=4)
def _gene_table(knowledge_dir: str) -> GeneTable:
    return load_gene_table(Path(knowledge_dir))


def gene_table(data_dir: str | Path) -> GeneTable:
    """The build's gene table (``org.Hs.eg.db``) from ``<data_dir>/knowledge``, loaded once per process.

    Raises
    ------
    FileNotFoundError
        If the gene table is not there (the message names the file).
    """
    return _gene_table(str(Path(data_dir).resolve() / "knowledge"))


def transcript_index_of_entrez(entities: pd.DataFrame, genes: GeneTable) -> dict[str, int]:
    """Entrez ID → transcript entity index for a dataset's ``entities`` table (from
    :func:`dataset_script.cohorts.loader.load_graph`).

    A transcript entity carries the gene's ``entity_id`` (first Ensembl ID, or ``NCBIGene:<entrez>``) and
    symbol; both are looked up in the gene table, and the result must list the transcripts in ascending
    Entrez order, as the build writes them.

    Raises
    ------
    ValueError
        If a transcript is not in the gene table, or the order differs: the graph was built with another
        gene table than the one in ``data_dir``.
    """
    tx = entities[entities["entity_type"] == "transcript"].sort_values("entity_index")
    if not np.array_equal(tx["entity_index"].to_numpy(), np.arange(len(tx))):
        raise ValueError("The entity table's transcripts are not entities 0 … Nt-1; is this an OmniCellTOSG dataset?")
    table = genes.table
    key = table["entity_id"] + "\x1f" + table["symbol"]
    lookup = dict(zip(key[~key.duplicated(keep=False)], table["entrez_id"][~key.duplicated(keep=False)]))
    entrez = [eid.split(":", 1)[1] if eid.startswith("NCBIGene:") else lookup.get(f"{eid}\x1f{sym}")
              for eid, sym in zip(tx["entity_id"], tx["symbol"])]
    missing = [f"{sym} ({eid})" for e, eid, sym in zip(entrez, tx["entity_id"], tx["symbol"]) if e is None]
    order = [int(e) for e in entrez if e is not None]
    if missing or order != sorted(order):
        raise ValueError(f"The graph's transcripts do not match the gene table in the data folder "
                         f"({len(missing)} not found, e.g. {missing[:3]}; ascending Entrez order: "
                         f"{order == sorted(order)}): pass the data folder the dataset was built with.")
    return {e: int(i) for e, i in zip(entrez, tx["entity_index"])}


def expression_matrix(adata: ad.AnnData, *, use_raw: bool | None = None,
                      layer: str | None = None) -> tuple[sp.csr_matrix, pd.Index, str]:
    """The matrix to read, as the build picks it: ``.X``, ``.raw`` (``use_raw=True``) or ``layers[layer]``;
    ``use_raw=None`` reads ``.raw`` only for a CELLxGENE-schema file that has one (the build's rule).
    Returns ``(CSR cells × genes, gene names, matrix name)``.

    Raises
    ------
    ValueError
        For ``use_raw`` together with ``layer``, no ``.raw``, an unknown layer, an empty matrix or a
        repeated gene name.
    """
    if use_raw is None:
        use_raw = layer is None and adata.raw is not None and ingest.is_cellxgene(adata.obs)
    if use_raw and layer:
        raise ValueError("use_raw and layer are both set; choose one")
    entry = DatasetEntry.of({"dataset_id": INPUT_NAME, "path": INPUT_NAME, "use_raw": bool(use_raw), "layer": layer})
    X, names, matrix = ingest._expression_matrix(adata, entry)
    ingest._check_matrix(X, names, INPUT_NAME)
    return X, pd.Index(names).astype(str), matrix


@dataclass
class MappedExpression:
    """An input matrix on the transcript nodes of one graph.

    Attributes
    ----------
    transcripts : CSR float32 [cells, Nt], the values the build stores for a one-cell meta-cell.
    value_transform : ``counts`` / ``log`` / ``linear`` (:data:`dataset_script.schema.VALUE_TRANSFORMS`).
    measured : int64 [n] ascending transcript indices some input gene landed on.
    matrix : which matrix was read (``X``, ``raw``, ``layers['name']``).
    genes : one row per input gene: ``input_id, entrez_id, symbol, how, candidates, transcript_index``
        (-1 when none) and ``status`` (:data:`GENE_STATUSES`).
    report : counts: ``n_input_genes, id_type, by_symbol, by_alias, by_ensembl, n_ambiguous,
        n_unmapped, n_not_in_graph, n_mapped, n_transcripts_measured, n_transcripts_model,
        measured_fraction, n_cells, n_cells_without_expression``.
    """

    transcripts: sp.csr_matrix
    value_transform: str
    measured: np.ndarray
    matrix: str
    genes: pd.DataFrame
    report: dict

    @property
    def values_are_counts(self) -> bool:
        return self.value_transform == "counts"

    def model_inputs(self, rows: slice | np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs of some rows (all by default): expression float32 [B, Nt] (log1p CP10k, or the
        log-scale input as it is) and measured_mask bool [B, Nt] — the dataset's ``Cohort.tensors()``."""
        T = self.transcripts if rows is None else self.transcripts[rows]
        return row_inputs(T, self.values_are_counts, self.measured)


def row_inputs(T: sp.csr_matrix, values_are_counts: bool, measured: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows on transcript nodes (CSR float32 [B, Nt]) → ``(expression float32 [B, Nt], measured_mask bool
    [B, Nt])`` through the dataset loader's own normalisation and densification."""
    T = sp.csr_matrix(T)
    idx = [T.indices[T.indptr[i]:T.indptr[i + 1]].astype(np.int32) for i in range(T.shape[0])]
    val = [T.data[T.indptr[i]:T.indptr[i + 1]].astype(np.float32) for i in range(T.shape[0])]
    log = normalize_expression({"expression_values": val, "values_are_counts": [values_are_counts] * len(val)})
    features = datasets.Features({"expression_indices": datasets.Sequence(datasets.Value("int32")),
                                  "expression_log": datasets.Sequence(datasets.Value("float32")),
                                  "dataset_id": datasets.Value("string")})
    rows = datasets.Dataset.from_dict({"expression_indices": idx, "expression_log": log["expression_log"],
                                       "dataset_id": [INPUT_NAME] * len(idx)}, features=features)
    return expression_tensors(rows, T.shape[1], {INPUT_NAME: np.asarray(measured, dtype=np.int64)})


def _gene_rows(table: pd.DataFrame, tindex: np.ndarray) -> pd.DataFrame:
    status = np.where(tindex >= 0, "mapped", np.where(table["entrez_id"] != "", "not_in_graph", table["how"]))
    return table.assign(transcript_index=tindex.astype(np.int64), status=status)


def map_expression(adata: ad.AnnData, transcript_of_entrez: dict[str, int], num_transcripts: int,
                   genes: GeneTable, *, gene_id_type: str = "auto", use_raw: bool | None = None,
                   layer: str | None = None) -> MappedExpression:
    """Map cells × genes onto the ``num_transcripts`` transcript nodes of a graph (steps 1–4 of the
    module docstring).

    Parameters
    ----------
    adata
        Cells × genes; gene identifiers in ``var_names`` (of ``.raw`` with ``use_raw``).
    transcript_of_entrez
        Entrez ID → transcript index (:func:`transcript_index_of_entrez`).
    gene_id_type
        ``symbol``, ``ensembl`` or ``auto`` (:data:`dataset_script.build.knowledge.GENE_ID_TYPES`).
    use_raw, layer
        Which matrix (:func:`expression_matrix`).

    Raises
    ------
    ValueError
        Negative values (scaled data; the message says how to point at unscaled values), an empty
        matrix, repeated gene names, an unknown ``gene_id_type``, or no input gene on the graph.
    """
    X, var_names, matrix = expression_matrix(adata, use_raw=use_raw, layer=layer)
    try:
        transform = ingest.detect_value_transform(X)
    except ValueError as err:
        raise ValueError(f"{matrix} of the input holds negative values (min {X.data.min():.3g}): scaled or "
                         "centred data cannot be used as expression. Pass the unscaled matrix: use_raw=True "
                         "(--use-raw) or layer='counts' (--layer counts).") from err
    entrez, resolution, table = resolve_gene_ids(list(var_names), gene_id_type, genes, return_table=True)
    entrez = pd.Series([e or "" for e in entrez], dtype=object)
    T = pipeline._to_transcripts(sp.csr_matrix(X, dtype=np.float32), entrez, transcript_of_entrez, num_transcripts,
                                 transform == "counts")
    tindex = np.array([transcript_of_entrez.get(e, -1) for e in entrez], dtype=np.int64)
    gene_rows = _gene_rows(table, tindex)
    measured = np.unique(tindex[tindex >= 0])
    if len(measured) == 0:
        raise ValueError(
            f"No gene overlap: none of the {len(var_names)} input genes of {matrix} (e.g. {list(var_names[:3])}; "
            f"read as {resolution['id_type']} IDs, {len(var_names) - resolution['unmapped'] - resolution['ambiguous']}"
            f" resolved to a gene) is a transcript of the model's graph ({num_transcripts} transcripts). Check "
            "gene_id_type (--gene-id-type) and that this is human data with gene symbols or Ensembl IDs.")
    counts = gene_rows["status"].value_counts()
    report = {"n_input_genes": len(var_names), "id_type": resolution["id_type"],
              **{k: int(resolution[k]) for k in ("by_symbol", "by_alias", "by_ensembl")},
              **{f"n_{s}": int(counts.get(s, 0)) for s in GENE_STATUSES},
              "n_transcripts_measured": len(measured), "n_transcripts_model": int(num_transcripts),
              "measured_fraction": round(len(measured) / max(num_transcripts, 1), 4),
              "n_cells": int(T.shape[0]), "n_cells_without_expression": int((np.asarray(T.sum(axis=1)).ravel() == 0).sum())}
    return MappedExpression(T, transform, measured, matrix, gene_rows, report)


__all__ = ["GENE_STATUSES", "MappedExpression", "expression_matrix", "gene_table", "map_expression",
           "row_inputs", "transcript_index_of_entrez"]
