"""The recipe reference (``docs/recipe.md``), generated from the typed recipe so it cannot drift.

Every section class of :mod:`dataset_script.build.recipe` becomes one table: key, type, default and
the field's ``#:`` comment (the Sphinx autodoc convention the recipe module uses); the accepted values
of a ``_one_of(NAME)`` check are read from ``NAME`` itself. ``tests/test_recipe_inputs.py`` checks
that ``docs/recipe.md`` equals :func:`recipe_reference`. Regenerate with::

    python -m dataset_script.build.recipe_docs > docs/recipe.md
"""

from __future__ import annotations

import inspect
import re
import sys

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dataset_script.build import recipe as recipe_module
from dataset_script.schema import CONSTANT_COLUMNS, MAPPABLE_COLUMNS

#: (YAML location, section class) in the order a recipe is read.
SECTIONS = (("top level", recipe_module.Recipe), ("knowledge:", recipe_module.KnowledgeSettings),
            ("metacells:", recipe_module.MetacellSettings), ("datasets: (each entry)", recipe_module.DatasetEntry),
            ("datasets[].cell_type_annotation:", recipe_module.CellTypeAnnotation))

_FIELD = re.compile(r"^    (?P<name>\w+): (?P<annotation>.+?)(?: = .*)?$")
_ONE_OF = re.compile(r"_one_of\((?:tuple\()?(?P<name>[A-Z_]+)\)?\)")


def _comments(cls: type[BaseModel]) -> dict[str, tuple[str, str]]:
    """``{field: (its #: comment, its annotation as written)}`` from the class source."""
    out, pending = {}, []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = _FIELD.match(line)
        if m and m["name"] in cls.model_fields:
            out[m["name"]] = (" ".join(pending), m["annotation"])
        pending = []
    return out


def _type(annotation: str) -> str:
    """A reader's type name of a field annotation, with accepted values where the recipe lists them."""
    if "_ppi_sources" in annotation:
        from dataset_script.build.knowledge import PPI_SOURCES

        return "one of " + ", ".join(f"`{v}`" for v in sorted(PPI_SOURCES)) + ", or a list of them"
    one_of = _ONE_OF.search(annotation)
    if one_of:
        values = getattr(recipe_module, one_of["name"])
        return "one of " + ", ".join(f"`{v}`" for v in values)
    simple = {"CellsPerMetacell": "integer ≥ 1", "Fraction": "number in [0, 1]", "NonEmptyText": "text",
              "SafeName": "safe name (letters, digits, `.`, `_`, `-`)", "LabelMap": "map: text → text",
              "Text": "text", "str": "text", "bool": "true / false", "int": "integer"}
    for key, name in simple.items():
        annotation = re.sub(rf"\b{key}\b", name, annotation)
    annotation = re.sub(r"Annotated\[(.+?), (?:Field|BeforeValidator|PlainValidator)\(.*\)\]", r"\1", annotation)
    annotation = annotation.replace(" | None", " (optional)").replace(" | ", " or ")
    return annotation.replace("dict[", "map[").replace("list[", "list of [")


def _markdown(text: str) -> str:
    """reST roles and literals of the recipe's comments as Markdown: ``:data:`~a.b.NAME``` → `NAME`."""
    text = re.sub(r":\w+:`~?([\w.]+)`", lambda m: f"`{m[1].split('.')[-1]}`", text)
    return text.replace("``", "`").replace("|", "\\|")


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    value = field.default
    if value is PydanticUndefined or value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if value in ({}, []):
        return "empty"
    return str(value)


def recipe_reference() -> str:
    """The recipe reference as Markdown: one table per section (key | type | default | meaning)."""
    lines = ["# Build recipe reference", "",
             "Generated from `dataset_script/build/recipe.py` by `python -m dataset_script.build.recipe_docs` "
             "(do not edit by hand; a test keeps this file equal to the code). A recipe is YAML; an unknown "
             "key, a value of the wrong type or out of range is an error that names the key and what is accepted. "
             "Example: `build/demo.yaml`.", ""]
    for where, cls in SECTIONS:
        doc = _markdown(" ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split()))
        lines += [f"## `{where}` — {cls.__name__}", "", doc, "", "| key | type | default | meaning |",
                  "|---|---|---|---|"]
        notes = _comments(cls)
        for name, field in cls.model_fields.items():
            comment, annotation = notes.get(name, ("", str(field.annotation)))
            lines.append(f"| `{field.alias or name}` | {_type(annotation)} | {_default(field)} | {_markdown(comment)} |")
        lines.append("")
    lines += ["## Schema columns", "",
              "`columns` may map: " + ", ".join(f"`{c}`" for c in MAPPABLE_COLUMNS) + ".", "",
              "`constants` may set: " + ", ".join(f"`{c}`" for c in CONSTANT_COLUMNS) + ". A constant `cell_type` "
              "(a sorted or cultured population) is mapped to the Cell Ontology like a column value: a CL label, "
              "synonym or `CL:` ID; one that matches no term is an error.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(recipe_reference())
