"""Meta-cells: SEACells inside each partition, then aggregation and majority-vote metadata.

Method: SEACells kernel archetypal analysis (Persad et al. 2023, Nat Biotechnol) on the PCA of the
log-normalised highly variable genes of one partition — (dataset, donor, sample, condition), so
meta-cells never mix donors, samples or conditions (ARCHITECTURE.md §3). Raw counts are summed per
meta-cell; inputs that are not counts are averaged instead (their rows keep
``values_are_counts = False``).
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from dataset_script.schema import OBS_COLUMNS, PARTITION_KEYS, VOTED_COLUMNS
from dataset_script.workarounds import patch_seacells, quiet

SMALL_PARTITION = 60  # cells; below this SEACells is initialised greedily (see seacells_assignments)


def partitions(adata: ad.AnnData) -> dict[tuple, np.ndarray]:
    """Group cells by :data:`dataset_script.schema.PARTITION_KEYS` → ``{key: row indices}``."""
    groups = adata.obs.groupby(list(PARTITION_KEYS), observed=True, sort=True).indices
    return {k: np.asarray(v) for k, v in groups.items()}


def small_partition_warning(obs: pd.DataFrame, cells_per_metacell: int, *, dataset_id: str,
                            source_columns: dict[str, str] | None = None) -> str | None:
    """The warning to give when most partitions of one input hold fewer cells than one meta-cell, else None.

    Such partitions cannot be summarised (each becomes at most one meta-cell of its few cells): the
    usual cause is a per-cell column mapped as ``sample_id`` or ``donor_id``. The message names the
    partition key (:data:`dataset_script.schema.PARTITION_KEYS`) with the most distinct values and the
    file's column it was mapped from.

    Parameters
    ----------
    obs
        Per-cell metadata with the :data:`~dataset_script.schema.PARTITION_KEYS` columns.
    cells_per_metacell
        The input's target cells per meta-cell; 1 (single cells) never warns.
    dataset_id
        Named in the message.
    source_columns
        The recipe's ``columns`` (schema column → the file's obs column), to name the file's column.
    """
    if cells_per_metacell <= 1 or obs.empty:
        return None
    sizes = obs.groupby(list(PARTITION_KEYS), observed=True).size()
    small = float((sizes < cells_per_metacell).mean())
    if small <= 0.5:
        return None
    key = max(PARTITION_KEYS, key=lambda k: obs[k].nunique())
    source = (source_columns or {}).get(key)
    origin = f" (mapped from the file's column {source!r})" if source else ""
    return (f"{dataset_id!r}: {small:.0%} of its {len(sizes)} partitions (dataset, donor, sample, condition) "
            f"hold fewer than {cells_per_metacell} cells, one meta-cell's worth; median {int(sizes.median())} "
            f"cells. '{key}'{origin} has {obs[key].nunique()} distinct values for {len(obs)} cells: is it a "
            "per-cell column? Map a sample/donor column, or set cells_per_metacell: 1 for single cells.")


def pca_embedding(adata: ad.AnnData, *, value_transform: str, seed: int = 0) -> ad.AnnData:
    """The PCA SEACells works on: ``counts`` / ``linear`` values are normalised to 10,000 per cell and
    log1p-ed, and the PCA uses the 2,000 Seurat-flavour highly variable genes; ``log`` values are used
    as they are, on every gene. Returns a new AnnData with ``obsm["X_pca"]`` (≤ 30 components)."""
    n = adata.n_obs
    work = ad.AnnData(X=sp.csr_matrix(adata.X, dtype=np.float32, copy=True))
    counts = value_transform != "log"
    if counts:
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
        # Seurat-flavour HVG selection exponentiates its input, so it only applies to values we
        # log-normalised here; log-scale inputs (already normalised upstream) use every gene.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.highly_variable_genes(work, n_top_genes=min(2000, work.n_vars), flavor="seurat")
    mask = "highly_variable" if counts else None
    n_genes = int(work.var["highly_variable"].sum()) if counts else work.n_vars
    sc.pp.pca(work, n_comps=max(int(min(30, n - 2, n_genes - 1)), 2), mask_var=mask, random_state=seed)
    return work


def split_partition(adata: ad.AnnData, max_cells: int, *, value_transform: str, seed: int = 0) -> list[np.ndarray]:
    """Split a partition larger than ``max_cells`` into chunks of at most ``max_cells`` cells.

    SEACells' kernel is dense in the cells of a partition (memory grows with n²; ~5 GB at 14k cells
    measured here), so large partitions are cut first: k-means (scikit-learn, ``k = ceil(n /
    max_cells)``, seeded) on the partition's PCA keeps similar cells together; a cluster still above
    ``max_cells`` is cut into equal random parts. Returns row-index arrays covering every cell once.

    Raises
    ------
    ValueError
        If ``max_cells`` < 2.
    """
    from sklearn.cluster import KMeans

    if max_cells < 2:
        raise ValueError(f"max_cells_per_partition must be >= 2, got {max_cells}")
    n = adata.n_obs
    if n <= max_cells:
        return [np.arange(n)]
    k = int(np.ceil(n / max_cells))
    pcs = pca_embedding(adata, value_transform=value_transform, seed=seed).obsm["X_pca"]
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(pcs)
    rng = np.random.default_rng(seed)
    chunks = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) > max_cells:
            chunks += np.array_split(rng.permutation(rows), int(np.ceil(len(rows) / max_cells)))
        elif len(rows):
            chunks.append(rows)
    return [np.sort(c) for c in chunks]


def quality(pcs: np.ndarray, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per meta-cell ``(compactness, separation)`` in the partition's PCA space.

    compactness = mean over components of the variance of the member cells (lower = tighter);
    separation = Euclidean distance from the meta-cell centroid to the nearest other centroid
    (higher = more distinct; NaN with one meta-cell). These are the definitions of
    ``SEACells.evaluate.compactness`` / ``separation``, computed on the PCA rather than on Palantir
    diffusion components, because the diffusion map fails on partitions below ~30 cells, which the
    builds here have many of.
    """
    k = int(assignment.max()) + 1
    centroids = np.stack([pcs[assignment == m].mean(0) for m in range(k)])
    compact = np.array([pcs[assignment == m].var(0).mean() for m in range(k)], dtype=np.float32)
    if k == 1:
        return compact, np.array([np.nan], dtype=np.float32)
    d = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    return compact, d.min(1).astype(np.float32)


def seacells_assignments(adata: ad.AnnData, n_metacells: int, *, value_transform: str, seed: int = 0,
                         max_iter: int = 100, embedding: ad.AnnData | None = None) -> np.ndarray:
    """Assign each cell of one partition to a SEACells meta-cell.

    Parameters
    ----------
    adata
        One partition, ``n_obs`` × ``n_vars``.
    n_metacells
        Number of meta-cells (1 ≤ n_metacells ≤ n_obs); 1 puts every cell in one meta-cell.
    value_transform
        What ``adata.X`` holds (:data:`dataset_script.schema.VALUE_TRANSFORMS`): ``counts`` and
        ``linear`` (TPM-like) values are normalised to 10,000 per cell and log1p-ed first, and the
        PCA uses the 2,000 Seurat-flavour highly variable genes; ``log`` values are used as they are,
        on every gene.

    Returns
    -------
    int64 array of length ``n_obs`` with meta-cell numbers ``0 … n_metacells-1``.
    """
    n = adata.n_obs
    if n_metacells <= 1:
        return np.zeros(n, dtype=np.int64)
    if n_metacells >= n:
        return np.arange(n, dtype=np.int64)
    patch_seacells()
    import SEACells

    work = embedding if embedding is not None else pca_embedding(adata, value_transform=value_transform, seed=seed)
    n_neighbors = int(min(15, n - 2))
    np.random.seed(seed)  # SEACells draws from NumPy's global generator
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SEACells.core.SEACells(work, build_kernel_on="X_pca", n_SEACells=n_metacells,
                                       n_waypoint_eigs=min(10, n_metacells), n_neighbors=n_neighbors,
                                       convergence_epsilon=1e-3, verbose=False)
        model.construct_kernel_matrix(n_neighbors=n_neighbors)
        if n < SMALL_PARTITION:
            # Waypoint initialisation runs Palantir diffusion maps with a 30-NN adaptive kernel,
            # which fails below ~30 cells; SEACells' greedy initialisation alone works there.
            model.waypoint_proportion = 0
        model.initialize_archetypes()
        try:
            model.fit(min_iter=10, max_iter=max_iter)
        except RuntimeWarning:
            # SEACells raises (not warns) when RSS has not converged after max_iter; the hard
            # assignments it computed before raising are still a valid partition of the cells.
            pass
    labels = model.get_hard_assignments()["SEACell"].to_numpy()
    return pd.factorize(labels, sort=True)[0].astype(np.int64)


def aggregate(adata: ad.AnnData, assignment: np.ndarray, *, counts: bool) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Sum (counts) or average (other values) cells per meta-cell and vote their metadata.

    Returns
    -------
    X : CSR float32, ``n_metacells`` × ``n_vars``.
    obs : one row per meta-cell with :data:`OBS_COLUMNS` (majority vote for
        :data:`VOTED_COLUMNS`, which are constant inside a partition otherwise), ``n_cells`` and
        ``purity`` (share of cells carrying the majority cell type).
    """
    k = int(assignment.max()) + 1
    member = sp.csr_matrix((np.ones(len(assignment), np.float32), (assignment, np.arange(len(assignment)))),
                           shape=(k, len(assignment)))
    n_cells = np.asarray(member.sum(1)).ravel()
    X = member @ sp.csr_matrix(adata.X)
    if not counts:
        X = sp.diags(1.0 / n_cells) @ X
    rows = []
    obs = adata.obs.reset_index(drop=True)
    for m in range(k):
        cells = obs.iloc[np.flatnonzero(assignment == m)]
        row = cells.iloc[0][list(OBS_COLUMNS)].to_dict()
        vote = cells["cell_type"].value_counts()
        majority = vote.index[0]
        first = cells[cells["cell_type"] == majority].iloc[0]
        for col in VOTED_COLUMNS:
            row[col] = first[col]
        if "cell_type_confidence" in cells:
            row["cell_type_confidence"] = float(cells.loc[cells["cell_type"] == majority, "cell_type_confidence"].mean())
        row["n_cells"] = int(len(cells))
        row["purity"] = float(vote.iloc[0] / len(cells))
        rows.append(row)
    return sp.csr_matrix(X, dtype=np.float32), pd.DataFrame(rows)


def metacells_of_partition(part: ad.AnnData, sample_key: str, *, cells_per_metacell: int,
                           min_cells_per_partition: int, max_cells_per_partition: int, value_transform: str,
                           seed: int = 0) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Meta-cells of ONE partition (the unit of work of a distributed build): split it if larger than
    ``max_cells_per_partition`` (:func:`split_partition`), run SEACells per chunk, aggregate, and
    record ``purity``, ``compactness`` and ``separation`` per meta-cell (:func:`quality`).

    Returns X (CSR float32, meta-cells × genes) and the meta-cell table; ``cell_id`` is
    ``<sample_key>:mc<NNNN>`` (``<sample_key>:p<chunk>:mc<NNNN>`` when the partition was split).
    """
    counts = value_transform == "counts"
    chunks = split_partition(part, max_cells_per_partition, value_transform=value_transform, seed=seed)
    blocks, tables = [], []
    for c, rows in enumerate(chunks):
        chunk = part[rows] if len(chunks) > 1 else part
        n = chunk.n_obs
        k = 1 if n < min_cells_per_partition else max(1, round(n / cells_per_metacell))
        embedding = pca_embedding(chunk, value_transform=value_transform, seed=seed) if n >= 4 else None
        assignment = seacells_assignments(chunk, k, value_transform=value_transform, seed=seed, embedding=embedding)
        X, obs = aggregate(chunk, assignment, counts=counts)
        if embedding is not None:
            obs["compactness"], obs["separation"] = quality(embedding.obsm["X_pca"], assignment)
        else:
            obs["compactness"], obs["separation"] = np.float32(np.nan), np.float32(np.nan)
        prefix = f"{sample_key}:p{c}" if len(chunks) > 1 else sample_key
        obs.insert(0, "cell_id", [f"{prefix}:mc{m:04d}" for m in range(len(obs))])
        blocks.append(X)
        tables.append(obs)
    return sp.vstack(blocks).tocsr(), pd.concat(tables, ignore_index=True)
