"""The knowledge graph from selectable sources, unioned with per-edge evidence, on the real files."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from dataset_script.build.knowledge import build_entity_graph, load_ppi
from dataset_script.build.recipe import KnowledgeSettings

MIN_PPI_SCORE = KnowledgeSettings().min_ppi_score  # the recipe default


@pytest.fixture(scope="module")
def universe(data_dir):
    import anndata as ad

    from dataset_script.build.knowledge import load_gene_table, resolve_gene_ids

    genes = load_gene_table(data_dir / "knowledge")
    kang = ad.read_h5ad(data_dir / "scrna" / "kang2018_ifnb_pbmc_1556cells_2donors_muscat.h5ad")
    return sorted({e for e in resolve_gene_ids(list(kang.var_names), "symbol", genes)[0] if e}, key=int)


def test_junk_identifiers_are_dropped_and_counted(data_dir):
    report = {}
    ppi = load_ppi(data_dir / "knowledge", "scnet", 0.0, report=report)
    with gzip.open(data_dir / "knowledge" / "scnet_human_ppi_symbols.tsv.gz", "rt") as fh:
        raw = pd.read_csv(fh, sep="\t", dtype=str, keep_default_na=False)
    junk = (raw["gene_a"].str.strip() == "-1") | (raw["gene_b"].str.strip() == "-1")
    assert report["input_rows"] == len(raw) and report["junk_identifier_rows"] >= int(junk.sum()) > 0
    assert not ppi["symbol_a"].isin(["-1", ""]).any() and not ppi["symbol_b"].isin(["-1", ""]).any()
    assert report["kept_rows"] == len(ppi) == report["input_rows"] - report["junk_identifier_rows"] - report["self_pairs"]


def test_union_of_sources_carries_evidence_and_max_weight(data_dir, universe):
    kd = data_dir / "knowledge"
    single = {s: build_entity_graph(kd, entrez_ids=universe, ppi=s, min_ppi_score=MIN_PPI_SCORE)
              for s in ("string", "omnipath_lr")}
    union = build_entity_graph(kd, entrez_ids=universe, ppi=["string", "omnipath_lr"], min_ppi_score=MIN_PPI_SCORE)

    def pairs(g):
        e = g.edges[g.edges["relation"] == "ppi"]
        return {(int(a), int(b)): (w, ev) for a, b, w, ev in e[["source", "target", "weight", "evidence"]].itertuples(index=False)}

    ps, po, pu = pairs(single["string"]), pairs(single["omnipath_lr"]), pairs(union)
    assert set(pu) == set(ps) | set(po)  # the union, one edge per unordered pair
    both = set(ps) & set(po)
    assert both, "expected ligand-receptor pairs that STRING also holds"
    for k in list(both)[:50]:
        assert pu[k][1] == "omnipath_lr|string" and pu[k][0] == pytest.approx(max(ps[k][0], po[k][0]))
    only = next(iter(set(po) - set(ps)))
    assert pu[only][1] == "omnipath_lr" and pu[only][0] == 1.0
    assert union.ppi_source == "string+omnipath_lr" and set(union.ppi_report) == {"string", "omnipath_lr"}
    assert union.version != single["string"].version  # the entity table's identity follows its edges
    assert np.all(union.edges.loc[union.edges["relation"] == "ppi", "source"] <
                  union.edges.loc[union.edges["relation"] == "ppi", "target"])
    with pytest.raises(ValueError, match="not supported; accepted"):
        build_entity_graph(kd, entrez_ids=universe, ppi=["string", "biogrid"], min_ppi_score=MIN_PPI_SCORE)
