"""Metadata queries over meta-cell rows (ARCHITECTURE.md §5).

A query is a dict ``{field: wanted}``: a scalar means equality, a list / tuple / set means
membership, and strings compare case-insensitively (``"Blood"`` matches ``"blood"``). The same rule
is used on an Arrow table (inside ``datasets.Dataset.filter``) and on a pandas DataFrame, so the
cohort logic can run on the metadata alone (benchmarks) or on the dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Values that mean "not annotated" in a metadata field (compared lower-case). The build writes
#: ``unknown``; the others occur in source files and in the original release.
UNKNOWN_VALUES = frozenset({"", "unknown", "unannotated", "unannoted", "na", "n/a", "nan", "none"})


def _wanted_list(wanted: Any) -> list:
    return list(wanted) if isinstance(wanted, (list, tuple, set, frozenset, np.ndarray)) else [wanted]


def _column_mask(column: pa.Array | pa.ChunkedArray, wanted: Any) -> np.ndarray:
    """bool [n]: rows of one Arrow column equal to (scalar) or in (list) ``wanted``."""
    values = _wanted_list(wanted)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_lower(column)
        values = [str(v).lower() for v in values]
        value_set = pa.array(values, type=pa.string())
    else:
        value_set = pa.array(values).cast(column.type)
    return np.asarray(pc.fill_null(pc.is_in(column, value_set=value_set), False).to_numpy(zero_copy_only=False),
                      dtype=bool)


def condition_mask(table: pa.Table | pd.DataFrame, conditions: dict) -> np.ndarray:
    """bool [n]: rows of ``table`` that satisfy every condition (fields are not checked; see :func:`check_fields`).

    Raises
    ------
    ValueError
        A wanted value that cannot be compared with its column (e.g. text for a numeric field, a
        nested list or a dict); the message names the field, the value and the column type.
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table[list(conditions)], preserve_index=False)
    mask = np.ones(table.num_rows, dtype=bool)
    for name, wanted in conditions.items():
        column = table.column(name)
        try:
            mask &= _column_mask(column, wanted)
        except (pa.ArrowException, TypeError, OverflowError) as err:
            raise ValueError(f"Condition {name!r}: {wanted!r} cannot be compared with the field's {column.type} values "
                             f"({err}); give a value or a list of values of that type") from None
    return mask


def select_batch(batch: pa.Table, conditions: dict) -> np.ndarray:
    """Batched ``datasets.Dataset.filter`` predicate on an Arrow batch (a named, module-level
    function so that ``datasets`` fingerprints it and a repeated query is a cache hit)."""
    return condition_mask(batch, conditions)


def check_fields(fields: list[str], conditions: dict) -> None:
    """Raise ``KeyError`` listing the available fields if a condition names an unknown one, ``TypeError``
    if ``conditions`` is not a dict."""
    if not isinstance(conditions, dict):
        raise TypeError(f"conditions must be a dict of field → value(s); got {type(conditions).__name__}")
    unknown = sorted(map(str, set(conditions) - set(fields)))
    if unknown:
        raise KeyError(f"Unknown metadata field(s) {unknown}; available fields: {sorted(fields)}")


def available_values(table: pd.DataFrame, conditions: dict) -> dict[str, list[str]]:
    """For each condition field, the values present among rows matching the *other* conditions
    (what a user could ask for instead). ``table`` must hold the condition columns."""
    hints = {}
    for name in conditions:
        others = {k: v for k, v in conditions.items() if k != name}
        mask = condition_mask(table, others) if others else np.ones(len(table), dtype=bool)
        hints[name] = sorted(map(str, pd.unique(table.loc[mask, name])))
    return hints


def empty_query_error(table: pd.DataFrame, conditions: dict) -> ValueError:
    """The error for a query with zero rows: it lists, per condition field, the values available
    under the other conditions."""
    return ValueError(f"No meta-cells match {conditions}. Available values of each field under the other "
                      f"conditions: {available_values(table, conditions)}")


def query_frame(meta: pd.DataFrame, conditions: dict) -> np.ndarray:
    """Row positions (int64) of ``meta`` matching ``conditions``.

    Raises
    ------
    TypeError
        ``conditions`` is not a dict.
    KeyError
        Unknown field (the message lists the fields).
    ValueError
        Zero rows (the message lists the available values of each condition field), or a value that
        cannot be compared with its field.
    """
    check_fields(list(meta.columns), conditions)
    if not conditions:
        return np.arange(len(meta))
    rows = np.flatnonzero(condition_mask(meta, conditions))
    if len(rows) == 0:
        raise empty_query_error(meta, conditions)
    return rows


def is_unknown(values: pd.Series | np.ndarray) -> np.ndarray:
    """bool [n]: missing or "unknown"-like values (:data:`UNKNOWN_VALUES`, case-insensitive)."""
    s = pd.Series(values)
    return (s.isna() | s.astype(str).str.strip().str.lower().isin(UNKNOWN_VALUES)).to_numpy()
