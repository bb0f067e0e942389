"""Cell types, probabilities and cell embeddings for a scientist's own AnnData from a fine-tuned
CellTOSG-FM classifier — no dataset build of that data needed.

::

    from omnicelltosg.tools.predict import predict_adata

    adata = predict_adata("my_cells.h5ad", "runs/demo/model_cell_type", "runs/demo/dataset",
                          data_dir="../shared/data", out="my_cells.celltosg.h5ad")
    adata.obs["celltosg_prediction"], adata.obs["celltosg_conf_score"]
    adata.obsm["X_celltosg"]              # e.g. sc.pp.neighbors(adata, use_rep="X_celltosg")
    adata.obsm["celltosg_probabilities"]  # DataFrame cells × labels
    adata.uns["celltosg"]["gene_mapping"]  # how many genes mapped; per-gene table in uns["celltosg_genes"]

or ``omnicelltosg predict my_cells.h5ad --model DIR --graph DATASET_DIR --out OUT.h5ad``.

The input is mapped onto the model's entity graph exactly as the build maps its inputs
(:mod:`omnicelltosg.tools.gene_mapping`); the graph (edges and text priors) is the one of the dataset
folder the model was trained with, and its entity version must be the model's. Output names follow
CellTypist (``predicted_labels``, ``conf_score``, a probability matrix) and scGPT (``obsm["X_scGPT"]``)
with a ``celltosg`` prefix, so they sit next to theirs in one AnnData.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from dataset_script.build.readers import read_matrix
from dataset_script.cohorts.loader import load_graph
from dataset_script.files import atomic_file
from modeling_celltosg.modeling_celltosg import CellTOSGForCellClassification
from modeling_celltosg.tosg_graph import TOSGGraph
from omnicelltosg.tools.gene_mapping import (
    MappedExpression,
    gene_table,
    map_expression,
    transcript_index_of_entrez,
)

#: ``adata.obsm``: cell embeddings float32 [n_obs, d] (the classifier's ``cell_embeddings``; d depends on the
#: architecture, e.g. hidden_size × readout queries).
EMBEDDING_KEY = "X_celltosg"
#: ``adata.obs``: predicted label (categorical over every label of the model).
LABEL_KEY = "celltosg_prediction"
#: ``adata.obs``: probability of the predicted label (float32), CellTypist's ``conf_score``.
CONFIDENCE_KEY = "celltosg_conf_score"
#: ``adata.obsm``: probabilities, a DataFrame n_obs × labels (columns in the model's class order).
PROBABILITIES_KEY = "celltosg_probabilities"
#: ``adata.uns``: what was run on what, and the gene-mapping counts; ``GENES_KEY``: the per-gene table.
UNS_KEY = "celltosg"
GENES_KEY = "celltosg_genes"
#: Below this share of the model's transcripts measured in the input, a warning is raised.
MIN_MEASURED_FRACTION = 0.5


def load_classifier(model_dir: str | Path) -> CellTOSGForCellClassification:
    """A fine-tuned :class:`~modeling_celltosg.CellTOSGForCellClassification` in eval mode.

    Raises
    ------
    FileNotFoundError
        If ``model_dir`` has no ``config.json``.
    ValueError
        If it is not a CellTOSG checkpoint, or has no trained classification head (e.g. a pretraining
        checkpoint: fine-tune it for a label first).
    """
    model_dir = Path(model_dir)
    config = model_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"No model at {model_dir}: config.json is missing (expected a folder written by "
                                "save_pretrained of a fine-tuned CellTOSGForCellClassification)")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type != "celltosg":
        raise ValueError(f"{model_dir} holds a {model_type!r} model, not a CellTOSG checkpoint (model_type 'celltosg')")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = CellTOSGForCellClassification.from_pretrained(model_dir, output_loading_info=True)
    fresh = sorted(k for k in info.get("missing_keys", ()) if not k.startswith("celltosg."))
    if fresh:
        raise ValueError(f"{model_dir} is a checkpoint without a trained classification head ({len(fresh)} head "
                         f"weights missing, e.g. {fresh[:3]}): a pretraining checkpoint (fine-tune it for a label "
                         "first: CellTOSGForCellClassification.from_pretrained(dir, num_labels=…)), or one saved by "
                         "a model version whose head differs from this one.")
    return model.eval()


def read_input(data: ad.AnnData | str | Path, data_dir: str | Path) -> ad.AnnData:
    """The cells to predict: an AnnData as it is, or a file read as the build reads its inputs (``.h5ad``,
    a 10x folder or its ``matrix.mtx(.gz)``, a dense CSV/TSV; :func:`dataset_script.build.readers.read_matrix`).

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    ValueError
        If its format is not supported or it cannot be read in that format.
    TypeError
        If ``data`` is neither an AnnData nor a path.
    """
    if isinstance(data, ad.AnnData):
        return data
    if not isinstance(data, (str, Path)):
        raise TypeError(f"Expected an AnnData or the path of an .h5ad file, got {type(data).__name__}")
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"Input not found: {path}")
    try:
        return read_matrix(path, gene_table(data_dir))
    except (FileNotFoundError, ValueError):
        raise
    except Exception as err:  # h5py / anndata raise OSError, KeyError … for a file that is not what it says
        raise ValueError(f"Could not read {path} as single-cell input ({type(err).__name__}: {err}); expected an "
                         ".h5ad file (or a 10x folder / CSV table)") from err


def _graph_of(graph: str | Path | tuple[TOSGGraph, pd.DataFrame]) -> tuple[TOSGGraph, pd.DataFrame, str]:
    if isinstance(graph, tuple):
        return graph[0], graph[1], "<given graph>"
    path = Path(graph)
    if not (path / "build_info.json").is_file():
        raise FileNotFoundError(f"No OmniCellTOSG dataset at {path} (build_info.json missing): --graph must be the "
                                "dataset folder the model was trained with")
    g, entities = load_graph(path)
    return g, entities, str(path)


def check_compatible(model: CellTOSGForCellClassification, graph: TOSGGraph, source: str) -> None:
    """Raise ``ValueError`` unless the graph is the one the model was trained on: the same entity version
    (``config.entity_version``; an empty one accepts any graph) and the same transcript and protein counts."""
    cfg = model.config
    if cfg.entity_version and cfg.entity_version != graph.entity_version:
        raise ValueError(f"The model was trained on entity graph {cfg.entity_version!r}, but {source} holds "
                         f"{graph.entity_version!r}: node indices would mean different genes. Pass the dataset "
                         "folder the model was trained with (--graph).")
    if (cfg.num_transcripts, cfg.num_proteins) != (graph.num_transcripts, graph.num_proteins):
        raise ValueError(f"The model expects {cfg.num_transcripts} transcripts and {cfg.num_proteins} proteins; "
                         f"{source} has {graph.num_transcripts} and {graph.num_proteins}.")


def label_names(model: CellTOSGForCellClassification) -> list[str]:
    """The model's class names in logit order (``config.id2label``)."""
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return [id2label.get(i, f"LABEL_{i}") for i in range(model.config.num_labels)]


@torch.no_grad()
def run_classifier(model: CellTOSGForCellClassification, mapped: MappedExpression, graph: TOSGGraph, *,
                   batch_size: int = 256, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """``(cell embeddings float32 [n, d], probabilities float32 [n, num_labels])`` of every mapped
    cell, ``batch_size`` cells at a time, in eval mode.

    Raises
    ------
    ValueError
        If ``batch_size`` < 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.to(device).eval()
    graph = graph.to(device)
    embeddings, probabilities = [], []
    for start in range(0, mapped.transcripts.shape[0], batch_size):
        x, mask = mapped.model_inputs(slice(start, start + batch_size))
        out = model(x.to(device), graph, measured_mask=mask.to(device))
        embeddings.append(out.cell_embeddings.float().cpu())
        probabilities.append(torch.softmax(out.logits.float(), dim=-1).cpu())
    return torch.cat(embeddings).numpy(), torch.cat(probabilities).numpy()


def _store(adata: ad.AnnData, embeddings: np.ndarray, probabilities: np.ndarray, labels: list[str],
           mapped: MappedExpression, provenance: dict) -> None:
    """Write the results into ``adata`` (see :func:`predict_adata`)."""
    best = probabilities.argmax(1)
    adata.obsm[EMBEDDING_KEY] = embeddings.astype(np.float32)
    adata.obsm[PROBABILITIES_KEY] = pd.DataFrame(probabilities.astype(np.float32), index=adata.obs_names,
                                                 columns=pd.Index(labels, dtype=str))
    adata.obs[LABEL_KEY] = pd.Categorical.from_codes(best, categories=labels)
    adata.obs[CONFIDENCE_KEY] = probabilities.max(1).astype(np.float32)
    adata.uns[UNS_KEY] = {**provenance, "labels": list(labels), "matrix": mapped.matrix,
                          "value_transform": mapped.value_transform, "gene_mapping": dict(mapped.report)}
    adata.uns[GENES_KEY] = mapped.genes.reset_index(drop=True)


def _checked_out(out: str | Path) -> Path:
    out = Path(out)
    if out.suffix != ".h5ad":
        raise ValueError(f"The output must be an .h5ad file, got {out}")
    return out


def write_prediction(adata: ad.AnnData, out: str | Path) -> tuple[Path, Path]:
    """Write ``adata`` to ``out`` (.h5ad) and its per-gene mapping table to ``<out stem>.genes.tsv``, each
    atomically (a failed write leaves no partial file). Returns both paths.

    Raises
    ------
    ValueError
        If ``out`` does not end in ``.h5ad``.
    """
    out = _checked_out(out)
    table = out.with_name(out.stem + ".genes.tsv")
    with atomic_file(out) as tmp:
        adata.write_h5ad(tmp)
    if GENES_KEY in adata.uns:
        with atomic_file(table) as tmp:
            adata.uns[GENES_KEY].to_csv(tmp, sep="\t", index=False)
    return out, table


def predict_adata(data: ad.AnnData | str | Path, model: str | Path | CellTOSGForCellClassification,
                  graph: str | Path | tuple[TOSGGraph, pd.DataFrame], *, data_dir: str | Path,
                  gene_id_type: str = "auto", use_raw: bool | None = None, layer: str | None = None,
                  batch_size: int = 256, device: str | torch.device = "cpu", copy: bool = False,
                  out: str | Path | None = None) -> ad.AnnData:
    """Predict labels and embed the cells of ``data`` with a fine-tuned CellTOSG-FM classifier.

    Parameters
    ----------
    data
        Cells × genes: an AnnData, or the path of an ``.h5ad`` (or a 10x folder / CSV table, as the build
        reads them). Genes as symbols (official or unambiguous aliases, any case) or Ensembl gene IDs with
        or without version; values raw counts, log-normalised (e.g. log1p CP10k) or linear (TPM), told
        apart as the build does. Scaled data (negative values) is refused.
    model
        Folder of a fine-tuned ``CellTOSGForCellClassification`` (``save_pretrained``; ``config.id2label``
        names the classes), or the loaded model.
    graph
        The dataset folder the model was trained with (its entity graph and text priors), or the
        ``(graph, entities)`` pair :func:`dataset_script.cohorts.loader.load_graph` returns.
    data_dir
        The shared data folder whose ``knowledge/`` gene table the dataset was built with.
    gene_id_type
        ``auto`` (default), ``symbol`` or ``ensembl``.
    use_raw, layer
        Read ``.raw`` or ``layers[layer]`` instead of ``.X``; ``use_raw=None`` reads ``.raw`` only for a
        CELLxGENE-schema file (as the build).
    batch_size, device
        Cells per forward pass, and where to run.
    copy
        Write the results into a copy of an AnnData ``data`` instead of into ``data`` itself.
    out
        Also write the result to this ``.h5ad`` (and the gene table next to it, :func:`write_prediction`).

    Returns
    -------
    The AnnData with ``obsm["X_celltosg"]`` float32 [n_obs, d] (the classifier's ``cell_embeddings``), ``obs["celltosg_prediction"]`` (categorical label), ``obs["celltosg_conf_score"]``
    (float32 max probability), ``obsm["celltosg_probabilities"]`` (float32 DataFrame n_obs × labels),
    ``uns["celltosg"]`` (model, graph, entity version, matrix read, value transform, labels, and
    ``gene_mapping`` counts: ``n_input_genes, n_mapped, n_not_in_graph, n_ambiguous, n_unmapped,
    n_transcripts_measured, n_transcripts_model, measured_fraction, …``) and ``uns["celltosg_genes"]``
    (one row per input gene: ``input_id, entrez_id, symbol, how, candidates, transcript_index, status``).

    Raises
    ------
    FileNotFoundError
        Missing input, model folder, dataset folder or gene table.
    ValueError
        Unreadable or unsupported input; negative values; an empty matrix or repeated gene names; no
        gene overlap with the graph; a checkpoint that is not CellTOSG or has no classification head; a
        graph whose entity version or size is not the model's; ``batch_size`` < 1; ``out`` not ``.h5ad``
        (checked before any work).

    Warns
    -----
    UserWarning
        When fewer than ``MIN_MEASURED_FRACTION`` of the model's transcripts are measured in the input, or
        some cells have no expression on the graph's genes (they are kept and predicted, unlike the build,
        which drops all-zero cells, so that rows stay aligned with ``data``).
    """
    if out is not None:
        _checked_out(out)
    clf = model if isinstance(model, CellTOSGForCellClassification) else load_classifier(model)
    g, entities, source = _graph_of(graph)
    check_compatible(clf, g, source)
    adata = read_input(data, data_dir)
    if copy and adata is data:
        adata = adata.copy()
    genes = gene_table(data_dir)
    mapped = map_expression(adata, transcript_index_of_entrez(entities, genes), g.num_transcripts, genes,
                            gene_id_type=gene_id_type, use_raw=use_raw, layer=layer)
    report = mapped.report
    if report["measured_fraction"] < MIN_MEASURED_FRACTION:
        warnings.warn(f"Only {report['n_transcripts_measured']} of the model's {report['n_transcripts_model']} "
                      f"transcripts are measured in this input ({report['n_mapped']} of "
                      f"{report['n_input_genes']} input genes mapped); the rest are treated as unmeasured.",
                      stacklevel=2)
    if report["n_cells_without_expression"]:
        warnings.warn(f"{report['n_cells_without_expression']} of {report['n_cells']} cells have no expression on the "
                      "graph's genes: their predictions rest on no measured value.", stacklevel=2)
    embeddings, probabilities = run_classifier(clf, mapped, g, batch_size=batch_size, device=device)
    provenance = {"model": str(model) if not isinstance(model, torch.nn.Module) else "<given model>",
                  "graph": source, "entity_version": str(g.entity_version)}
    _store(adata, embeddings, probabilities, label_names(clf), mapped, provenance)
    if out is not None:
        write_prediction(adata, out)
    return adata


__all__ = ["CONFIDENCE_KEY", "EMBEDDING_KEY", "GENES_KEY", "LABEL_KEY", "PROBABILITIES_KEY", "UNS_KEY",
           "check_compatible", "label_names", "load_classifier", "predict_adata", "read_input",
           "run_classifier", "write_prediction"]
