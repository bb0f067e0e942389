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

from ._compat import patch_seacells, quiet
from .schema import OBS_COLUMNS, PARTITION_KEYS, VOTED_COLUMNS

SMALL_PARTITION = 60  # cells; below this SEACells is initialised greedily (see seacells_assignments)


def partitions(adata: ad.AnnData) -> dict[tuple, np.ndarray]:
    """Group cells by :data:`dataset_script.schema.PARTITION_KEYS` → ``{key: row indices}``."""
    groups = adata.obs.groupby(list(PARTITION_KEYS), observed=True, sort=True).indices
    return {k: np.asarray(v) for k, v in groups.items()}


def seacells_assignments(adata: ad.AnnData, n_metacells: int, *, counts: bool, seed: int = 0,
                         max_iter: int = 100) -> np.ndarray:
    """Assign each cell of one partition to a SEACells meta-cell.

    Parameters
    ----------
    adata
        One partition, ``n_obs`` × ``n_vars`` (raw counts if ``counts`` else log-scale values).
    n_metacells
        Number of meta-cells (1 ≤ n_metacells ≤ n_obs); 1 puts every cell in one meta-cell.
    counts
        Whether ``adata.X`` holds raw counts (then it is normalised to 10,000 and log1p-ed first).

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

    work = ad.AnnData(X=adata.X.copy())
    if counts:
        sc.pp.normalize_total(work, target_sum=1e4)
        sc.pp.log1p(work)
        # Seurat-flavour HVG selection exponentiates its input, so it only applies to counts;
        # log-scale inputs (already normalised upstream) use every gene.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sc.pp.highly_variable_genes(work, n_top_genes=min(2000, work.n_vars), flavor="seurat")
    mask = "highly_variable" if counts else None
    n_genes = int(work.var["highly_variable"].sum()) if counts else work.n_vars
    sc.pp.pca(work, n_comps=max(int(min(30, n - 2, n_genes - 1)), 2), mask_var=mask, random_state=seed)
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
        row["n_cells"] = int(len(cells))
        row["purity"] = float(vote.iloc[0] / len(cells))
        rows.append(row)
    return sp.csr_matrix(X, dtype=np.float32), pd.DataFrame(rows)


def make_metacells(adata: ad.AnnData, *, cells_per_metacell: int = 5, min_cells_per_partition: int = 10,
                   seed: int = 0, progress=None) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Meta-cells of a whole ingested dataset, partition by partition.

    Parameters
    ----------
    adata
        Output of :func:`dataset_script.ingest.read_dataset`.
    cells_per_metacell
        Target cells per meta-cell (1 keeps single cells). A partition of n cells gets
        ``max(1, round(n / cells_per_metacell))`` meta-cells.
    min_cells_per_partition
        Partitions with fewer cells become one meta-cell (SEACells needs a kNN graph).

    Returns
    -------
    X (CSR float32, meta-cells × genes of ``adata``) and the meta-cell metadata table.

    Raises
    ------
    ValueError
        If ``cells_per_metacell`` < 1.
    """
    if cells_per_metacell < 1:
        raise ValueError(f"cells_per_metacell must be >= 1, got {cells_per_metacell}")
    counts = bool(adata.uns["omnicelltosg"]["values_are_counts"])
    blocks, tables = [], []
    parts = partitions(adata)
    for key, idx in (progress(parts.items(), total=len(parts)) if progress else parts.items()):
        part = adata[idx]
        n = len(idx)
        k = 1 if n < min_cells_per_partition else max(1, round(n / cells_per_metacell))
        assignment = seacells_assignments(part, k, counts=counts, seed=seed)
        X, obs = aggregate(part, assignment, counts=counts)
        obs.insert(0, "cell_id", [f"{key[2]}:mc{m:04d}" for m in range(len(obs))])
        blocks.append(X)
        tables.append(obs)
    return sp.vstack(blocks).tocsr(), pd.concat(tables, ignore_index=True)
