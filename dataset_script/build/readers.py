"""Read raw single-cell matrices in the formats labs and GEO ship: h5ad, 10x Genomics and dense CSV.

Every reader returns an AnnData with cells as rows (``n_obs`` × ``n_vars``) and records in
``adata.uns["omnicelltosg_input"]`` what was read and how (format, orientation, files), so the build
can state it. The value scale (counts / log / linear) is decided later, from the values
(:func:`dataset_script.build.ingest.detect_value_transform`).

Formats (``read_matrix``):

- ``.h5ad`` — :func:`anndata.read_h5ad`.
- 10x Genomics — a folder with ``matrix.mtx(.gz)``, ``features.tsv(.gz)`` or ``genes.tsv(.gz)`` and
  ``barcodes.tsv(.gz)`` (Cell Ranger ≥ 3 or the older layout; a GEO prefix such as
  ``GSM123_matrix.mtx.gz`` is accepted), or the path of its ``matrix.mtx(.gz)``. Read with
  :func:`scanpy.read_10x_mtx`; ``var_names`` are the gene symbols and ``var["gene_ids"]`` the
  Ensembl IDs, as scanpy gives them.
- dense ``.csv`` / ``.tsv`` (optionally ``.gz``) — GEO-style, first column = row labels, first row
  = column labels. The orientation (genes × cells, the usual GEO layout, or cells × genes) is
  detected by which axis' labels resolve as genes, and stated.
- the original OmniCellTOSG release layout (a folder with ``cell_metadata_with_mappings.parquet``):
  see :func:`read_original_release`.
"""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dataset_script.build.knowledge import GeneTable, resolve_gene_ids

FORMATS = ("h5ad", "10x", "csv", "omnicelltosg_release")
#: Which axis of a dense table holds the genes (``auto``: the axis whose labels resolve as genes).
ORIENTATIONS = ("auto", "genes_x_cells", "cells_x_genes")

#: Files of the original OmniCellTOSG release layout (arXiv 2504.02148 data release).
RELEASE_METADATA = "cell_metadata_with_mappings.parquet"
_MTX = re.compile(r"^(?P<prefix>.*?)matrix\.mtx(\.gz)?$")


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS` for a path, from its name (a folder holding a ``*matrix.mtx(.gz)`` is 10x).

    Raises
    ------
    ValueError
        If the path matches no supported format; the message lists them.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir() and (path / RELEASE_METADATA).exists():
        return "omnicelltosg_release"
    if path.is_dir() and any(_MTX.match(p.name) for p in path.iterdir()):
        return "10x"
    if name.endswith(".h5ad"):
        return "h5ad"
    if _MTX.match(name):
        return "10x"
    if re.search(r"\.(csv|tsv|txt)(\.gz)?$", name):
        return "csv"
    raise ValueError(f"Cannot tell the format of {path}: supported are .h5ad, a 10x folder (matrix.mtx(.gz) + "
                     "features/genes.tsv(.gz) + barcodes.tsv(.gz)) or its matrix.mtx(.gz), and dense "
                     ".csv/.tsv(.gz)")


def read_10x(path: Path) -> ad.AnnData:
    """Read a 10x Genomics matrix folder (or its ``matrix.mtx(.gz)``) with :func:`scanpy.read_10x_mtx`.

    Raises
    ------
    FileNotFoundError
        If the barcodes or features/genes file is missing; the message lists the folder.
    """
    import scanpy as sc

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    mtx = [p for p in folder.iterdir() if _MTX.match(p.name)] if path.is_dir() else [path]
    if len(mtx) != 1:
        raise ValueError(f"{folder} holds {len(mtx)} matrix.mtx files ({[p.name for p in mtx]}); point at one")
    prefix = _MTX.match(mtx[0].name)["prefix"]
    names = {p.name for p in folder.iterdir()}
    need = [f"{prefix}barcodes.tsv"]
    if not any(n.startswith(f"{prefix}barcodes.tsv") for n in names):
        raise FileNotFoundError(f"10x folder {folder} lacks {need[0]}(.gz); it holds {sorted(names)}")
    if not any(n.startswith((f"{prefix}features.tsv", f"{prefix}genes.tsv")) for n in names):
        raise FileNotFoundError(f"10x folder {folder} lacks {prefix}features.tsv(.gz) or {prefix}genes.tsv(.gz); "
                                f"it holds {sorted(names)}")
    v3 = {f"{prefix}{n}.gz" for n in ("matrix.mtx", "features.tsv", "barcodes.tsv")}
    v2 = {f"{prefix}{n}" for n in ("matrix.mtx", "genes.tsv", "barcodes.tsv")}
    if v3 <= names or v2 <= names:
        adata = sc.read_10x_mtx(folder, var_names="gene_symbols", make_unique=True, prefix=prefix or None)
    else:
        # scanpy reads only the two layouts Cell Ranger writes (v3 all gzipped, v2 none gzipped);
        # GEO often ships the v2 layout gzipped (genes.tsv.gz), which it rejects: read those directly.
        adata = _read_mtx_triplet(folder, prefix, names)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns["omnicelltosg_input"] = {"format": "10x", "files": sorted(n for n in names if n.startswith(prefix)),
                                       "orientation": "cells x genes (10x: genes × cells on disk, transposed)"}
    return adata


def _read_mtx_triplet(folder: Path, prefix: str, names: set[str]) -> ad.AnnData:
    """matrix.mtx(.gz) (genes × cells) + genes/features.tsv(.gz) + barcodes.tsv(.gz), any compression."""
    import scipy.io

    def pick(stems):
        return folder / next(n for stem in stems for n in sorted(names) if n in (f"{prefix}{stem}", f"{prefix}{stem}.gz"))

    X = sp.csr_matrix(scipy.io.mmread(pick(["matrix.mtx"])).T)
    feats = pd.read_csv(pick(["features.tsv", "genes.tsv"]), sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(pick(["barcodes.tsv"]), sep="\t", header=None, dtype=str)[0]
    symbols = feats[1] if feats.shape[1] > 1 else feats[0]
    var = pd.DataFrame({"gene_ids": feats[0].to_numpy()}, index=pd.Index(symbols.to_numpy(), dtype=str))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes.to_numpy(), dtype=str)), var=var)
    adata.var_names_make_unique()
    return adata


def read_dense_table(path: Path, genes: GeneTable, *, orientation: str = "auto") -> ad.AnnData:
    """Read a GEO-style dense CSV/TSV(.gz) matrix (first column and first row are labels).

    Parameters
    ----------
    orientation
        ``genes_x_cells`` (rows are genes, the usual GEO layout), ``cells_x_genes``, or ``auto``:
        the axis whose labels resolve more often as gene symbols / Ensembl IDs is the gene axis.

    Raises
    ------
    ValueError
        For an unknown ``orientation``, or ``auto`` when neither axis' labels resolve as genes.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation {orientation!r} not supported; accepted: {list(ORIENTATIONS)}")
    path = Path(path)
    sep = "\t" if re.search(r"\.(tsv|txt)(\.gz)?$", path.name.lower()) else ","
    table = pd.read_csv(path, sep=sep, index_col=0)
    rows, cols = [str(i) for i in table.index], [str(c) for c in table.columns]
    row_share = _gene_share(rows, genes)
    col_share = _gene_share(cols, genes)
    if orientation == "auto":
        if max(row_share, col_share) < 0.1:
            raise ValueError(f"{path.name}: neither the row labels ({rows[:3]} …, {row_share:.0%} genes) nor the "
                             f"column labels ({cols[:3]} …, {col_share:.0%} genes) look like genes; "
                             "pass orientation='genes_x_cells' or 'cells_x_genes'")
        orientation = "genes_x_cells" if row_share >= col_share else "cells_x_genes"
    values = table.to_numpy(dtype=np.float32)
    if orientation == "genes_x_cells":
        values, obs_names, var_names = values.T, cols, rows
    else:
        obs_names, var_names = rows, cols
    adata = ad.AnnData(X=sp.csr_matrix(values), obs=pd.DataFrame(index=pd.Index(obs_names, dtype=str)),
                       var=pd.DataFrame(index=pd.Index(var_names, dtype=str)))
    adata.uns["omnicelltosg_input"] = {
        "format": "csv", "files": [path.name], "orientation": orientation,
        "orientation_evidence": f"row labels resolving as genes {row_share:.1%}, column labels {col_share:.1%}"}
    return adata


def read_original_release(folder: Path) -> ad.AnnData:
    """Read a dataset in the original OmniCellTOSG release layout into meta-cells × genes.

    The layout: ``expression_matrix/*_part_<k>.npy`` (dense float shards, rows = meta-cells, columns
    = the release's transcript columns), ``cell_metadata_with_mappings.parquet`` (one row per
    meta-cell; ``matrix_file_path`` relative to the folder and ``matrix_row_idx`` locate its row),
    ``bmg_gene_index.csv(.gz)`` (``gene_name, indices``: ``;``-separated transcript columns of each
    gene), and the release's entity graph: ``edge_index.npy``, ``internal_edge_index.npy``,
    ``ppi_edge_index.npy`` ([2, E] int) and ``s_name.csv`` / ``s_desc.csv`` / ``s_bio.csv``.

    Expression is summed over each gene's transcript columns (our graph has one transcript node per
    gene); the metadata columns are kept as ``obs`` for a recipe to map. The release's own entity
    graph is not imported — the dataset is rebuilt on ours — but it is checked (edge indices inside
    the entity table) and its sizes are recorded in ``uns["omnicelltosg_input"]``.

    Raises
    ------
    FileNotFoundError
        If a file of the layout is missing (the message names it).
    ValueError
        If a row index or edge index is out of range, or the metadata lacks the mapping columns.
    """
    folder = Path(folder)
    meta_path = folder / RELEASE_METADATA
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not an OmniCellTOSG release folder: {RELEASE_METADATA} is missing")
    meta = pd.read_parquet(meta_path)
    missing = {"matrix_file_path", "matrix_row_idx"} - set(meta.columns)
    if missing:
        raise ValueError(f"{meta_path.name} lacks {sorted(missing)}; columns: {list(meta.columns)}")
    index_file = next((folder / n for n in ("bmg_gene_index.csv", "bmg_gene_index.csv.gz") if (folder / n).exists()), None)
    if index_file is None:
        raise FileNotFoundError(f"{folder} lacks bmg_gene_index.csv(.gz)")
    gene_index = pd.read_csv(index_file, dtype=str, keep_default_na=False)
    cols = gene_index["indices"].str.split(";").explode().astype(np.int64)
    n_columns = int(cols.max()) + 1
    gene_of_column = sp.csr_matrix((np.ones(len(cols), np.float32), (cols.to_numpy(), np.repeat(
        np.arange(len(gene_index)), gene_index["indices"].str.count(";").to_numpy() + 1))),
        shape=(n_columns, len(gene_index)))
    blocks, order = [], []
    for shard, rows in meta.groupby("matrix_file_path", sort=True).groups.items():
        path = folder / shard
        if not path.exists():
            raise FileNotFoundError(f"Expression shard {shard} named by {RELEASE_METADATA} is missing")
        arr = np.load(path, mmap_mode="r")
        idx = meta.loc[rows, "matrix_row_idx"].to_numpy(np.int64)
        if idx.max() >= arr.shape[0] or arr.shape[1] != n_columns:
            raise ValueError(f"{shard}: shape {arr.shape} does not fit rows up to {idx.max()} and the "
                             f"{n_columns} columns of {index_file.name}")
        blocks.append(sp.csr_matrix(np.asarray(arr[idx], dtype=np.float32)) @ gene_of_column)
        order.append(np.asarray(rows))
    X = sp.vstack(blocks).tocsr()
    obs = meta.loc[np.concatenate(order)].drop(columns=["matrix_file_path", "matrix_row_idx"])
    obs.index = obs.index.astype(str)
    graph = {}
    names = pd.read_csv(folder / "s_name.csv") if (folder / "s_name.csv").exists() else None
    for name in ("edge_index", "internal_edge_index", "ppi_edge_index"):
        if (folder / f"{name}.npy").exists():
            e = np.load(folder / f"{name}.npy")
            if names is not None and e.size and int(e.max()) >= len(names):
                raise ValueError(f"{name}.npy refers to entity {int(e.max())}, but s_name.csv has {len(names)} rows")
            graph[name] = int(e.shape[1])
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(gene_index["gene_name"].to_numpy(), dtype=str)))
    adata.uns["omnicelltosg_input"] = {
        "format": "omnicelltosg_release", "files": sorted(p.name for p in folder.iterdir()),
        "orientation": "meta-cells x genes (release transcript columns summed per gene)",
        "release_graph_edges": graph, "release_entities": int(len(names)) if names is not None else None}
    return adata


def _gene_share(labels: list[str], genes: GeneTable, n: int = 2000) -> float:
    sample = labels[:n]
    entrez, _ = resolve_gene_ids(sample, "auto", genes)
    return sum(e is not None for e in entrez) / max(len(sample), 1)


def read_matrix(path: Path, genes: GeneTable, *, fmt: str | None = None, orientation: str = "auto") -> ad.AnnData:
    """Read any supported input (see the module docstring) into cells × genes.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    PermissionError
        If the file cannot be read (the message names it).
    ValueError
        For an unsupported format (the message lists the supported ones), or an h5ad file that cannot
        be read (the message names the file and the reader's error).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} not supported; accepted: {list(FORMATS)}")
    if fmt == "h5ad":
        try:
            adata = ad.read_h5ad(path)
        except PermissionError as err:
            raise PermissionError(f"Cannot read {path}: permission denied ({err.strerror})") from None
        except Exception as err:  # h5py / anndata raise OSError, KeyError, TypeError … for a damaged file
            raise ValueError(f"Cannot read {path} as h5ad ({type(err).__name__}: {err}); the file is damaged or "
                             "not an AnnData file") from None
        adata.uns["omnicelltosg_input"] = {"format": "h5ad", "files": [path.name], "orientation": "cells x genes"}
        return adata
    if fmt == "10x":
        return read_10x(path)
    if fmt == "omnicelltosg_release":
        return read_original_release(path)
    return read_dense_table(path, genes, orientation=orientation)


__all__ = ["FORMATS", "detect_format", "read_10x", "read_dense_table", "read_original_release", "read_matrix"]
