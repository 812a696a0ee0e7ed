"""The reader of a user's own training data: the handbook's format in, the simulator's schema out, bad data refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.scenarios.fraud.dataset import DataError, read_transactions
from scoring.scenarios.fraud.simulator import COLUMNS, SimulationConfig, simulate, write_parquet

pytestmark = pytest.mark.unit

HANDBOOK = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]

# Six transactions in the handbook's format, deliberately out of order in the file.
ROWS = [
    ["3", "2018-04-03 12:00:00", "10", "100", "250.00", "1"],
    ["0", "2018-04-01 00:00:31", "11", "101", "12.50", "0"],
    ["1", "2018-04-01 08:15:00", "10", "102", "40.10", "0"],
    ["5", "2018-04-05 23:59:59", "12", "100", "7.00", "0"],
    ["2", "2018-04-02 00:00:00", "11", "103", "99.99", "1"],
    ["4", "2018-04-03 12:00:00", "12", "101", "0.00", "0"],
]


def write_csv(path: Path, rows: list[list[str]] = ROWS, columns: list[str] = HANDBOOK) -> Path:
    lines = [",".join(columns)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def raw_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "TRANSACTION_ID": [int(r[0]) for r in ROWS],
            "TX_DATETIME": pd.to_datetime([r[1] for r in ROWS]),
            "CUSTOMER_ID": [int(r[2]) for r in ROWS],
            "TERMINAL_ID": [int(r[3]) for r in ROWS],
            "TX_AMOUNT": [float(r[4]) for r in ROWS],
            "TX_FRAUD": [int(r[5]) for r in ROWS],
        }
    )


def assert_schema(df: pd.DataFrame) -> None:
    assert list(df.columns) == list(COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == COLUMNS
    pd.testing.assert_index_equal(df.index, pd.RangeIndex(len(df)))


def test_csv_with_the_six_handbook_columns_gives_the_simulator_schema_sorted_and_derived(tmp_path: Path) -> None:
    df = read_transactions(write_csv(tmp_path / "tx.csv"))
    assert_schema(df)
    assert df["TRANSACTION_ID"].tolist() == [0, 1, 2, 3, 4, 5]  # by time; the 12:00:00 tie broken by id
    first = df.iloc[0]
    assert first["TX_DATETIME"] == pd.Timestamp("2018-04-01 00:00:31")
    assert (first["TX_TIME_SECONDS"], first["TX_TIME_DAYS"]) == (31, 0)
    noon = df[df["TRANSACTION_ID"] == 3].iloc[0]
    assert (noon["TX_TIME_SECONDS"], noon["TX_TIME_DAYS"]) == (216_000, 2)
    last = df.iloc[-1]
    assert (last["TX_TIME_SECONDS"], last["TX_TIME_DAYS"]) == (4 * 86_400 + 86_399, 4)
    assert df["TX_FRAUD"].tolist() == [0, 0, 1, 1, 0, 0]
    assert (df["TX_FRAUD_SCENARIO"] == 0).all()
    assert df["TX_AMOUNT"].tolist() == [12.5, 40.1, 99.99, 250.0, 0.0, 7.0]


def test_parquet_and_gzipped_csv_give_the_same_frame_as_csv(tmp_path: Path) -> None:
    expected = read_transactions(write_csv(tmp_path / "tx.csv"))
    raw_frame().to_parquet(tmp_path / "tx.parquet", index=False, engine="pyarrow")
    raw_frame().to_parquet(tmp_path / "tx.pq", engine="pyarrow")  # with its index stored
    raw_frame().to_csv(tmp_path / "tx.csv.gz", index=False)
    for name in ("tx.parquet", "tx.pq", "tx.csv.gz"):
        pd.testing.assert_frame_equal(read_transactions(tmp_path / name), expected)


def test_a_simulator_file_reads_back_equal_to_itself(tmp_path: Path) -> None:
    simulated = simulate(SimulationConfig(n_customers=50, n_terminals=100, n_days=10, seed=3))
    assert len(simulated) > 100 and simulated["TX_FRAUD"].any()
    write_parquet(simulated, tmp_path / "sim.parquet")
    pd.testing.assert_frame_equal(read_transactions(tmp_path / "sim.parquet"), simulated)


def test_file_copies_of_derived_columns_are_ignored_and_extra_columns_dropped(tmp_path: Path) -> None:
    expected = read_transactions(write_csv(tmp_path / "plain.csv"))
    columns = [*HANDBOOK, "TX_TIME_SECONDS", "TX_TIME_DAYS", "NOTE"]
    rows = [[*r, "-7", "99", "x"] for r in ROWS]
    pd.testing.assert_frame_equal(read_transactions(write_csv(tmp_path / "extra.csv", rows, columns)), expected)


def test_fraud_scenario_is_kept_when_present(tmp_path: Path) -> None:
    frame = raw_frame().assign(TX_FRAUD_SCENARIO=[1, 0, 0, 0, 2, 0])
    frame.to_parquet(tmp_path / "tx.parquet", index=False)
    df = read_transactions(tmp_path / "tx.parquet")
    assert df.set_index("TRANSACTION_ID")["TX_FRAUD_SCENARIO"].to_dict() == {0: 0, 1: 0, 2: 2, 3: 1, 4: 0, 5: 0}


def test_timezone_aware_values_become_naive_utc(tmp_path: Path) -> None:
    rows = [
        ["7", "2018-04-01T02:00:00+02:00", "1", "1", "5.0", "0"],
        ["8", "2018-04-01T00:30:00Z", "1", "1", "5.0", "0"],
        ["9", "2018-03-31 23:00:00", "1", "1", "5.0", "0"],
    ]
    df = read_transactions(write_csv(tmp_path / "tz.csv", rows))
    assert_schema(df)
    assert df["TRANSACTION_ID"].tolist() == [9, 7, 8]
    assert df["TX_DATETIME"].tolist() == [
        pd.Timestamp("2018-03-31 23:00:00"),
        pd.Timestamp("2018-04-01 00:00:00"),
        pd.Timestamp("2018-04-01 00:30:00"),
    ]
    assert df["TX_TIME_SECONDS"].tolist() == [82_800, 86_400, 88_200]
    assert df["TX_TIME_DAYS"].tolist() == [0, 1, 1]
    # Aware timestamps in a Parquet file are converted the same way.
    frame = raw_frame().assign(TX_DATETIME=raw_frame()["TX_DATETIME"].dt.tz_localize("Europe/Brussels"))
    frame.to_parquet(tmp_path / "tz.parquet", index=False)
    utc = read_transactions(tmp_path / "tz.parquet")["TX_DATETIME"]
    assert utc.iloc[0] == pd.Timestamp("2018-03-31 22:00:31")  # CEST is UTC+2


@pytest.mark.parametrize(
    "fraud",
    [[True, False] * 3, [1.0, 0.0] * 3, ["1", "0"] * 3, pd.array([1, 0] * 3, dtype="Int64")],
    ids=["bool", "float", "str", "nullable-int"],
)
def test_accepted_encodings_of_fraud_and_integer_valued_float_ids(tmp_path: Path, fraud: list[object]) -> None:
    frame = raw_frame().assign(TX_FRAUD=fraud, CUSTOMER_ID=lambda f: f["CUSTOMER_ID"].astype(float))
    frame.to_parquet(tmp_path / "tx.parquet", index=False)
    df = read_transactions(tmp_path / "tx.parquet")
    assert_schema(df)
    assert df.set_index("TRANSACTION_ID")["TX_FRAUD"].to_dict() == {0: 0, 1: 1, 2: 1, 3: 1, 4: 0, 5: 0}
    assert df["CUSTOMER_ID"].tolist() == [11, 10, 11, 10, 12, 12]


def with_value(row: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in ROWS]
    rows[row][HANDBOOK.index(column)] = value
    return rows


BAD = {
    "datetime-null": ("TX_DATETIME", with_value(3, "TX_DATETIME", ""), [3]),
    "datetime-garbage": ("TX_DATETIME", with_value(2, "TX_DATETIME", "yesterday"), [2]),
    "datetime-out-of-range": ("TX_DATETIME", with_value(4, "TX_DATETIME", "2300-01-01"), [4]),
    "duplicated-id": ("TRANSACTION_ID", with_value(4, "TRANSACTION_ID", "0"), [1, 4]),
    "amount-text": ("TX_AMOUNT", with_value(2, "TX_AMOUNT", "twelve"), [2]),
    "amount-nan": ("TX_AMOUNT", with_value(1, "TX_AMOUNT", "nan"), [1]),
    "amount-empty": ("TX_AMOUNT", with_value(5, "TX_AMOUNT", ""), [5]),
    "amount-inf": ("TX_AMOUNT", with_value(3, "TX_AMOUNT", "inf"), [3]),
    "amount-negative": ("TX_AMOUNT", with_value(5, "TX_AMOUNT", "-1.5"), [5]),
    "fraud-two": ("TX_FRAUD", with_value(1, "TX_FRAUD", "2"), [1]),
    "fraud-half": ("TX_FRAUD", with_value(0, "TX_FRAUD", "0.5"), [0]),
    "fraud-text": ("TX_FRAUD", with_value(2, "TX_FRAUD", "yes"), [2]),
    "fraud-null": ("TX_FRAUD", with_value(3, "TX_FRAUD", ""), [3]),
    "transaction-id-null": ("TRANSACTION_ID", with_value(2, "TRANSACTION_ID", ""), [2]),
    "transaction-id-fraction": ("TRANSACTION_ID", with_value(3, "TRANSACTION_ID", "3.5"), [3]),
    "customer-id-null": ("CUSTOMER_ID", with_value(2, "CUSTOMER_ID", ""), [2]),
    "customer-id-strings": ("CUSTOMER_ID", [[*r[:2], f"C{r[2]}", *r[3:]] for r in ROWS], [0, 1, 2, 3, 4, 5]),
    "terminal-id-beyond-int64": ("TERMINAL_ID", with_value(1, "TERMINAL_ID", str(2**63)), [1]),
    "terminal-id-one-string": ("TERMINAL_ID", with_value(4, "TERMINAL_ID", "T7"), [4]),
}


@pytest.mark.parametrize("column, rows, offending", BAD.values(), ids=BAD.keys())
def test_bad_data_is_refused_naming_the_column_and_showing_the_rows(
    tmp_path: Path, column: str, rows: list[list[str]], offending: list[int]
) -> None:
    with pytest.raises(DataError) as caught:
        read_transactions(write_csv(tmp_path / "bad.csv", rows))
    message = str(caught.value)
    assert f"column {column}:" in message
    assert f"{len(offending)} of 6 rows" in message
    table = message.split("\n", 1)[1]
    shown = [int(m) for m in re.findall(r"^(\d+)\s", table, re.M)]
    assert shown == offending[:5]  # the first five at most


def test_fraud_scenario_out_of_range_is_refused(tmp_path: Path) -> None:
    raw_frame().assign(TX_FRAUD_SCENARIO=[0, 0, 0, 300, 0, 0]).to_parquet(tmp_path / "tx.parquet")
    with pytest.raises(DataError, match=r"column TX_FRAUD_SCENARIO: 1 of 6 rows(.|\n)*\n3 "):
        read_transactions(tmp_path / "tx.parquet")


def test_missing_columns_are_all_listed_with_the_columns_found(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tx.csv", [[r[0], r[1], r[4]] for r in ROWS], ["TRANSACTION_ID", "TX_DATETIME", "AMT"])
    with pytest.raises(DataError) as caught:
        read_transactions(path)
    message = str(caught.value)
    assert "['CUSTOMER_ID', 'TERMINAL_ID', 'TX_AMOUNT', 'TX_FRAUD']" in message
    assert "columns found: ['TRANSACTION_ID', 'TX_DATETIME', 'AMT']" in message


def test_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        read_transactions(write_csv(tmp_path / "header.csv", []))
    (tmp_path / "zero.csv").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_transactions(tmp_path / "zero.csv")
    raw_frame().head(0).to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="no rows"):
        read_transactions(tmp_path / "empty.parquet")


def test_unreadable_files_are_refused_without_a_reader_traceback(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot read .*missing\.parquet as Parquet: "):
        read_transactions(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match=r"cannot read .*missing\.csv as CSV: "):
        read_transactions(tmp_path / "missing.csv")
    write_csv(tmp_path / "really-a-csv.parquet")
    with pytest.raises(DataError, match=r"cannot read .*really-a-csv\.parquet as Parquet: "):
        read_transactions(tmp_path / "really-a-csv.parquet")
    (tmp_path / "binary.csv").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match=r"as CSV: "):
        read_transactions(tmp_path / "binary.csv")


def test_unsupported_suffix_is_refused_naming_the_accepted_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tx.json")
    with pytest.raises(DataError, match=r"\.parquet, \.pq, \.csv, \.csv\.gz"):
        read_transactions(path)


def test_ids_that_differ_as_text_but_not_as_integers_are_refused(tmp_path: Path) -> None:
    frame = raw_frame().assign(TRANSACTION_ID=["3", "0", "1", "5", "2", "00"])  # "00" is 0 again
    frame.to_parquet(tmp_path / "tx.parquet")
    with pytest.raises(DataError, match=r"column TRANSACTION_ID: 2 of 6 rows .*once read as integers"):
        read_transactions(tmp_path / "tx.parquet")
