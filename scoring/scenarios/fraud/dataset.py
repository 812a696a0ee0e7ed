"""A user's own transactions as training data: the reader behind ``scoring train --data FILE``.

The file is Parquet (``.parquet``, ``.pq``) or CSV (``.csv``, ``.csv.gz``) with the column names of the Fraud
Detection Handbook (Le Borgne et al.): ``TRANSACTION_ID``, ``TX_DATETIME``, ``CUSTOMER_ID``, ``TERMINAL_ID``,
``TX_AMOUNT``, ``TX_FRAUD`` and optionally ``TX_FRAUD_SCENARIO`` (0 when absent); other columns are ignored, so the
simulator's own files (:mod:`fraud.simulator`) are a special case. :func:`read_transactions` returns exactly the
simulator's schema (:data:`fraud.simulator.COLUMNS`), rows sorted by time then id: ``TX_DATETIME`` is parsed as UTC
(aware values converted, naive values taken as UTC, the result naive), and ``TX_TIME_SECONDS`` / ``TX_TIME_DAYS`` are
always re-derived from it, as the handbook's generator defines them (whole seconds, and days, since midnight of the
first transaction's day), so a file's own copies can never disagree with it. Bad data is refused, never repaired: the
first problem found raises :class:`DataError` naming the column, the number of rows affected and the first of them
with their 0-based row number in the file; ids must be integers (integer-valued floats pass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scoring.scenarios.fraud.simulator import COLUMNS, SECONDS_PER_DAY

REQUIRED = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD")
ID_COLUMNS = ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID")
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz")
SHOWN_ROWS = 5

# The range of datetime64[ns], the unit of the output's TX_DATETIME.
_TIME_MIN = pd.Timestamp.min.tz_localize("UTC")
_TIME_MAX = pd.Timestamp.max.tz_localize("UTC")
_INT64_LIMIT = 2.0**63


class DataError(ValueError):
    """The file cannot be used as training data; the message says why and shows the offending rows."""


def _read(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        kind = "Parquet"
    elif name.endswith(CSV_SUFFIXES):
        kind = "CSV"
    else:
        accepted = ", ".join(PARQUET_SUFFIXES + CSV_SUFFIXES)
        raise DataError(f"{path}: unsupported file type; accepted suffixes: {accepted}")
    try:
        if kind == "Parquet":
            df = pd.read_parquet(path, engine="pyarrow")
        else:
            df = pd.read_csv(path, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except Exception as exc:  # any reader failure (missing file, not this format, corrupt) is the user's file
        raise DataError(f"cannot read {path} as {kind}: {exc}") from exc
    # Row numbers in messages are positions in the file, whatever index a Parquet file may have stored.
    return df.reset_index(drop=True)


def _refuse(path: Path, df: pd.DataFrame, column: str, mask: np.ndarray | pd.Series, problem: str) -> DataError:
    bad = df.loc[np.asarray(mask, dtype=bool), [c for c in (*REQUIRED, "TX_FRAUD_SCENARIO") if c in df.columns]]
    if column == "TRANSACTION_ID":  # duplicates: keep each group together
        bad = bad.sort_values(column, kind="stable")
    shown = bad.head(SHOWN_ROWS).rename_axis("row")
    return DataError(
        f"{path}: column {column}: {len(bad)} of {len(df)} rows {problem}; "
        f"first {len(shown)} (row = 0-based data row in the file):\n{shown.to_string()}"
    )


def _numeric(series: pd.Series) -> pd.Series:
    """``series`` as numbers, NaN where a value is not one (bools count as 0/1)."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return pd.Series(series.to_numpy(dtype="float64", na_value=np.nan), index=series.index)
    return pd.to_numeric(series, errors="coerce")


def _parse_datetime(path: Path, df: pd.DataFrame) -> pd.Series:
    raw = df["TX_DATETIME"]
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = pd.to_datetime(raw, utc=True)
    elif pd.api.types.is_numeric_dtype(raw.dtype):  # epoch numbers: the unit is anybody's guess
        parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    else:
        parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
    bad = parsed.isna() | (parsed < _TIME_MIN) | (parsed > _TIME_MAX)
    if bad.any():
        raise _refuse(path, df, "TX_DATETIME", bad, "are null or not a parsable date-time (ISO 8601, 1677..2262)")
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _integers(path: Path, df: pd.DataFrame, column: str, allowed: str = "must hold integers") -> pd.Series:
    raw = df[column]
    if raw.isna().any():
        raise _refuse(path, df, column, raw.isna(), "are missing (null)")
    num = raw if pd.api.types.is_integer_dtype(raw.dtype) else _numeric(raw)
    if pd.api.types.is_integer_dtype(num.dtype):
        if pd.api.types.is_unsigned_integer_dtype(num.dtype) and (too_big := num > np.iinfo(np.int64).max).any():
            raise _refuse(path, df, column, too_big, "are integers beyond the int64 range")
        return num.astype("int64")
    values = num.to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < _INT64_LIMIT)
    if not ok.all():
        raise _refuse(path, df, column, ~ok, f"are not integers (the column {allowed})")
    return pd.Series(values.astype("int64"), index=raw.index)


def read_transactions(path: str | Path) -> pd.DataFrame:
    """The transactions in ``path`` with the columns, dtypes and order of ``COLUMNS``, sorted by time then id.

    Raises :class:`DataError` for an unreadable file or the first problem found in its data.
    """
    path = Path(path)
    df = _read(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing required columns {missing}; columns found: {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: the file has no rows")

    tx_datetime = _parse_datetime(path, df)

    ids = df["TRANSACTION_ID"]
    duplicated = ids.duplicated(keep=False) & ids.notna()
    if duplicated.any():
        reused = f"reuse a TRANSACTION_ID ({ids[duplicated].nunique()} values used more than once)"
        raise _refuse(path, df, "TRANSACTION_ID", duplicated, reused)

    amount = _numeric(df["TX_AMOUNT"]).to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad_amount = ~np.isfinite(amount) | (amount < 0)
    if bad_amount.any():
        raise _refuse(path, df, "TX_AMOUNT", bad_amount, "are non-numeric, NaN, infinite or negative")

    fraud = _numeric(df["TX_FRAUD"]).to_numpy(dtype="float64", na_value=np.nan)
    bad_fraud = ~np.isin(fraud, (0.0, 1.0))
    if bad_fraud.any():
        raise _refuse(path, df, "TX_FRAUD", bad_fraud, "are not 0 or 1")

    columns = {c: _integers(path, df, c) for c in ID_COLUMNS}
    # Again as integers: "1", "01" and "1.0" are distinct text but one id.
    as_int = columns["TRANSACTION_ID"].duplicated(keep=False)
    if as_int.any():
        reused = f"reuse a TRANSACTION_ID once read as integers ({columns['TRANSACTION_ID'][as_int].nunique()} values)"
        raise _refuse(path, df, "TRANSACTION_ID", as_int.to_numpy(), reused)
    if "TX_FRAUD_SCENARIO" in df.columns:
        scenario = _integers(path, df, "TX_FRAUD_SCENARIO", "must hold small integers, 0 to 127")
        out_of_range = (scenario < 0) | (scenario > np.iinfo(np.int8).max)
        if out_of_range.any():
            raise _refuse(path, df, "TX_FRAUD_SCENARIO", out_of_range, "are outside 0..127")
    else:
        scenario = pd.Series(0, index=df.index)

    origin = tx_datetime.min().normalize()
    seconds = (tx_datetime - origin) // pd.Timedelta(seconds=1)
    out = pd.DataFrame(
        {
            "TRANSACTION_ID": columns["TRANSACTION_ID"],
            "TX_DATETIME": tx_datetime,
            "CUSTOMER_ID": columns["CUSTOMER_ID"],
            "TERMINAL_ID": columns["TERMINAL_ID"],
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // SECONDS_PER_DAY,
            "TX_FRAUD": fraud,
            "TX_FRAUD_SCENARIO": scenario,
        },
        index=df.index,
    )
    out = out.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable").reset_index(drop=True)
    return out.astype(COLUMNS)
