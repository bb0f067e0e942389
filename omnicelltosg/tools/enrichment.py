"""GO enrichment of a gene set against a background (hypergeometric test, Benjamini–Hochberg FDR).

Annotations: org.Hs.eg.db 3.16 direct gene→GO rows (``orgHsEgDb_gene2go_direct.tsv.gz``; entrez IDs
mapped to symbols with ``orgHsEgDb_3.16_gene_table.tsv.gz``) and GO.db 3.16 term names
(``go_terms_2022-07-01.tsv.gz``), all in ``../shared/data/knowledge/``. The annotations are the direct
ones only (not propagated up the GO DAG, which is not shipped here), so a gene annotated to a child
term does not count for its parents; the evidence code ``ND`` (no biological data) is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ENRICHMENT_COLUMNS = ["go_id", "term", "ontology", "overlap", "set_size", "term_size", "background_size",
                      "expected", "fold_enrichment", "p_value", "fdr", "genes"]


@dataclass
class GOAnnotations:
    """Gene symbol → GO term sets, and the term table (``go_id`` index; ``term``, ``ontology``)."""

    gene_terms: dict[str, frozenset]
    terms: pd.DataFrame


def load_go_annotations(knowledge_dir: str | Path) -> GOAnnotations:
    """Read the org.Hs.eg.db / GO.db tables of ``knowledge_dir``.

    Raises:
        FileNotFoundError: a table is missing (the message names it).
    """
    knowledge_dir = Path(knowledge_dir)
    paths = {name: knowledge_dir / name for name in (
        "orgHsEgDb_gene2go_direct.tsv.gz", "orgHsEgDb_3.16_gene_table.tsv.gz", "go_terms_2022-07-01.tsv.gz")}
    for name, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"GO enrichment needs {path} ({name}, see ../shared/data/README.md).")
    gene2go = pd.read_csv(paths["orgHsEgDb_gene2go_direct.tsv.gz"], sep="\t", dtype=str)
    gene2go = gene2go[gene2go["evidence"] != "ND"]
    genes = pd.read_csv(paths["orgHsEgDb_3.16_gene_table.tsv.gz"], sep="\t", dtype=str, usecols=["entrez_id", "symbol"])
    merged = gene2go.merge(genes, on="entrez_id", how="inner").dropna(subset=["symbol"])
    gene_terms = {sym: frozenset(g) for sym, g in merged.groupby("symbol")["go_id"]}
    terms = pd.read_csv(paths["go_terms_2022-07-01.tsv.gz"], sep="\t", dtype=str,
                        usecols=["go_id", "term", "ontology"]).set_index("go_id")
    return GOAnnotations(gene_terms, terms)


def go_enrichment(gene_set, background, annotations: GOAnnotations, *, min_term_size: int = 3,
                  max_term_size: int = 500, ontologies: tuple[str, ...] = ("BP", "MF", "CC")) -> pd.DataFrame:
    """Over-representation of GO terms in ``gene_set`` relative to ``background`` (e.g. the measured genes).

    For each term with ``min_term_size <= K <= max_term_size`` annotated background genes and at least
    one hit, the one-sided hypergeometric p-value ``P(X >= k)``, ``X ~ Hypergeom(N, K, n)`` with N
    annotated background genes, n annotated set genes, k set genes in the term
    (``scipy.stats.hypergeom.sf(k - 1, N, K, n)``); FDR by Benjamini–Hochberg over the tested terms
    (``scipy.stats.false_discovery_control``). Set genes outside the background are ignored; only
    genes with at least one annotation count toward N and n (the usual convention, e.g. clusterProfiler).

    Returns:
        DataFrame with ``ENRICHMENT_COLUMNS``, sorted by p-value; ``genes`` = the set's genes in the
        term (``;``-joined). Empty (with those columns) when nothing can be tested.
    """
    background = {str(g) for g in background}
    universe = sorted(g for g in background if g in annotations.gene_terms)
    members = sorted({str(g) for g in gene_set} & set(universe))
    if not universe or not members:
        return pd.DataFrame(columns=ENRICHMENT_COLUMNS)
    term_genes: dict[str, list[str]] = {}
    for g in universe:
        for t in annotations.gene_terms[g]:
            term_genes.setdefault(t, []).append(g)
    member_set = set(members)
    big_n, n = len(universe), len(members)
    rows = []
    for term, genes in term_genes.items():
        k_term = len(genes)
        if not (min_term_size <= k_term <= max_term_size):
            continue
        if term in annotations.terms.index and annotations.terms.at[term, "ontology"] not in ontologies:
            continue
        hits = [g for g in genes if g in member_set]
        if not hits:
            continue
        rows.append((term, len(hits), k_term, ";".join(sorted(hits))))
    if not rows:
        return pd.DataFrame(columns=ENRICHMENT_COLUMNS)
    df = pd.DataFrame(rows, columns=["go_id", "overlap", "term_size", "genes"])
    df["set_size"], df["background_size"] = n, big_n
    df["p_value"] = stats.hypergeom.sf(df["overlap"] - 1, big_n, df["term_size"], n)
    df["fdr"] = stats.false_discovery_control(df["p_value"].to_numpy(), method="bh")
    df["expected"] = df["term_size"] * n / big_n
    df["fold_enrichment"] = df["overlap"] / df["expected"]
    names = annotations.terms.reindex(df["go_id"])
    df["term"], df["ontology"] = names["term"].to_numpy(), names["ontology"].to_numpy()
    return df[ENRICHMENT_COLUMNS].sort_values(["p_value", "go_id"]).reset_index(drop=True)


def go_term_genes(annotations: GOAnnotations, go_ids, background=None) -> set[str]:
    """Genes directly annotated to any of ``go_ids`` (optionally only those in ``background``).

    Raises:
        ValueError: a GO ID that is not in the term table (the message names it).
    """
    unknown = [t for t in go_ids if t not in annotations.terms.index]
    if unknown:
        raise ValueError(f"GO IDs {unknown} are not in the GO term table (go_terms_2022-07-01).")
    wanted = set(go_ids)
    genes = {g for g, terms in annotations.gene_terms.items() if terms & wanted}
    return genes if background is None else genes & {str(b) for b in background}


#: Cut-offs of precision@k in every validation table.
PRECISION_AT = (20, 50, 100)


def ranking_validation(scores: dict | pd.Series, positives, background, *, ks=PRECISION_AT) -> dict:
    """How well a gene ranking recovers known genes: AUPRC and precision@k over ``background``.

    Genes of ``background`` without a (finite) score rank last. AUPRC is scikit-learn's
    ``average_precision_score`` (step-wise, ties grouped); its chance level is the prevalence
    ``|positives ∩ background| / |background|``. Precision@k counts positives among the ``k`` best genes
    (ties broken by symbol, so the value is deterministic).

    Args:
        scores: symbol → score (higher = ranked first); positives: known genes; background: the genes
            that could be ranked (e.g. measured genes with a protein node).

    Returns: ``{"auprc", "prevalence", "n_positives", "n_background", "precision_at": {k: value}}``.

    Raises:
        ValueError: empty background, or no positive in the background.
    """
    from sklearn.metrics import average_precision_score

    genes = sorted({str(g) for g in background})
    if not genes:
        raise ValueError("background is empty.")
    truth = np.array([g in set(map(str, positives)) for g in genes])
    if not truth.any():
        raise ValueError("no positive gene lies in the background.")
    series = pd.Series(scores, dtype=np.float64) if not isinstance(scores, pd.Series) else scores.astype(np.float64)
    series.index = series.index.map(str)
    series = series[~series.index.duplicated()]
    values = series.reindex(genes).to_numpy()
    lowest = np.nanmin(values[np.isfinite(values)]) - 1.0 if np.isfinite(values).any() else 0.0
    values = np.where(np.isfinite(values), values, lowest)
    order = np.lexsort((np.array(genes), -values))
    return {"auprc": float(average_precision_score(truth, values)), "prevalence": float(truth.mean()),
            "n_positives": int(truth.sum()), "n_background": len(genes),
            "precision_at": {int(k): float(truth[order[:k]].mean()) for k in ks}}


def gene_set_validation(gene_set, positives, background) -> dict:
    """Size, fraction of known genes and its one-sided hypergeometric p-value (vs ``background``) of a gene
    set, e.g. a signaling network. Genes outside the background are not counted."""
    background = {str(g) for g in background}
    members = {str(g) for g in gene_set} & background
    hits = members & {str(p) for p in positives}
    big_k = len(background & {str(p) for p in positives})
    p = float(stats.hypergeom.sf(len(hits) - 1, len(background), big_k, len(members))) if members else float("nan")
    return {"n_genes": len(members), "n_known": len(hits), "fraction_known": len(hits) / len(members) if members else 0.0,
            "hypergeom_p": p, "known_genes": sorted(hits)}


__all__ = ["GOAnnotations", "load_go_annotations", "go_enrichment", "go_term_genes", "ranking_validation",
           "gene_set_validation", "ENRICHMENT_COLUMNS", "PRECISION_AT"]
