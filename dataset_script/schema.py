"""Every column name, dtype and vocabulary of the OmniCellTOSG dataset, in one place.

The contract is ARCHITECTURE.md §4. Cell rows are meta-cells (one row per meta-cell); expression is
stored sparsely on transcript nodes as summed raw counts (or, for inputs that are not counts, the
mean of the input values, with ``values_are_counts = False``).
"""

from __future__ import annotations

import pyarrow as pa

#: Obs columns that every ingested AnnData carries after :func:`dataset_script.build.ingest.read_dataset`.
OBS_COLUMNS = (
    "dataset_id", "source", "donor_id", "sample_id", "tissue_general", "tissue",
    "tissue_ontology_id", "disease", "disease_ontology_id", "disease_category", "condition", "cell_type",
    "cell_type_ontology_id", "cell_type_original", "cell_type_source", "cell_type_confidence", "sex", "age_years",
    "development_stage_category", "birth_phase", "assay", "suspension_type",
)

#: Columns a recipe may map from a file's obs (everything else comes from constants or ontologies).
MAPPABLE_COLUMNS = ("donor_id", "sample_id", "condition", "cell_type", "sex", "age", "development_stage",
                    "tissue", "disease", "assay", "suspension_type")

#: Columns a recipe may set as constants for a whole file (``cell_type``: a sorted or cultured population,
#: mapped to the Cell Ontology like a column value; a CL label, synonym or ``CL:`` ID).
CONSTANT_COLUMNS = ("cell_type", "tissue", "disease", "condition", "assay", "suspension_type", "sex", "age",
                    "development_stage")

#: Metadata that defines a meta-cell partition: meta-cells never mix these (ARCHITECTURE.md §3).
PARTITION_KEYS = ("dataset_id", "donor_id", "sample_id", "condition")

#: Metadata columns decided by majority vote inside each meta-cell.
VOTED_COLUMNS = ("cell_type", "cell_type_ontology_id", "cell_type_original")

SEX_VALUES = ("female", "male", "unknown")

#: Largest value a log-scale expression matrix can hold: log2(1e6 + 1) ≈ 19.93 (TPM on a log2 scale;
#: log1p of counts per 10k stays below 9.3). Non-count values above it are on a LINEAR scale (TPM,
#: FPKM, TPM/10 …): the Tirosh 2016 file, described as "log2(TPM/10+1)-like", holds values up to
#: 34,215 with rows summing to ~1e5, i.e. TPM/10.
LOG_SCALE_MAX = 20.0

#: What the values of an input matrix are (``gene_panels.value_transform`` and the mapping report):
#: ``counts`` raw integer counts; ``log`` already log-transformed (e.g. log1p of CP10k, log2(TPM+1));
#: ``linear`` normalised but not logged (TPM, CPM, FPKM).
VALUE_TRANSFORMS = ("counts", "log", "linear")

#: Age groups of the development stage (HsapDv "… stage" terms, CELLxGENE practice), with the
#: lower bound of each in years. Prenatal stages are their own category, never "newborn".
DEVELOPMENT_STAGE_CATEGORIES = (
    ("prenatal", float("-inf")),
    ("newborn", 0.0),
    ("infant", 28 / 365.25),
    ("preschool child", 2.0),
    ("child", 6.0),
    ("adolescent", 13.0),
    ("young adult", 20.0),
    ("adult", 25.0),  # "young adult" is 20-24 in the HsapDv age groups used by CELLxGENE
    ("middle aged", 45.0),
    ("aged", 65.0),
    ("80 and over", 80.0),
)

CELL_SCHEMA = pa.schema([
    ("cell_id", pa.string()),
    ("dataset_id", pa.string()),
    ("source", pa.string()),
    ("donor_id", pa.string()),
    ("sample_id", pa.string()),
    ("tissue_general", pa.string()),
    ("tissue", pa.string()),
    ("tissue_ontology_id", pa.string()),
    ("disease", pa.string()),
    ("disease_ontology_id", pa.string()),
    ("disease_category", pa.string()),
    ("condition", pa.string()),
    ("cell_type", pa.string()),
    ("cell_type_ontology_id", pa.string()),
    ("cell_type_original", pa.string()),
    ("cell_type_source", pa.string()),          # author | cellxgene | celltypist:<model>
    ("cell_type_confidence", pa.float32()),     # CellTypist probability (mean over the meta-cell's majority-type cells); NaN for author labels
    ("sex", pa.string()),
    ("age_years", pa.float32()),
    ("development_stage_category", pa.string()),
    ("birth_phase", pa.string()),
    ("assay", pa.string()),
    ("suspension_type", pa.string()),
    ("n_cells", pa.int32()),
    ("purity", pa.float32()),
    ("compactness", pa.float32()),   # mean PCA variance of the member cells (dataset_script.build.metacells.quality)
    ("separation", pa.float32()),    # PCA distance to the nearest meta-cell of the partition
    ("library_size", pa.float32()),
    ("values_are_counts", pa.bool_()),
    ("is_pretrain", pa.bool_()),
    ("expression_indices", pa.list_(pa.int32())),
    ("expression_values", pa.list_(pa.float32())),
])

ENTITY_SCHEMA = pa.schema([
    ("entity_index", pa.int32()),
    ("entity_id", pa.string()),
    ("entity_type", pa.string()),  # "transcript" | "protein"
    ("symbol", pa.string()),
    ("name", pa.string()),
    ("description", pa.string()),
    ("sequence", pa.string()),
])

EDGE_SCHEMA = pa.schema([
    ("source", pa.int32()),
    ("target", pa.int32()),
    ("relation", pa.string()),  # "internal" (transcript -> protein) | "ppi"
    ("weight", pa.float32()),
    ("evidence", pa.string()),
])

#: One row per input dataset: which transcript nodes it measured (absent = unmeasured, not zero).
GENE_PANEL_SCHEMA = pa.schema([
    ("dataset_id", pa.string()),
    ("values_are_counts", pa.bool_()),
    ("value_transform", pa.string()),
    ("n_genes_input", pa.int32()),
    ("n_genes_mapped", pa.int32()),
    ("measured_indices", pa.list_(pa.int32())),
])


def embedding_schema(dims: dict[str, int]) -> pa.Schema:
    """Arrow schema of the ``embeddings`` config: ``entity_index`` + one fixed-size float32 list
    per modality (e.g. ``{"name": 384, "description": 384}``)."""
    fields = [("entity_index", pa.int32())]
    fields += [(f"{m}_embedding", pa.list_(pa.float32(), d)) for m, d in dims.items()]
    return pa.schema(fields)
