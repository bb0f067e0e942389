"""Metadata harmonisation: cell type → Cell Ontology, disease → MONDO, tissue → UBERON +
``tissue_general``, sex, age in years → development-stage category.

Ontology tables are the TSVs in ``<data>/ontology/`` (columns ``id, label, synonyms, description,
deprecated, ancestors``, converted from ``cellxgene-ontology-guide``); the tissue groupings are
CELLxGENE's ``cxg_tissue_general_list.json``. This first version matches labels exactly (label or
exact synonym, case-insensitive); fuzzy matching is a later step of the build.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .schema import DEVELOPMENT_STAGE_CATEGORIES, SEX_VALUES

NORMAL_ID = "PATO:0000461"  # CELLxGENE's disease term for healthy donors


@dataclass(frozen=True)
class Ontology:
    """One ontology: label and exact-synonym lookup (case-insensitive) and ancestor sets."""

    name: str
    labels: dict[str, str]       # id -> label
    lookup: dict[str, str]       # lower-cased label or synonym -> id (labels win over synonyms)
    ancestors: dict[str, tuple[str, ...]]
    synonyms: dict[str, tuple[str, ...]]  # id -> synonyms in their original case

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


def resolve_tissue(data_dir: Path, tissue: str) -> dict[str, str]:
    """Map a tissue label to UBERON and its CELLxGENE ``tissue_general`` grouping.

    ``tissue_general`` is the tissue itself when it is one of CELLxGENE's general tissues, else the
    first general tissue among its UBERON ancestors, else the tissue label.
    """
    uberon = ontology(data_dir, "UBERON")
    term, label = uberon.resolve(tissue, what="Tissue")
    general_ids = json.loads((Path(data_dir) / "ontology" / "cxg_tissue_general_list.json").read_text())
    general = term if term in general_ids else next(
        (g for g in general_ids if g in set(uberon.ancestors.get(term, ()))), term)
    return {"tissue": label, "tissue_ontology_id": term, "tissue_general": uberon.labels[general]}


def resolve_disease(data_dir: Path, disease: str) -> dict[str, str]:
    """Map a disease label to MONDO (``normal`` → PATO:0000461, as in CELLxGENE)."""
    if str(disease).strip().lower() in {"normal", "healthy", "control"}:
        return {"disease": "normal", "disease_ontology_id": NORMAL_ID}
    term, label = ontology(data_dir, "MONDO").resolve(disease, what="Disease")
    return {"disease": label, "disease_ontology_id": term}


def resolve_cell_types(data_dir: Path, mapping: dict[str, str], observed: list[str]) -> dict[str, tuple[str, str]]:
    """Map each observed cell-type label to ``(Cell Ontology ID, CL label)`` through ``mapping``.

    Raises
    ------
    ValueError
        If an observed label is missing from ``mapping`` (the message lists the missing labels), or
        a mapped label is not in the Cell Ontology.
    """
    missing = sorted(set(observed) - set(mapping))
    if missing:
        raise ValueError(
            f"cell_type_map lacks {len(missing)} cell-type label(s) found in the data: {missing}. "
            f"Mapped labels: {sorted(mapping)}"
        )
    cl = ontology(data_dir, "CL")
    return {orig: cl.resolve(mapping[orig], what="Cell type") for orig in observed}


def normalize_sex(value: object) -> str:
    """Normalise a sex annotation to ``female`` / ``male`` / ``unknown`` (PATO IDs accepted).

    Raises
    ------
    ValueError
        For a value that is none of the accepted spellings.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    key = str(value).strip().lower()
    table = {"f": "female", "female": "female", "pato:0000383": "female", "woman": "female",
             "m": "male", "male": "male", "pato:0000384": "male", "man": "male",
             "unknown": "unknown", "na": "unknown", "": "unknown", "nan": "unknown"}
    if key not in table:
        raise ValueError(f"Sex value {value!r} not understood; accepted: {sorted(table)} (case-insensitive)")
    assert table[key] in SEX_VALUES
    return table[key]


def development_stage(age_years: float | None) -> tuple[str, str]:
    """Return ``(development_stage_category, birth_phase)`` for an age in years (None → unknown).

    Negative ages are prenatal (``birth_phase = "prenatal"``); categories follow
    :data:`dataset_script.schema.DEVELOPMENT_STAGE_CATEGORIES`.
    """
    if age_years is None or (isinstance(age_years, float) and math.isnan(age_years)):
        return "unknown", "unknown"
    category = "unknown"
    for name, lower in DEVELOPMENT_STAGE_CATEGORIES:
        if age_years >= lower:
            category = name
    return category, ("prenatal" if category == "prenatal" else "postnatal")
