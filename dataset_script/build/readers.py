"""Read raw single-cell matrices in the formats labs and GEO ship: h5ad, 10x Genomics, dense CSV, and
cells selected from a SOMA experiment (a local one, or the CELLxGENE Census).

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
- ``soma`` — the cells of a SOMA experiment that an ``obs_value_filter`` selects: a local experiment
  folder (e.g. written by :func:`tiledbsoma.io.from_h5ad`) or, for the path :data:`CENSUS`, the
  CELLxGENE Census (:func:`cellxgene_census.open_soma`). See :func:`read_soma`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from dataset_script.build.knowledge import GeneTable, resolve_gene_ids

FORMATS = ("h5ad", "10x", "csv", "omnicelltosg_release", "soma")
#: Which axis of a dense table holds the genes (``auto``: the axis whose labels resolve as genes).
ORIENTATIONS = ("auto", "genes_x_cells", "cells_x_genes")

#: Files of the original OmniCellTOSG release layout (arXiv 2504.02148 data release).
RELEASE_METADATA = "cell_metadata_with_mappings.parquet"
_MTX = re.compile(r"^(?P<prefix>.*?)matrix\.mtx(\.gz)?$")
#: The ``path`` of a ``soma`` input that means the CELLxGENE Census itself (read over the internet).
CENSUS = "census"


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS` for a path, from its name (a folder holding a ``*matrix.mtx(.gz)`` is 10x;
    a folder that :meth:`tiledbsoma.Experiment.exists` accepts is ``soma``).

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
    if path.is_dir() and _is_soma_experiment(path):
        return "soma"
    if name.endswith(".h5ad"):
        return "h5ad"
    if _MTX.match(name):
        return "10x"
    if re.search(r"\.(csv|tsv|txt)(\.gz)?$", name):
        return "csv"
    raise ValueError(f"Cannot tell the format of {path}: supported are .h5ad, a 10x folder (matrix.mtx(.gz) + "
                     "features/genes.tsv(.gz) + barcodes.tsv(.gz)) or its matrix.mtx(.gz), dense "
                     ".csv/.tsv(.gz), and a SOMA experiment folder (format: soma)")


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


def _is_soma_experiment(path: Path) -> bool:
    """True if ``path`` holds a SOMA experiment (:meth:`tiledbsoma.Experiment.exists`); False without tiledbsoma."""
    try:
        import tiledbsoma
    except ImportError:
        return False
    return bool(tiledbsoma.Experiment.exists(str(path)))


def _first_line(err: BaseException) -> str:
    """The first line of a library error (tiledbsoma appends a C++ traceback)."""
    text = str(err).strip().splitlines()
    return text[0].removeprefix("SOMAError: ") if text else type(err).__name__


def _columns(frame) -> str:
    """``name (text), …`` of a SOMA DataFrame's columns and their value types, for error messages."""
    import pyarrow as pa

    def kind(t) -> str:
        t = t.value_type if pa.types.is_dictionary(t) else t  # categorical columns
        for test, name in ((pa.types.is_string, "text"), (pa.types.is_large_string, "text"),
                           (pa.types.is_integer, "integer"), (pa.types.is_floating, "number"),
                           (pa.types.is_boolean, "bool")):
            if test(t):
                return name
        return str(t)

    return ", ".join(f"{f.name} ({kind(f.type)})" for f in frame.schema if f.name != "soma_joinid")


def _query_experiment(exp, where: str, *, obs_value_filter: str, var_value_filter: str | None,
                      measurement_name: str, X_name: str, obs_id_name: str | None = None,
                      var_id_name: str | None = None) -> ad.AnnData:
    """The cells × genes of an open :class:`tiledbsoma.Experiment` that the filters select, read with
    :meth:`tiledbsoma.Experiment.axis_query` and :meth:`tiledbsoma.ExperimentAxisQuery.to_anndata`
    (the query ``cellxgene_census.get_anndata`` runs). Each error names ``where`` and what is accepted."""
    import tiledbsoma

    measurements = sorted(exp.ms.keys())
    if measurement_name not in measurements:
        raise ValueError(f"{where}: measurement_name {measurement_name!r} is not in the experiment; its "
                         f"measurements: {measurements}")
    ms = exp.ms[measurement_name]
    layers = sorted(ms.X.keys()) if "X" in ms else []
    if X_name not in layers:
        raise ValueError(f"{where}: X_name {X_name!r} is not an X layer of measurement {measurement_name!r}; "
                         f"its X layers: {layers}")
    if ms.X[X_name].soma_type != "SOMASparseNDArray":
        raise ValueError(f"{where}: X layer {X_name!r} is a dense array; tiledbsoma's query reads sparse X layers "
                         "only (write the experiment with X_kind=SparseNDArray, the default)")
    with exp.axis_query(measurement_name, obs_query=tiledbsoma.AxisQuery(value_filter=obs_value_filter),
                        var_query=tiledbsoma.AxisQuery(value_filter=var_value_filter)) as query:
        for key, value, frame, count, what in (
                ("obs_value_filter", obs_value_filter, exp.obs, query.obs_joinids, "cells"),
                ("var_value_filter", var_value_filter, ms.var, query.var_joinids, "genes")):
            try:
                n = len(count())
            except tiledbsoma.SOMAError as err:
                axis = "obs" if key.startswith("obs") else f"{measurement_name}.var"
                raise ValueError(f"{where}: {key} {value!r} cannot be applied ({_first_line(err)}). It must be a "
                                 "SOMA value filter over the columns of " + axis + ", e.g. \"donor_id == 'D1'\" or "
                                 f"\"cell_type in ['B cell', 'T cell']\"; text values are quoted. Columns: "
                                 f"{_columns(frame)}") from None
            if n == 0:
                raise ValueError(f"{where}: {key} {value!r} matched no {what}; check the value against the "
                                 f"experiment (columns: {_columns(frame)})")
        with warnings.catch_warnings():  # an integer id column (Census soma_joinid) becomes the str index
            warnings.filterwarnings("ignore", message="Transforming to str index")
            adata = query.to_anndata(X_name=X_name, drop_levels=True, obs_id_name=obs_id_name,
                                     var_id_name=var_id_name)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


def read_soma(uri: str | Path, *, obs_value_filter: str | None = None, var_value_filter: str | None = None,
              measurement_name: str = "RNA", X_name: str = "raw", census_version: str = "stable",
              organism: str = "homo_sapiens") -> ad.AnnData:
    """Read the cells of a SOMA experiment that ``obs_value_filter`` selects, as cells × genes.

    Uses :mod:`tiledbsoma` (``Experiment.axis_query`` with :class:`tiledbsoma.AxisQuery`, then
    ``ExperimentAxisQuery.to_anndata``: the same query as :func:`cellxgene_census.get_anndata`,
    whose argument names these are). ``obs`` keeps the experiment's columns, so a CELLxGENE-schema
    experiment is recognised by :func:`dataset_script.build.ingest.read_dataset` like an h5ad.

    Parameters
    ----------
    uri : str or Path
        A local SOMA experiment folder (e.g. written by :func:`tiledbsoma.io.from_h5ad`, which stores
        ``.raw`` as the measurement ``raw``), or :data:`CENSUS` (``"census"``): the CELLxGENE Census,
        opened with :func:`cellxgene_census.open_soma` (needs the internet).
    obs_value_filter : str
        Which cells, in the SOMA value-filter syntax (``"donor_id == 'D1' and disease == 'normal'"``).
        Required: a SOMA experiment (above all the Census) is not read whole by accident.
    var_value_filter : str, optional
        Which genes, a value filter over the measurement's ``var``; None = every gene.
    measurement_name : str
        The measurement to read (Census: ``RNA``).
    X_name : str
        Its X layer (Census: ``raw`` counts, or ``normalized``).
    census_version : str
        Census only: ``stable``, ``latest`` or a release date (``"2025-01-30"``).
    organism : str
        Census only: the experiment, ``homo_sapiens`` / ``mus_musculus`` (``"Homo sapiens"`` is accepted).

    Returns
    -------
    AnnData
        Cells × genes, ``X`` CSR float32. Local: ``obs_names`` / ``var_names`` are the ids the
        experiment was written with. Census: ``obs_names`` are the Census ``soma_joinid`` (as text)
        and ``var_names`` the Ensembl ``feature_id``. ``uns["omnicelltosg_input"]`` records the
        format, URI, filters, measurement, layer and (Census) version, its URI and metadata.

    Raises
    ------
    ValueError
        If ``obs_value_filter`` is missing, a filter cannot be parsed or names an unknown column (the
        message lists the columns and their types), a filter matches nothing, the measurement, X
        layer or organism does not exist (the message lists those there), the folder is not a SOMA
        experiment, or the Census version is unknown.
    FileNotFoundError
        If a local ``uri`` does not exist.
    ConnectionError
        If the Census cannot be reached (offline); the message says how to read a local copy instead.
    ImportError
        If ``tiledbsoma`` (or, for the Census, ``cellxgene_census``) is not installed.
    """
    if not obs_value_filter:
        raise ValueError(f"Reading the SOMA experiment {uri} needs an obs_value_filter (which cells, in the SOMA "
                         "value-filter syntax, e.g. \"donor_id == 'D1'\"); in a recipe entry: 'format: soma' "
                         "and 'obs_value_filter: ...'")
    try:
        import tiledbsoma
    except ImportError:
        raise ImportError("Reading a SOMA experiment needs tiledbsoma (pip install tiledbsoma==2.3.0)") from None
    query = {"obs_value_filter": obs_value_filter, "var_value_filter": var_value_filter,
             "measurement_name": measurement_name, "X_name": X_name}
    if str(uri) == CENSUS:
        adata, record = _read_census(census_version, organism, query)
    else:
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"SOMA experiment not found: {path}")
        if not tiledbsoma.Experiment.exists(str(path)):
            raise ValueError(f"{path} is not a SOMA experiment (tiledbsoma.Experiment.exists is false); point 'path' "
                             "at a folder written by tiledbsoma.io.from_h5ad / from_anndata, or at 'census'")
        with tiledbsoma.Experiment.open(str(path)) as exp:
            adata = _query_experiment(exp, str(path), **query)
        record = {"files": [path.name], "uri": path.name}
    adata.uns["omnicelltosg_input"] = {"format": "soma", **record, **query, "orientation": "cells x genes",
                                       "tiledbsoma_version": tiledbsoma.__version__}
    return adata


def _read_census(census_version: str, organism: str, query: dict) -> tuple[ad.AnnData, dict]:
    """The query on the CELLxGENE Census (:func:`cellxgene_census.open_soma`) and what was read."""
    try:
        import cellxgene_census
    except ImportError:
        raise ImportError("'path: census' reads the CELLxGENE Census with cellxgene_census "
                          "(pip install cellxgene-census==1.18.0)") from None
    import tiledbsoma

    try:
        census = cellxgene_census.open_soma(census_version=census_version)
    except (OSError, tiledbsoma.SOMAError) as err:  # requests' and aiohttp's errors are OSErrors
        raise ConnectionError(
            f"Cannot open the CELLxGENE Census (census_version={census_version!r}): {_first_line(err)}. The Census "
            "is read over the internet; offline, export the cells once (cellxgene_census.get_anndata, then "
            "tiledbsoma.io.from_anndata or AnnData.write_h5ad) and point 'path' at that local copy") from None
    except ValueError as err:
        raise ValueError(f"census_version {census_version!r}: {_first_line(err)}; accepted: 'stable', 'latest' or "
                         "a release date such as '2025-01-30' (cellxgene_census.get_census_version_directory())"
                         ) from None
    with census:
        data = census["census_data"]
        name = re.sub(" +", "_", organism.strip()).lower()  # "Homo sapiens" → homo_sapiens, as cellxgene_census
        if name not in data:
            raise ValueError(f"organism {organism!r} is not in the CELLxGENE Census {census_version!r}; accepted: "
                             f"{sorted(data.keys())}")
        adata = _query_experiment(data[name], f"CELLxGENE Census {census_version} ({name})", **query,
                                  obs_id_name="soma_joinid", var_id_name="feature_id")
        if {"dataset_id", "donor_id"} <= set(adata.obs.columns):
            # Census donor IDs are unique only within one source dataset: qualify them, so a query spanning
            # datasets never merges two donors who share an ID (meta-cells and donor splits use donor_id).
            adata.obs["donor_id"] = (adata.obs["dataset_id"].astype(str) + ":" + adata.obs["donor_id"].astype(str))
        meta = {k: v for k, v in census.metadata.items() if isinstance(v, (str, int, float))
                and not k.startswith("soma_")}
        record = {"files": [], "uri": census.uri, "census_version": census_version, "organism": name,
                  "census_metadata": meta}
    return adata, record


def _gene_share(labels: list[str], genes: GeneTable, n: int = 2000) -> float:
    sample = labels[:n]
    entrez, _ = resolve_gene_ids(sample, "auto", genes)
    return sum(e is not None for e in entrez) / max(len(sample), 1)


def read_matrix(path: Path | str, genes: GeneTable, *, fmt: str | None = None, orientation: str = "auto",
                soma: dict | None = None) -> ad.AnnData:
    """Read any supported input (see the module docstring) into cells × genes.

    Parameters
    ----------
    path
        The input; for ``fmt="soma"`` also :data:`CENSUS` (the CELLxGENE Census).
    soma
        :func:`read_soma`'s keywords (``obs_value_filter`` …) for a SOMA experiment.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    PermissionError
        If the file cannot be read (the message names it).
    ValueError
        For an unsupported format (the message lists the supported ones), an h5ad file that cannot
        be read (the message names the file and the reader's error), or as :func:`read_soma` raises.
    """
    if fmt == "soma":  # before the existence check: the Census is no local path
        return read_soma(path, **(soma or {}))
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} not supported; accepted: {list(FORMATS)}")
    if fmt == "soma":
        return read_soma(path, **(soma or {}))
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


__all__ = [
    "CENSUS",
    "FORMATS",
    "detect_format",
    "read_10x",
    "read_dense_table",
    "read_matrix",
    "read_original_release",
    "read_soma",
]
