"""Metadata harmonisation: cell type → Cell Ontology, disease → MONDO, tissue → UBERON +
``tissue_general``, sex, age in years → development-stage category.

Ontology tables are the TSVs in ``<data>/ontology/`` (columns ``id, label, synonyms, description,
deprecated, ancestors``, converted from ``cellxgene-ontology-guide``); the tissue groupings are
CELLxGENE's ``cxg_tissue_general_list.json``.

Matching order for free text (:func:`match_term`): a user override (recipe map or override table)
wins; then the exact label or exact synonym (case-insensitive); then fuzzy token-sort matching
(``rapidfuzz.fuzz.token_sort_ratio`` over labels and synonyms) whose score is kept — accepted at
≥ :data:`FUZZY_ACCEPT`, flagged for review below :data:`FUZZY_REVIEW`, and NOT accepted below
:data:`FUZZY_ACCEPT` (the value becomes ``unknown`` and is flagged). Every mapping is returned as a
reviewable table (:data:`MAPPING_COLUMNS`) that the build writes next to the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from dataset_script.schema import SEX_VALUES

NORMAL_ID = "PATO:0000461"  # CELLxGENE's disease term for healthy donors

#: token_sort_ratio (0–100) at or above which a fuzzy match is accepted.
FUZZY_ACCEPT = 90.0
#: Accepted fuzzy matches below this score are flagged ``needs_review``.
FUZZY_REVIEW = 95.0
#: Columns of every reviewable mapping table.
MAPPING_COLUMNS = ("field", "original", "ontology_id", "label", "method", "score", "needs_review")
#: Longer free text is not compared with the ontology (it is no label, and fuzzy matching grows with
#: its length): :func:`match_term` returns it unmatched, flagged for review.
MAX_LABEL_LENGTH = 500

#: Broad disease categories (MONDO labels): a disease is grouped under the most specific of these
#: among its MONDO ancestors (itself included), e.g. relapsing-remitting MS → multiple sclerosis,
#: oligodendroglioma → glioma. A recipe's ``disease_categories`` list replaces this default.
DISEASE_CATEGORIES = (
    "multiple sclerosis", "systemic lupus erythematosus", "COVID-19", "influenza", "HIV infectious disease",
    "tuberculosis", "Alzheimer disease", "Parkinson disease", "amyotrophic lateral sclerosis", "Huntington disease",
    "epilepsy", "schizophrenia", "autism spectrum disorder", "Down syndrome", "type 1 diabetes mellitus",
    "type 2 diabetes mellitus", "obesity disorder", "rheumatoid arthritis", "inflammatory bowel disease",
    "Crohn disease", "ulcerative colitis", "psoriasis", "atopic eczema", "systemic sclerosis", "Sjogren syndrome",
    "asthma", "chronic obstructive pulmonary disease", "idiopathic pulmonary fibrosis", "cystic fibrosis",
    "heart failure", "cardiomyopathy", "coronary artery disorder", "myocardial infarction", "atherosclerosis",
    "chronic kidney disease", "metabolic dysfunction-associated steatotic liver disease", "lung cancer",
    "breast cancer", "colorectal cancer", "gastric cancer", "esophageal cancer", "hepatocellular carcinoma",
    "kidney cancer", "malignant pancreatic neoplasm", "prostate cancer", "ovarian cancer",
    "head and neck squamous cell carcinoma", "nasopharyngeal carcinoma", "glioma", "melanoma", "leukemia",
    "lymphoma", "plasma cell myeloma",
)


@dataclass(frozen=True)
class Ontology:
    """One ontology: label and exact-synonym lookup (case-insensitive) and ancestor sets."""

    name: str
    labels: dict[str, str]       # id -> label
    lookup: dict[str, str]       # lower-cased label or synonym -> id (labels win over synonyms)
    ancestors: dict[str, tuple[str, ...]]
    synonyms: dict[str, tuple[str, ...]]  # id -> synonyms in their original case

    def fuzzy(self, text: str) -> tuple[str, str, float] | None:
        """Best ``(id, label, score)`` by ``rapidfuzz.fuzz.token_sort_ratio`` over labels and
        synonyms (rapidfuzz's default processor: lower-cased, punctuation stripped), or None."""
        from rapidfuzz import fuzz, process, utils

        keys, ids = _choices(self)
        hit = process.extractOne(str(text), keys, scorer=fuzz.token_sort_ratio, processor=utils.default_process)
        if hit is None:
            return None
        term = ids[hit[2]]
        return term, self.labels[term], float(hit[1])

    def resolve(self, text: str, *, what: str) -> tuple[str, str]:
        """Return ``(ontology_id, label)`` for an exact label or synonym.

        Raises
        ------
        ValueError
            If ``text`` matches no label or synonym; the message names the ontology and suggests
            labels that share the first word.
        """
        key = str(text).strip().lower()
        if key in self.lookup:
            term = self.lookup[key]
            return term, self.labels[term]
        if key in {i.lower() for i in self.labels}:
            term = next(i for i in self.labels if i.lower() == key)
            return term, self.labels[term]
        first = key.split()[0] if key.split() else key
        near = sorted(lbl for lbl in self.labels.values() if lbl.lower().startswith(first))[:8]
        raise ValueError(
            f"{what} {text!r} is not a label or exact synonym in {self.name}. "
            f"Use an exact {self.name} label (e.g. {near or list(self.labels.values())[:5]}) "
            "in the recipe's map."
        )


_CHOICES: dict[int, tuple[list[str], list[str]]] = {}


def _choices(onto: Ontology) -> tuple[list[str], list[str]]:
    """Lower-cased labels and synonyms of an ontology and their IDs (cached per loaded ontology)."""
    if id(onto) not in _CHOICES:
        _CHOICES[id(onto)] = (list(onto.lookup), list(onto.lookup.values()))
    return _CHOICES[id(onto)]


@lru_cache(maxsize=16)
def load_ontology(path: str) -> Ontology:
    """Read an ontology TSV (``id, label, synonyms, description, deprecated, ancestors``)."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    table = table[table["deprecated"].str.lower() != "true"]
    labels = dict(zip(table["id"], table["label"]))
    lookup: dict[str, str] = {}
    for term, syns in zip(table["id"], table["synonyms"]):
        for s in filter(None, syns.split("|")):
            lookup.setdefault(s.strip().lower(), term)
    for term, label in labels.items():  # labels override synonyms
        lookup[label.lower()] = term
    ancestors = {t: tuple(filter(None, a.split("|"))) for t, a in zip(table["id"], table["ancestors"])}
    synonyms = {t: tuple(filter(None, s.split("|"))) for t, s in zip(table["id"], table["synonyms"])}
    return Ontology(Path(path).name.split("-")[0], labels, lookup, ancestors, synonyms)


def ontology(data_dir: Path, prefix: str) -> Ontology:
    """Load ``<data_dir>/ontology/<prefix>-ontology-*.tsv.gz`` (e.g. ``prefix="CL"``)."""
    files = sorted((Path(data_dir) / "ontology").glob(f"{prefix}-ontology-*.tsv.gz"))
    if not files:
        raise FileNotFoundError(
            f"No {prefix} ontology table under {Path(data_dir) / 'ontology'}; expected a file "
            f"named {prefix}-ontology-<version>.tsv.gz"
        )
    return load_ontology(str(files[-1]))


def tissue_general(data_dir: Path, term: str) -> str:
    """CELLxGENE ``tissue_general`` label of an UBERON term: the term itself when it is one of
    CELLxGENE's general tissues, else the first general tissue among its ancestors, else the term."""
    uberon = ontology(data_dir, "UBERON")
    general_ids = json.loads((Path(data_dir) / "ontology" / "cxg_tissue_general_list.json").read_text())
    general = term if term in general_ids else next(
        (g for g in general_ids if g in set(uberon.ancestors.get(term, ()))), term)
    return uberon.labels.get(general, general)


def resolve_tissue(data_dir: Path, tissue: str, *, overrides: dict[str, str] | None = None) -> tuple[dict[str, str], TermMatch]:
    """Map a tissue label to UBERON and its CELLxGENE ``tissue_general`` grouping.

    Returns ``({"tissue", "tissue_ontology_id", "tissue_general"}, TermMatch)``.

    Raises
    ------
    ValueError
        If the tissue matches no UBERON term (not even fuzzily above :data:`FUZZY_ACCEPT`).
    """
    if str(tissue).strip().lower() in ("unknown", ""):
        return ({"tissue": "unknown", "tissue_ontology_id": "unknown", "tissue_general": "unknown"},
                TermMatch("tissue", str(tissue), "unknown", "unknown", "stated unknown", 100.0, False))
    m = match_term(ontology(data_dir, "UBERON"), tissue, field="tissue", overrides=overrides)
    if not m.ontology_id:
        raise ValueError(f"Tissue {tissue!r} matches no UBERON term ({m.method}, score {m.score}); "
                         "give an UBERON label in the recipe or an override")
    return {"tissue": m.label, "tissue_ontology_id": m.ontology_id,
            "tissue_general": tissue_general(data_dir, m.ontology_id)}, m


@dataclass(frozen=True)
class TermMatch:
    """One free-text value mapped to an ontology term (a row of the reviewable table)."""

    field: str
    original: str
    ontology_id: str     # "" when not accepted
    label: str           # "unknown" when not accepted
    method: str          # override | exact label | exact synonym | fuzzy | unmatched
    score: float         # 100 for override / exact, the token_sort_ratio for fuzzy
    needs_review: bool


def match_term(onto: Ontology, text: str, *, field: str, overrides: dict[str, str] | None = None,
               min_score: float = FUZZY_ACCEPT, review_below: float = FUZZY_REVIEW) -> TermMatch:
    """Map one free-text value to ``onto`` (see the module docstring for the order of rules).

    ``text`` is any value (its ``str`` is matched); ``overrides`` maps original text → an ontology label,
    synonym or ID; it must resolve exactly. Blank text and text longer than :data:`MAX_LABEL_LENGTH`
    characters are returned unmatched (``needs_review``) without fuzzy matching.

    Raises
    ------
    TypeError
        If ``overrides`` is not a mapping.
    ValueError
        If an override names no term of ``onto`` (the message suggests labels).
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides for {field} must be a mapping of original text → ontology label, synonym or ID; "
                        f"got {type(overrides).__name__}")
    original = str(text)
    if overrides and original in overrides:
        target = str(overrides[original])
        term = target if target in onto.labels else onto.resolve(target, what=f"Override for {field} {original!r}")[0]
        return TermMatch(field, original, term, onto.labels[term], "override", 100.0, False)
    key = original.strip().lower()
    if key in onto.lookup:
        term = onto.lookup[key]
        method = "exact label" if onto.labels[term].lower() == key else "exact synonym"
        return TermMatch(field, original, term, onto.labels[term], method, 100.0, False)
    if original.strip() in onto.labels:  # an ontology ID given as the value
        term = original.strip()
        return TermMatch(field, original, term, onto.labels[term], "ontology ID", 100.0, False)
    if not original.strip() or len(original) > MAX_LABEL_LENGTH:
        why = "blank" if not original.strip() else f"longer than {MAX_LABEL_LENGTH} characters, not compared"
        return TermMatch(field, original, "", "unknown", f"unmatched ({why})", 0.0, True)
    hit = onto.fuzzy(original)
    if hit is not None and hit[2] >= min_score:
        return TermMatch(field, original, hit[0], hit[1], "fuzzy", round(hit[2], 1), hit[2] < review_below)
    score = round(hit[2], 1) if hit else 0.0
    return TermMatch(field, original, "", "unknown", "unmatched" + (f" (best: {hit[1]})" if hit else ""), score, True)


def mapping_table(matches: list[TermMatch]) -> pd.DataFrame:
    """The reviewable table (:data:`MAPPING_COLUMNS`) of a list of matches."""
    return pd.DataFrame([m.__dict__ for m in matches], columns=list(MAPPING_COLUMNS))


def resolve_cell_types(data_dir: Path, mapping: dict[str, str], observed: list[str], *,
                       min_score: float = FUZZY_ACCEPT) -> dict[str, TermMatch]:
    """Map each observed cell-type label to the Cell Ontology: the recipe's ``cell_type_map``
    (override) first, then exact label/synonym, then fuzzy matching (:func:`match_term`).

    Returns ``{original label: TermMatch}``; unmatched labels get ``ontology_id = ""`` and label
    ``unknown`` with ``needs_review`` set.

    Raises
    ------
    ValueError
        If a ``mapping`` value is not in the Cell Ontology.
    """
    cl = ontology(data_dir, "CL")
    return {orig: match_term(cl, orig, field="cell_type", overrides=mapping, min_score=min_score) for orig in observed}


def resolve_diseases(data_dir: Path, observed: list[str], *, overrides: dict[str, str] | None = None,
                     categories: tuple[str, ...] | list[str] = DISEASE_CATEGORIES,
                     min_score: float = FUZZY_ACCEPT) -> tuple[dict[str, TermMatch], pd.DataFrame]:
    """Map disease text to MONDO (``normal``/``healthy``/``control`` → PATO:0000461, as CELLxGENE) and
    group each disease under its broader category (:data:`DISEASE_CATEGORIES`, via MONDO ancestors).

    Returns ``({original: TermMatch}, categories table)``; the table has one row per disease with
    ``disease_ontology_id, disease, category_ontology_id, disease_category`` (the disease itself when
    no category is among its ancestors) for review.

    Raises
    ------
    ValueError
        If an override or a category label is not in MONDO.
    """
    mondo = ontology(data_dir, "MONDO")
    category_ids = [mondo.resolve(c, what="Disease category")[0] for c in categories]
    depth = {c: len(mondo.ancestors.get(c, ())) for c in category_ids}
    matches, rows = {}, []
    for orig in observed:
        if str(orig).strip().lower() in {"normal", "healthy", "control", NORMAL_ID.lower()}:
            matches[orig] = TermMatch("disease", orig, NORMAL_ID, "normal", "exact label", 100.0, False)
        elif str(orig).strip().lower() in {"unknown", ""}:
            matches[orig] = TermMatch("disease", orig, "unknown", "unknown", "stated unknown", 100.0, False)
        else:
            matches[orig] = match_term(mondo, orig, field="disease", overrides=overrides, min_score=min_score)
        m = matches[orig]
        if m.ontology_id in ("", NORMAL_ID, "unknown"):
            category = m.ontology_id
        else:
            lineage = {m.ontology_id, *mondo.ancestors.get(m.ontology_id, ())}
            found = [c for c in category_ids if c in lineage]
            category = max(found, key=lambda c: depth[c]) if found else m.ontology_id
        rows.append({"original": orig, "disease_ontology_id": m.ontology_id, "disease": m.label,
                     "category_ontology_id": category,
                     "disease_category": "normal" if category == NORMAL_ID else mondo.labels.get(category, "unknown")})
    return matches, pd.DataFrame(rows)


def normalize_sex(value: object) -> str:
    """Normalise a sex annotation to ``female`` / ``male`` / ``unknown`` (PATO IDs accepted; None, NaN and
    ``pd.NA`` are ``unknown``).

    Raises
    ------
    ValueError
        For a value that is none of the accepted spellings (the message lists them).
    """
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    key = str(value).strip().lower()
    table = {"f": "female", "female": "female", "pato:0000383": "female", "woman": "female",
             "m": "male", "male": "male", "pato:0000384": "male", "man": "male",
             "unknown": "unknown", "na": "unknown", "": "unknown", "nan": "unknown"}
    if key not in table:
        raise ValueError(f"Sex value {value!r} not understood; accepted: {sorted(table)} (case-insensitive)")
    assert table[key] in SEX_VALUES
    return table[key]
