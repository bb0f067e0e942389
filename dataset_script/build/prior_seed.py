"""Seed the per-entity prior cache (:mod:`dataset_script.build.prior_cache`) from an existing dataset
folder's stored priors (``omnicelltosg build --priors-from DIR``), after checking its files against the
SHA-256 its ``build_info.json`` records and that the same encoders made them."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from dataset_script.build.prior_cache import PriorCache, text_encoder_identity
from dataset_script.files import sha256_file


def _fixed_size_column(table, name: str) -> np.ndarray:
    """A ``FixedSizeList<float32>`` Arrow column as a float32 array ``[rows, size]``."""
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)


def _checked_file(dataset_dir: Path, info: dict, name: str) -> Path:
    path = dataset_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"{dataset_dir} has no {name}: not a complete OmniCellTOSG dataset folder")
    record = (info.get("files") or {}).get(name)
    if record is None:
        warnings.warn(f"{dataset_dir}: no file record for {name} in build_info.json (an older build); its content "
                      "cannot be checked before seeding the prior cache", stacklevel=3)
    elif sha256_file(path) != record.get("sha256"):
        raise ValueError(f"{path} does not match the SHA-256 recorded in {dataset_dir / 'build_info.json'}: the "
                         "folder was changed after its build; refusing to seed the prior cache from it")
    return path


def _recorded_identity(info: dict, kind: str) -> str | None:
    identity = (info.get("encoders") or {}).get("identity") or {}
    return identity.get(kind) if isinstance(identity, dict) else None


def read_build_info(dataset_dir: str | os.PathLike) -> dict:
    """``build_info.json`` of a dataset folder (the source of ``priors_from``).

    Raises
    ------
    FileNotFoundError
        If ``dataset_dir`` has no ``build_info.json``.
    ValueError
        If it is not a JSON object.
    """
    path = Path(dataset_dir) / "build_info.json"
    if not path.is_file():
        raise FileNotFoundError(f"priors_from: no OmniCellTOSG dataset at {dataset_dir} (build_info.json missing)")
    info = json.loads(path.read_text())
    if not isinstance(info, dict):
        raise ValueError(f"priors_from: {path} is not a JSON object")  # noqa: TRY004 (a bad file, reported as such)
    return info


def seed_from_dataset(dataset_dir: str | os.PathLike, cache: PriorCache, *, text_identity: str,
                      sequence_identity: str | None = None, sequence_weights: str | None = None) -> dict[str, int | str]:
    """Copy the prior vectors of an existing dataset folder into ``cache``, keyed as the build keys them.

    Reads ``build_info.json``, ``data/entities.parquet`` (``entity_index, name, description,
    sequence``) and ``data/embeddings.parquet`` (``name_embedding``, ``description_embedding``,
    ``sequence_embedding``, ``has_sequence_embedding``). Text vectors are seeded only when the
    dataset's text encoder is ``text_identity`` — as recorded in ``build_info["encoders"]["identity"]``,
    or, for a build made before that record, ``encoders["name"] == encoders["description"] ==
    TEXT_ENCODER_NAME`` and ``text_identity`` is the pipeline's (window :data:`TEXT_MAX_LENGTH`, the
    only one it ever used). Sequence vectors likewise: recorded ``sequence_identity``, or for an older
    build the same weights file name (``sequence_weights``) in ``build_info["knowledge"]
    ["sequence_model"]`` (the file's content was not recorded then). Existing cache rows are kept.

    Returns
    -------
    ``{"text": rows seeded, "sequence": rows seeded}``, or the reason a kind was skipped (a string)
    for a kind whose encoder differs (also warned about) or that the dataset does not have.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``build_info.json`` or no entity / embedding table.
    ValueError
        If a table's SHA-256 differs from the one ``build_info.json`` records, or the tables do not
        line up (missing columns, entity indices without embeddings).
    """
    import pyarrow.parquet as pq

    from dataset_script.build.recipe import SEQUENCE_MODELS
    from dataset_script.build.text_encoder import TEXT_ENCODER_NAME

    dataset_dir = Path(dataset_dir)
    info = read_build_info(dataset_dir)
    encoders = info.get("encoders") or {}
    report: dict[str, int | str] = {}

    recorded = _recorded_identity(info, "text")
    if recorded is not None:
        text_ok = recorded == text_identity
    else:
        text_ok = (encoders.get("name") == encoders.get("description") == TEXT_ENCODER_NAME
                   and text_identity == text_encoder_identity())
    recorded = _recorded_identity(info, "sequence")
    if sequence_identity is None:
        seq_ok = False
        report["sequence"] = "this build has no sequence prior"
    elif recorded is not None:
        seq_ok = recorded == sequence_identity
    else:
        model = (info.get("knowledge") or {}).get("sequence_model")
        seq_ok = bool(sequence_weights) and "sequence" in encoders and SEQUENCE_MODELS.get(model) == sequence_weights
    for kind, ok in (("text", text_ok), ("sequence", seq_ok)):
        if not ok and kind not in report:
            report[kind] = "different encoder"
            warnings.warn(f"priors_from {dataset_dir}: its {kind} prior was made with another encoder than this "
                          f"build's; its {kind} vectors are not used", stacklevel=2)
    if not text_ok and not seq_ok:
        return report

    entities = pq.read_table(_checked_file(dataset_dir, info, "data/entities.parquet"),
                             columns=["entity_index", "name", "description", "sequence"])
    embeddings = pq.read_table(_checked_file(dataset_dir, info, "data/embeddings.parquet"))
    row_of = {int(e): i for i, e in enumerate(embeddings.column("entity_index").to_pylist())}
    index = entities.column("entity_index").to_pylist()
    missing = [e for e in index if int(e) not in row_of]
    if missing:
        raise ValueError(f"priors_from {dataset_dir}: {len(missing)} entities have no embedding row "
                         f"(e.g. entity_index {missing[:3]})")
    rows = np.array([row_of[int(e)] for e in index], dtype=np.int64)

    def column(name: str) -> np.ndarray:
        if name not in embeddings.column_names:
            raise ValueError(f"priors_from {dataset_dir}: data/embeddings.parquet has no {name!r} column")
        return _fixed_size_column(embeddings, name)[rows]

    if text_ok:
        vectors: dict[str, np.ndarray] = {}
        for field in ("name", "description"):
            for text, vector in zip(entities.column(field).to_pylist(), column(f"{field}_embedding")):
                if text and text not in vectors:
                    vectors[text] = vector
        report["text"] = cache.put(text_identity, vectors, replace=False)
    if seq_ok:
        if "has_sequence_embedding" not in embeddings.column_names:
            raise ValueError(f"priors_from {dataset_dir}: data/embeddings.parquet has no 'has_sequence_embedding'")
        has = np.asarray(embeddings.column("has_sequence_embedding").to_pylist(), dtype=bool)[rows]
        vectors = {}
        for seq, vector, ok in zip(entities.column("sequence").to_pylist(), column("sequence_embedding"), has):
            if ok and seq and seq not in vectors:
                vectors[seq] = vector
        report["sequence"] = cache.put(sequence_identity, vectors, replace=False)
    return report


__all__ = ["read_build_info", "seed_from_dataset"]
