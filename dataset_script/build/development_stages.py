"""Free-text development stage → age in years → age group and birth phase.

Accepted spellings (case-insensitive), each with the rule used:

=========================================================  =============================================
input                                                      age in years
=========================================================  =============================================
``45``, ``45 years``, ``45y``, ``45-year-old human stage``  45
``6 months``, ``6-month-old stage``, ``6 mo``              months / 12
``3 weeks``, ``3-week-old``                                weeks × 7 / 365.25 (postnatal)
``10 days``, ``10-day-old``                                days / 365.25
``12 pcw``, ``12 wpf``, ``post-fertilization week 12``,    prenatal: (weeks × 7 − 266) / 365.25, i.e.
``12th week post-fertilization human stage``               negative; birth at 38 weeks post-fertilisation
``gestational week 14``, ``GW14``                          gestational = post-fertilisation + 2 weeks
``third LMP month stage`` (HsapDv)                         gestational month m → (m − ½) × 4.345 weeks
``Carnegie stage 16``, ``CS16``                            days post-fertilisation of the stage (O'Rahilly
                                                           & Müller 1987, as tabulated by the Virtual Human
                                                           Embryo project), prenatal
``fifth decade stage``, ``40s``                            midpoint of the decade (45)
``20-29 year-old``, ``child stage (1-4 yo)``               midpoint of the range
``80 year-old and over stage``                             80
HsapDv IDs (``HsapDv:0000134``)                            parsed from the term's label
stage words (``newborn``, ``adolescent stage`` …)          no age; the group is taken from the word
=========================================================  =============================================

Age groups are :data:`dataset_script.schema.DEVELOPMENT_STAGE_CATEGORIES` (HsapDv / CELLxGENE
practice). Prenatal stages are ``prenatal`` with ``birth_phase = "prenatal"`` — never ``newborn`` or
``infant``, which the original OmniCellTOSG pipeline assigned them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dataset_script.schema import DEVELOPMENT_STAGE_CATEGORIES

DAYS_PER_YEAR = 365.25
BIRTH_DAYS_POST_FERTILISATION = 266  # 38 weeks

#: Carnegie stage → approximate days post-fertilisation (O'Rahilly & Müller 1987).
CARNEGIE_DAYS = {1: 1, 2: 2.5, 3: 4.5, 4: 5.5, 5: 9.5, 6: 13, 7: 16, 8: 18, 9: 20, 10: 22, 11: 24, 12: 26, 13: 28,
                 14: 32, 15: 33, 16: 37, 17: 41, 18: 44, 19: 47.5, 20: 50.5, 21: 52, 22: 54, 23: 56.5}

_ORDINALS = {w: i for i, w in enumerate(
    ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh"], 1)}
_DECADE_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                 "eighties": 80, "nineties": 90}

#: Stage words without a number → age group (checked after every numeric rule).
_STAGE_WORDS = (
    ("centenarian", "80 and over"), ("middle aged", "middle aged"), ("middle-aged", "middle aged"),
    ("late adult", "aged"), ("aged", "aged"), ("elderly", "aged"),
    ("young adult", "young adult"), ("prime adult", "adult"), ("early adulthood", "adult"), ("adult", "adult"),
    ("mature", "adult"), ("adolescen", "adolescent"), ("teen", "adolescent"), ("juvenile", "child"),
    ("child", "child"), ("preschool", "preschool child"), ("toddler", "preschool child"), ("infant", "infant"),
    ("nursing", "infant"), ("newborn", "newborn"), ("neonat", "newborn"),
    ("embryo", "prenatal"), ("fetal", "prenatal"), ("foetal", "prenatal"), ("fetus", "prenatal"),
    ("prenatal", "prenatal"), ("cleavage", "prenatal"), ("blastula", "prenatal"), ("morula", "prenatal"),
    ("gastrula", "prenatal"), ("neurula", "prenatal"), ("organogenesis", "prenatal"),
)
_PRENATAL_RULES = ("Carnegie stage", "weeks post-fertilisation", "gestational weeks (post-fertilisation + 2)",
                   "gestational (LMP) month")
_UNKNOWN = {"", "unknown", "na", "n/a", "nan", "none", "not reported", "not available", "unspecified"}


@dataclass(frozen=True)
class Stage:
    """One parsed development stage.

    Attributes:
        age_years: age in years (negative before birth; NaN when the text gives no age).
        category: age group (:data:`~dataset_script.schema.DEVELOPMENT_STAGE_CATEGORIES` or ``unknown``).
        birth_phase: ``prenatal`` / ``postnatal`` / ``unknown``.
        rule: which rule matched (for the reviewable table), ``unparsed`` when none did.
    """

    age_years: float
    category: str
    birth_phase: str
    rule: str


def age_group(age_years: float) -> tuple[str, str]:
    """``(category, birth_phase)`` of an age in years (negative = prenatal; NaN → unknown)."""
    if age_years is None or (isinstance(age_years, float) and math.isnan(age_years)):
        return "unknown", "unknown"
    category = "unknown"
    for name, lower in DEVELOPMENT_STAGE_CATEGORIES:
        if age_years >= lower:
            category = name
    return category, ("prenatal" if category == "prenatal" else "postnatal")


def _prenatal_weeks(weeks_post_fertilisation: float) -> float:
    return (weeks_post_fertilisation * 7 - BIRTH_DAYS_POST_FERTILISATION) / DAYS_PER_YEAR


def _age(text: str) -> tuple[float, str] | None:
    """(age in years, rule) for the numeric spellings, or None."""
    t = text
    num = r"(\d+(?:\.\d+)?)"
    m = re.fullmatch(num, t)
    if m:
        return float(m[1]), "number = years"
    m = re.search(r"carnegie stage\s*0?(\d+)|\bcs\s*0?(\d+)\b", t)
    if m:
        stage = int(m[1] or m[2])
        if stage in CARNEGIE_DAYS:
            return (CARNEGIE_DAYS[stage] - BIRTH_DAYS_POST_FERTILISATION) / DAYS_PER_YEAR, "Carnegie stage"
    m = re.search(num + r"\s*(?:st|nd|rd|th)?[\s-]*(?:week|wk)s?[\s-]*post[\s-]*fertili[sz]ation", t) or \
        re.search(r"post[\s-]*fertili[sz]ation[\s-]*weeks?\s*" + num, t) or \
        re.search(num + r"\s*(?:pcw|wpf|weeks? pcw)\b", t)
    if m:
        return _prenatal_weeks(float(m[1])), "weeks post-fertilisation"
    m = re.search(r"(?:gestational[\s-]*weeks?|\bgw)\s*" + num, t) or re.search(num + r"\s*(?:gestational weeks?|gw)\b", t)
    if m:
        return _prenatal_weeks(float(m[1]) - 2), "gestational weeks (post-fertilisation + 2)"
    m = re.search(r"(\w+) lmp month", t)
    if m and m[1] in _ORDINALS:
        return _prenatal_weeks((_ORDINALS[m[1]] - 0.5) * 4.345 - 2), "gestational (LMP) month"
    m = re.search(r"(\w+) decade", t)
    if m and m[1] in _ORDINALS:
        return (_ORDINALS[m[1]] - 1) * 10 + 5.0, "decade midpoint"
    m = re.fullmatch(r"(\d0)s", t) or re.fullmatch(r"(" + "|".join(_DECADE_WORDS) + ")", t)
    if m:
        start = _DECADE_WORDS.get(m[1]) or int(m[1])
        return start + 5.0, "decade midpoint"
    m = re.search(num + r"\s*(?:years?|yrs?|y)?[\s-]*(?:year-old\s*)?and over|" + num + r"\s*\+", t)
    if m:
        return float(m[1] or m[2]), "open range: lower bound"
    m = re.search(num + r"\s*(?:-|to|–)\s*" + num + r"[\s-]*(days?|weeks?|months?|years?|yrs?|yo|y)?\b", t)
    if m:
        unit = (m[3] or "y")[0]
        per_year = {"d": DAYS_PER_YEAR, "w": DAYS_PER_YEAR / 7, "m": 12.0}.get(unit, 1.0)
        return (float(m[1]) + float(m[2])) / 2 / per_year, "range midpoint"
    m = re.search(r"under[\s-]*1[\s-]*year", t)
    if m:
        return 0.5, "under 1 year: midpoint"
    for unit, per_year, rule in (("years?|yrs?|y|year-old|yo", 1.0, "years"), ("months?|mo|month-old", 12.0, "months"),
                                 ("weeks?|wks?|week-old", DAYS_PER_YEAR / 7, "weeks after birth"),
                                 ("days?|d|day-old", DAYS_PER_YEAR, "days after birth")):
        m = re.search(num + r"[\s-]*(?:" + unit + r")\b", t)
        if m:
            return float(m[1]) / per_year, rule
    return None


def parse_development_stage(value: object, hsapdv_labels: dict[str, str] | None = None) -> Stage:
    """Parse one development-stage annotation (see the module docstring for the spellings).

    Parameters
    ----------
    value
        Free text, a number of years, or an HsapDv ID (needs ``hsapdv_labels``, ID → label).

    Returns
    -------
    :class:`Stage`; ``rule = "unparsed"`` (category ``unknown``) when nothing matched — such values
    belong in the reviewable table, never silently in a group.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Stage(float("nan"), "unknown", "unknown", "missing")
    if isinstance(value, (int, float)):
        return Stage(float(value), *age_group(float(value)), "number = years")
    text = str(value).strip()
    if text.lower().startswith("hsapdv:"):
        label = (hsapdv_labels or {}).get(text.replace("hsapdv", "HsapDv").replace("HSAPDV", "HsapDv"))
        if label is None:
            return Stage(float("nan"), "unknown", "unknown", "unknown HsapDv ID")
        inner = parse_development_stage(label)
        return Stage(inner.age_years, inner.category, inner.birth_phase, f"HsapDv label: {inner.rule}")
    t = re.sub(r"\s+", " ", text.lower().replace("_", " "))
    if t in _UNKNOWN:
        return Stage(float("nan"), "unknown", "unknown", "missing")
    hit = _age(t)
    if hit is not None:
        age, rule = hit
        if rule in _PRENATAL_RULES:  # before birth by definition, even "38th week … and over"
            return Stage(min(age, -1 / DAYS_PER_YEAR), "prenatal", "prenatal", rule)
        return Stage(age, *age_group(age), rule)
    for word, category in _STAGE_WORDS:
        if word in t:
            return Stage(float("nan"), category, "prenatal" if category == "prenatal" else "postnatal",
                         f"stage word {word!r}")
    return Stage(float("nan"), "unknown", "unknown", "unparsed")


__all__ = ["Stage", "age_group", "parse_development_stage", "CARNEGIE_DAYS"]
