"""Free-text development stage → age in years → age group and birth phase.

:func:`parse_development_stage` reads the spellings of GEO ``characteristics_ch1`` age fields,
ArrayExpress / BioSample ``age`` and ``developmental stage`` values and CELLxGENE ``development_stage``
labels (HsapDv). ``tests/data/development_stage_spellings.tsv`` lists real spellings, each with the
dataset or ontology term it comes from, and the category and age each must give.

The text is lower-cased, ``_`` and runs of white space become one space, en/em dashes become ``-``,
and a leading field name (``age:``, ``age (years):``, ``developmental stage:`` …) is dropped. Then the
first rule that matches, in this order, decides:

=============================================================  ================================================
input (examples)                                                age in years (rule)
=============================================================  ================================================
HsapDv IDs (``HsapDv:0000134``, ``HsapDv_0000134``)             parsed from the term's label (needs the labels)
``unknown``, ``NA``, ``not collected``, ``-`` …                 none; ``unknown`` (``missing``)
``Carnegie stage 16``, ``CS16``, ``CS05a``,                     days post-fertilisation of the stage (O'Rahilly
``Carnegie Stages 9 to 14``                                     & Müller 1987, as tabulated by the Virtual Human
                                                                Embryo project; a range: the mean of its ends;
                                                                "Carnegie stage" beyond 23: prenatal, no age)
**prenatal context** — the text holds a prenatal marker:        prenatal, always (see below)
``pcw``, ``wpc``, ``wpf``, ``dpc``, ``post-conception``,
``post-fertilization``, ``embryonic day``, ``fetal day``
(post-fertilisation age); ``gestation(al)``, ``GW``, ``GA``,
``GD``, ``LMP`` (gestational age = post-fertilisation + 2
weeks); ``fetal``/``foetal``/``fetus``, ``embryo…``,
``prenatal``, ``antenatal``, ``in utero``, ``trimester``
(taken as gestational age, the obstetric convention)
  ``12 pcw``, ``13 weeks post-conception``, ``Wpc13``,          weeks (or days / months, when spelled) of the
  ``12th week post-fertilization human stage``,                 marker's clock → days post-fertilisation →
  ``GW14``, ``gestational week 14``, ``17 weeks gestation``,    (days − 266) / 365.25; a range: its midpoint.
  ``ga22``, ``17-18 GW``, ``prenatal 16-18 W``,                 A number without a unit counts weeks (days
  ``fetal day 52``, ``GD 20-32``                                after ``day``/``GD``/``dpc``); ``W`` means weeks
  ``third LMP month stage`` (HsapDv)                            gestational month m → (m − ½) × 4.345 weeks
  ``fetal stage``, ``Third trimester``, ``prenatal``            no age; ``prenatal``
``45``, ``45.5``                                                that many years
``fifth decade stage``, ``40s``, ``forties``                    midpoint of the decade (45)
``65+``, ``80 year-old and over stage``, ``>65``, ``≥ 65``,     the lower bound
``over 65``, ``65 or older``
``under-1-year-old stage``, ``<1 year``                         0.5
``20-29 year-old``, ``60-69``, ``child stage (1-4 yo)``,        midpoint of the range (unit as spelled after
``newborn stage (0-28 days)``, ``Birth-5 months``               the range; none = years; ``birth`` = 0)
``postnatal day 8``, ``PND 8``                                  days / 365.25
``45 years``, ``45y``, ``45Y``, ``45 yrs``, ``45 yo``,          45
``postnatal 47 years``, ``3yr``, ``45-year-old human stage``
``6 months``, ``6 mo``, ``6-month-old stage``                   months / 12
``3 weeks``, ``3 wk``, ``3-week-old``                           weeks × 7 / 365.25 (after birth: no marker)
``10 days``, ``2d``, ``10-day-old``                             days / 365.25
stage words (``newborn``, ``adolescent stage``, ``adult``,      no age; the group is taken from the word
``human aged stage``, ``Late infancy``, ``Early childhood``      (matched at the start of a word, so
…); ``postnatal``, ``pediatric``, ``immature``                  ``premature`` is not ``mature``); ``unknown``
                                                                group, ``postnatal`` phase
=============================================================  ================================================

Refused (``rule = "unparsed"``, category ``unknown``, flagged for review by the build): text longer than
:data:`MAX_TEXT_LENGTH` characters; numbers in scientific notation or with a minus sign (ages before
birth are spelled with prenatal units); ages above :data:`MAX_AGE_YEARS` (e.g. a birth year such as
``1990``); a post-fertilisation age beyond :data:`MAX_WEEKS_POST_FERTILISATION` weeks; a prenatal
marker next to an age in years (contradictory); bare ``W``/``w`` weeks without a prenatal marker
(``4w`` is gestational in some tables, postnatal in others); mouse-style ``E14.5`` and ``P3`` (``P3``
is also a passage number) — give such values a ``development_stage_map`` entry in the recipe instead.

Age groups are :data:`dataset_script.schema.DEVELOPMENT_STAGE_CATEGORIES` (HsapDv / CELLxGENE
practice). A prenatal age is ``prenatal`` with ``birth_phase = "prenatal"`` and an age below zero
(at most one day before birth) — never ``newborn`` or ``infant``, which the original OmniCellTOSG
pipeline assigned such stages.

Sources: HsapDv (human developmental stages ontology, as shipped with ``cellxgene-ontology-guide``);
Carnegie stage days: O'Rahilly R, Müller F (1987) Developmental stages in human embryos, Carnegie
Institution publ. 637; gestational vs post-fertilisation age: the ACOG / AAP definition (gestational age
counts from the first day of the last menstrual period, two weeks before fertilisation).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from dataset_script.schema import DEVELOPMENT_STAGE_CATEGORIES

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12
BIRTH_DAYS_POST_FERTILISATION = 266  # 38 weeks
#: Gestational (LMP) age runs this many days ahead of the post-fertilisation age.
GESTATIONAL_OFFSET_DAYS = 14
#: Longer text is not a development stage (and is not scanned): ``unparsed``.
MAX_TEXT_LENGTH = 200
#: Older ages are refused as implausible (the oldest verified human lived 122 years).
MAX_AGE_YEARS = 125.0
#: A later post-fertilisation age is refused as implausible (42 weeks of gestation is post-term).
MAX_WEEKS_POST_FERTILISATION = 44.0
#: The earliest age there is: fertilisation (prenatal ages are clamped to it).
EARLIEST_AGE_YEARS = -BIRTH_DAYS_POST_FERTILISATION / DAYS_PER_YEAR

#: Carnegie stage → approximate days post-fertilisation (O'Rahilly & Müller 1987).
CARNEGIE_DAYS = {1: 1, 2: 2.5, 3: 4.5, 4: 5.5, 5: 9.5, 6: 13, 7: 16, 8: 18, 9: 20, 10: 22, 11: 24, 12: 26, 13: 28,
                 14: 32, 15: 33, 16: 37, 17: 41, 18: 44, 19: 47.5, 20: 50.5, 21: 52, 22: 54, 23: 56.5}

_ORDINALS = {w: i for i, w in enumerate(
    ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh"], 1)}
_DECADE_WORDS = {"twenties": 20, "thirties": 30, "forties": 40, "fifties": 50, "sixties": 60, "seventies": 70,
                 "eighties": 80, "nineties": 90}

#: Stage words without a number → age group (``unknown`` group: postnatal phase), checked after every
#: numeric rule, each at the start of a word, in this order. HsapDv's "late adulthood" (45+ years) and
#: "late adult" (60+ years) get the group of their lower bound, as their "45+ years" / "60+ years"
#: synonyms do.
_STAGE_WORDS = (
    ("centenarian", "80 and over"), ("middle aged", "middle aged"), ("middle-aged", "middle aged"),
    ("late adult", "middle aged"), ("aged", "aged"), ("elderly", "aged"),
    ("young adult", "young adult"), ("prime adult", "adult"), ("early adulthood", "adult"), ("adult", "adult"),
    ("mature", "adult"), ("adolescen", "adolescent"), ("teen", "adolescent"), ("juvenile", "child"),
    ("early childhood", "preschool child"), ("child", "child"), ("preschool", "preschool child"),
    ("toddler", "preschool child"), ("infant", "infant"), ("infancy", "infant"),
    ("nursing", "infant"), ("newborn", "newborn"), ("new born", "newborn"), ("neonat", "newborn"),
    ("immature", "unknown"), ("pediatric", "unknown"), ("paediatric", "unknown"), ("postnatal", "unknown"),
    ("post-natal", "unknown"),
    ("embryo", "prenatal"), ("fetal", "prenatal"), ("foetal", "prenatal"), ("fetus", "prenatal"),
    ("prenatal", "prenatal"), ("cleavage", "prenatal"), ("blastula", "prenatal"), ("morula", "prenatal"),
    ("gastrula", "prenatal"), ("neurula", "prenatal"), ("organogenesis", "prenatal"),
)
_UNKNOWN = {"", "unknown", "na", "n/a", "n.a.", "nan", "none", "not reported", "not available", "unspecified",
            "not specified", "not collected", "not applicable", "missing", "unk", "-", "--", "?", "nd", "not determined"}

# --- the prenatal markers (see the module docstring) ---
_W = r"(?<![a-z])"   # start of a word (a digit may precede: "12pcw")
_E = r"(?![a-z])"    # end of a word (a digit may follow: "gw13")
_POST_FERTILISATION = re.compile(
    _W + r"(?:pcw|wpc|wpf|dpc|pcd|post[\s-]*concep\w*|post[\s-]*fertili[sz]\w*|conceptional|embryonic day|"
    r"fetal day|foetal day|days? post[\s-]*coitum)" + _E)
_GESTATIONAL = re.compile(_W + r"(?:gestation\w*|gw|ga|gd|lmp|menstrual)" + _E)
_GENERIC_PRENATAL = re.compile(_W + r"(?:fetal|foetal|fetus|foetus|embryo\w*|prenatal|antenatal|in utero|trimester)"
                               + _E)

_NUM = r"(?<![\d.])(\d+(?:\.\d+)?)"
#: A number (or range) and its unit in prenatal text: "12", "16-18 w", "19.7 weeks", "12th week", "52 days".
_PRENATAL_QUANTITY = re.compile(
    _NUM + r"(?:\s*(?:-|to)\s*(\d+(?:\.\d+)?))?\s*(?:st|nd|rd|th)?[\s-]*"
    r"(days?|d|weeks?|wks?|wk|w|months?|mos?|years?|yrs?|y)?(?=[^a-z]|$|(?:pcw|wpc|wpf|dpc|pcd|gw|ga|gd)" + _E + ")")
_DAY_CONTEXT = re.compile(_W + r"(?:days?|gd|dpc|pcd)" + _E)
_MONTH_CONTEXT = re.compile(_W + r"months?" + _E)
_PREFIX = re.compile(r"^(?:donor\s+)?(?:age|developmental stage|development stage|dev stage|life stage)"
                     r"\s*(?:\([^)]*\))?\s*[:=]\s*|^(?:donor\s+)?aged?\s+(?=\d)")


@dataclass(frozen=True)
class Stage:
    """One parsed development stage.

    Attributes:
        age_years: age in years (negative before birth; NaN when the text gives no age).
        category: age group (:data:`~dataset_script.schema.DEVELOPMENT_STAGE_CATEGORIES` or ``unknown``).
        birth_phase: ``prenatal`` / ``postnatal`` / ``unknown``.
        rule: which rule matched (for the reviewable table), ``unparsed`` when none did or the value
            was refused, ``missing`` for a stated unknown.
    """

    age_years: float
    category: str
    birth_phase: str
    rule: str


_UNPARSED = Stage(float("nan"), "unknown", "unknown", "unparsed")
_MISSING = Stage(float("nan"), "unknown", "unknown", "missing")


def age_group(age_years: float) -> tuple[str, str]:
    """``(category, birth_phase)`` of an age in years (negative = prenatal; NaN → unknown)."""
    if age_years is None or (isinstance(age_years, float) and math.isnan(age_years)):
        return "unknown", "unknown"
    category = "unknown"
    for name, lower in DEVELOPMENT_STAGE_CATEGORIES:
        if age_years >= lower:
            category = name
    return category, ("prenatal" if category == "prenatal" else "postnatal")


def _prenatal_age(days_post_fertilisation: float) -> float | None:
    """Age in years of a post-fertilisation age in days: clamped to [fertilisation, one day before
    birth]; None beyond :data:`MAX_WEEKS_POST_FERTILISATION`."""
    if days_post_fertilisation > MAX_WEEKS_POST_FERTILISATION * 7:
        return None
    days = max(days_post_fertilisation, 0.0)
    return min((days - BIRTH_DAYS_POST_FERTILISATION) / DAYS_PER_YEAR, -1 / DAYS_PER_YEAR)


def _carnegie(t: str) -> Stage | None:
    """A Carnegie stage (or a range of them); "Carnegie stage" with a number outside 1-23 is prenatal
    without an age; None when the text names no Carnegie stage."""
    m = re.search(r"(?:carnegie stages?\s*|" + _W + r"cs\s*)0?(\d+)[a-z]?(?:\s*(?:-|to)\s*(?:cs\s*)?0?(\d+)[a-z]?)?"
                  + _E, t)
    if not m:
        return None
    stages = [int(s) for s in (m[1], m[2]) if s is not None]
    if not all(s in CARNEGIE_DAYS for s in stages):
        if "carnegie" in t:
            return Stage(float("nan"), "prenatal", "prenatal", "Carnegie stage outside 1-23, no age")
        return None
    days = sum(CARNEGIE_DAYS[s] for s in stages) / len(stages)
    return Stage(_prenatal_age(days), "prenatal", "prenatal", "Carnegie stage")


def _prenatal(t: str) -> Stage | None:
    """The prenatal-context rules; None when the text holds no prenatal marker."""
    if _POST_FERTILISATION.search(t):
        clock, offset = "post-fertilisation", 0.0
    elif _GESTATIONAL.search(t):
        clock, offset = "gestational", GESTATIONAL_OFFSET_DAYS
    elif _GENERIC_PRENATAL.search(t):
        clock, offset = "gestational (prenatal word)", GESTATIONAL_OFFSET_DAYS
    else:
        return None
    m = re.search(r"(\w+) lmp month", t)
    if m and m[1] in _ORDINALS:
        weeks = (_ORDINALS[m[1]] - 0.5) * 4.345
        age = _prenatal_age(weeks * 7 - GESTATIONAL_OFFSET_DAYS)
        return Stage(age, "prenatal", "prenatal", "gestational (LMP) month") if age is not None else _UNPARSED
    q = _PRENATAL_QUANTITY.search(t)
    if q is None:
        return Stage(float("nan"), "prenatal", "prenatal", f"prenatal word ({clock} marker), no age")
    value = (float(q[1]) + float(q[2])) / 2 if q[2] else float(q[1])
    unit = q[3] or ("d" if _DAY_CONTEXT.search(t) else "m" if _MONTH_CONTEXT.search(t) else "w")
    if unit[0] == "y":  # an age in years next to a prenatal marker: contradictory
        return _UNPARSED
    days = value * {"d": 1.0, "w": 7.0, "m": DAYS_PER_MONTH}[unit[0]]
    age = _prenatal_age(days - offset)
    if age is None:
        return _UNPARSED
    what = {"d": "days", "w": "weeks", "m": "months"}[unit[0]]
    return Stage(age, "prenatal", "prenatal", f"{clock} {what}" + (" (range midpoint)" if q[2] else ""))


def _postnatal(t: str) -> tuple[float, str] | None:
    """(age in years, rule) for the numeric spellings without a prenatal marker, or None."""
    m = re.fullmatch(_NUM, t)
    if m:
        return float(m[1]), "number = years"
    m = re.search(r"(\w+) decade", t)
    if m and m[1] in _ORDINALS:
        return (_ORDINALS[m[1]] - 1) * 10 + 5.0, "decade midpoint"
    m = re.fullmatch(r"(\d0)'?s", t) or re.fullmatch(r"(" + "|".join(_DECADE_WORDS) + ")", t)
    if m:
        start = _DECADE_WORDS.get(m[1]) or int(m[1])
        return start + 5.0, "decade midpoint"
    m = re.search(r"under[\s-]*1[\s-]*year|<\s*1(?:\s*(?:years?|yrs?|y))?" + _E, t)
    if m:
        return 0.5, "under 1 year: midpoint"
    m = (re.search(_NUM + r"\s*(?:years?|yrs?|y)?[\s-]*(?:year-old\s*)?(?:and|or)\s*(?:over|older|above)", t)
         or re.search(_NUM + r"\s*\+", t) or re.search(r"(?:>=?|≥|over|above)\s*" + _NUM, t))
    if m:
        return float(m[1]), "open range: lower bound"
    m = re.search(_NUM + r"\s*(?:-|to)\s*" + _NUM + r"[\s-]*(days?|weeks?|months?|years?|yrs?|yo|y)?" + _E, t)
    if m:
        unit = (m[3] or "y")[0]
        per_year = {"d": DAYS_PER_YEAR, "w": DAYS_PER_YEAR / 7, "m": 12.0}.get(unit, 1.0)
        return (float(m[1]) + float(m[2])) / 2 / per_year, "range midpoint"
    m = re.search(r"(?:postnatal day|" + _W + r"pnd)\s*" + _NUM, t) or re.search(r"day\s*" + _NUM + r"\s*postnatal", t)
    if m:
        return float(m[1]) / DAYS_PER_YEAR, "postnatal days"
    for unit, per_year, rule in (("years?|yrs?|y|year-old|yo", 1.0, "years"),
                                 ("months?|mos?|month-old", 12.0, "months"),
                                 ("weeks?|wks?|week-old", DAYS_PER_YEAR / 7, "weeks after birth"),
                                 ("days?|d|day-old", DAYS_PER_YEAR, "days after birth")):
        m = re.search(_NUM + r"[\s-]*(?:" + unit + r")" + _E, t)
        if m:
            return float(m[1]) / per_year, rule
    return None


def _normalised(text: str) -> str:
    t = text.lower().replace("_", " ").replace("–", "-").replace("—", "-").replace("−", "-")
    t = re.sub(r"\s+", " ", t).strip()
    t = re.sub(r"(?<![a-z])birth\s*(?=-|to(?![a-z]))", "0 ", t)  # "Birth-5 months" = "0-5 months"
    return _PREFIX.sub("", t).strip()


def _refused(t: str) -> bool:
    """Scientific notation, a minus sign before a number, ``E14.5`` / ``P3``."""
    return bool(re.search(r"\d\s*e[+-]?\d", t) or re.search(r"(?:^|[(,;:])\s*-\s*\d", t)
                or re.fullmatch(r"[ep]\d+(?:\.\d+)?", t))


def _hsapdv(text: str, hsapdv_labels: dict[str, str] | None) -> Stage:
    term = "HsapDv:" + text[len("hsapdv:"):]
    label = (hsapdv_labels or {}).get(term)
    if label is None:
        return Stage(float("nan"), "unknown", "unknown", "unknown HsapDv ID")
    inner = parse_development_stage(label)
    return Stage(inner.age_years, inner.category, inner.birth_phase, f"HsapDv label: {inner.rule}")


def parse_development_stage(value: object, hsapdv_labels: dict[str, str] | None = None) -> Stage:
    """Parse one development-stage annotation (see the module docstring for the spellings and rules).

    Parameters
    ----------
    value
        Free text, a number of years (int / float; negative = before birth), an HsapDv ID (needs
        ``hsapdv_labels``), or anything else (its ``str``). None / NaN = missing.
    hsapdv_labels
        HsapDv ID → label (``harmonize.ontology(data_dir, "HsapDv").labels``).

    Returns
    -------
    :class:`Stage`; never raises. ``rule = "unparsed"`` (category ``unknown``) when nothing matched or
    the value was refused — such values belong in the reviewable table, never silently in a group.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _MISSING
    if isinstance(value, bool):
        return _UNPARSED
    if isinstance(value, (int, float)):
        years = float(value)
        if not math.isfinite(years) or not EARLIEST_AGE_YEARS <= years <= MAX_AGE_YEARS:
            return _UNPARSED
        return Stage(years, *age_group(years), "number = years")
    text = str(value).strip()
    if len(text) > MAX_TEXT_LENGTH:
        return _UNPARSED
    if re.match(r"hsapdv[:_]", text.lower()):
        return _hsapdv(text.lower(), hsapdv_labels)
    t = _normalised(text)
    if t in _UNKNOWN:
        return _MISSING
    if _refused(t):
        return _UNPARSED
    carnegie = _carnegie(t)
    if carnegie is not None:
        return carnegie
    prenatal = _prenatal(t)
    if prenatal is not None:
        return prenatal
    if re.search(r"\d\s*w" + _E, t):  # bare "w" weeks without a prenatal marker: which clock is unknown
        return _UNPARSED
    hit = _postnatal(t)
    if hit is not None:
        age, rule = hit
        if not 0 <= age <= MAX_AGE_YEARS:
            return _UNPARSED
        return Stage(age, *age_group(age), rule)
    for word, category in _STAGE_WORDS:
        if re.search(_W + re.escape(word), t):
            phase = "prenatal" if category == "prenatal" else "postnatal"
            return Stage(float("nan"), category, phase, f"stage word {word!r}")
    return _UNPARSED


__all__ = ["CARNEGIE_DAYS", "MAX_AGE_YEARS", "MAX_TEXT_LENGTH", "Stage", "age_group", "parse_development_stage"]
