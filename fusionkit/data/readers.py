"""Readers for the raw files behind a task: `LABEL TEXT` lines and user tables.

Each reader returns plain lists plus a record of what it did (encoding used,
rows dropped and why), and raises a ``DataError`` naming file, line and problem.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from fusionkit.errors import DataError

# Tried in order when the encoding is "auto". Windows-1252 before Latin-1: in it
# 0x85 is '…', whereas Latin-1 maps it to NEL, a line break for str.splitlines().
AUTO_ENCODINGS = ("utf-8", "cp1252", "latin-1")


@dataclass
class RawRows:
    """Texts and labels read from one file, with a log of what reading did."""

    path: Path
    texts: list[str]
    labels: list
    line_numbers: list[int]
    encoding: str = "utf-8"
    dropped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    unit: str = "line"  # what line_numbers count: lines of a text file, "row"s of a parquet or JSON table
    # knowledge source name -> one float vector per kept row (read_table_file's knowledge_columns)
    knowledge: dict[str, list] = field(default_factory=dict)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"file '{path}' not found")
    if not path.is_file():
        raise DataError(f"'{path}' is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"file '{path}' is empty")


def _decode_lines(path: Path, encoding: str) -> tuple[list[str], str]:
    """Split on b'\\n' *before* decoding, so no encoding's idea of a line break can shift rows."""
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    candidates = AUTO_ENCODINGS if encoding == "auto" else (encoding,)
    for candidate in candidates:
        try:
            return [line.rstrip(b"\r").decode(candidate) for line in raw_lines], candidate
        except UnicodeDecodeError:
            continue
        except LookupError:
            raise DataError(f"file '{path}': unknown encoding '{encoding}'") from None
    # Only a forced encoding gets here (latin-1 decodes every byte).
    raise _undecodable(path, raw_lines, encoding)


def _undecodable(path: Path, raw_lines: list[bytes], encoding: str) -> DataError:
    """The error for the first line that does not decode, naming its line, column and byte."""
    for line_no, line in enumerate(raw_lines, start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as err:
            bad = line[err.start : err.start + 1].hex()
            return DataError(
                f"file '{path}', line {line_no}: byte 0x{bad} at column {err.start + 1} "
                f"cannot be decoded as {encoding}"
            )
    return DataError(f"file '{path}' cannot be decoded as {encoding}")


def _detect_encoding(path: Path) -> str:
    """The first of AUTO_ENCODINGS that decodes the whole file (latin-1 always does)."""
    data = path.read_bytes()
    for candidate in AUTO_ENCODINGS:
        try:
            data.decode(candidate)
            return candidate
        except UnicodeDecodeError:
            continue
    return AUTO_ENCODINGS[-1]


def read_label_text_file(path: str | Path, encoding: str = "auto") -> RawRows:
    """Read a SentEval-style file: one example per line, `LABEL<space>TEXT`, LABEL an integer."""
    path = Path(path)
    _require_file(path)
    lines, used = _decode_lines(path, encoding)
    rows = RawRows(path=path, texts=[], labels=[], line_numbers=[], encoding=used)
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            rows.dropped.append((line_no, "blank line"))
            continue
        label_str, _, text = line.strip().partition(" ")
        try:
            label = int(label_str)
        except ValueError:
            raise DataError(
                f"file '{path}', line {line_no}: label '{label_str}' is not an integer"
            ) from None
        text = text.strip()
        if not text:
            rows.dropped.append((line_no, "label without text"))
            continue
        rows.texts.append(text)
        rows.labels.append(label)
        rows.line_numbers.append(line_no)
    if not rows.texts:
        raise DataError(f"file '{path}' has no usable rows ({len(lines)} lines, none with a label and text)")
    return rows


def _read_table(path: Path, encoding: str):
    import pandas as pd

    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    # "auto" detects like the LABEL TEXT reader does (a Windows-1252 CSV is common); gzip stays utf-8.
    if encoding != "auto":
        enc = encoding
    else:
        enc = "utf-8" if suffix.endswith(".gz") or suffix == ".parquet" else _detect_encoding(path)
    try:
        if suffix in (".csv", ".csv.gz"):
            return pd.read_csv(path, encoding=enc, keep_default_na=False), 2, enc
        if suffix in (".tsv", ".tsv.gz"):
            return pd.read_csv(path, sep="\t", encoding=enc, keep_default_na=False), 2, enc
        if suffix in (".jsonl", ".jsonl.gz"):
            return _read_jsonl(path, enc), 1, enc
        if suffix == ".json":
            return pd.read_json(path, encoding=enc), 1, enc
        if suffix == ".parquet":
            return pd.read_parquet(path), 1, "parquet"
    except UnicodeDecodeError:
        # pandas reports an offset inside its read buffer, not in the file: find the line ourselves.
        if suffix.endswith(".gz"):
            raise DataError(f"file '{path}' cannot be decoded as {enc}") from None
        raise _undecodable(path, path.read_bytes().split(b"\n"), enc) from None
    except (ValueError, json.JSONDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"file '{path}' cannot be parsed as {suffix[1:]}: {err}") from None
    except Exception as err:  # pyarrow and friends raise their own types
        raise DataError(f"file '{path}' cannot be read: {err}") from None
    raise DataError(f"file '{path}': unsupported format '{suffix}' (use .csv, .tsv, .jsonl or .parquet)")


def _read_jsonl(path: Path, encoding: str):
    """One JSON object per line, read line by line so an error names its line (pandas names a byte offset)."""
    import gzip

    import pandas as pd

    opener = gzip.open if path.suffix == ".gz" else open
    records, lines = [], []
    with opener(path, "rt", encoding=encoding) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"file '{path}', line {line_no}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"file '{path}', line {line_no}: a JSON object is needed, got {type(record).__name__}")
            records.append(record)
            lines.append(line_no)
    frame = pd.DataFrame.from_records(records)
    frame.attrs["lines"] = lines  # blank lines are skipped: row i came from line lines[i]
    return frame


# Cells that mean "no label" in the files people export from pandas, R, spreadsheets and databases.
MISSING_LABELS = frozenset({"", "nan", "na", "none", "null"})


def _is_missing(label) -> bool:
    if label is None or (isinstance(label, float) and label != label):
        return True
    return isinstance(label, str) and label.strip().lower() in MISSING_LABELS


def _numbers(cell, path: Path, at: str, column: str) -> list[float]:
    """A knowledge cell as floats: a number, or a vector (a list in JSONL/parquet, a JSON list in CSV/TSV)."""
    value = cell
    if isinstance(cell, str):
        try:
            value = json.loads(cell) if cell.strip() else None
        except json.JSONDecodeError:
            value = cell
    if hasattr(value, "tolist"):
        value = value.tolist()
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item != item or abs(item) == float("inf"):
            what = "missing" if _is_missing(item) or value is None else f"not a number ({item!r})"
            raise DataError(f"file '{path}', {at}: knowledge column '{column}' is {what}; every row needs "
                            f"a number (or a list of numbers) there")
    if not values:
        raise DataError(f"file '{path}', {at}: knowledge column '{column}' holds an empty list")
    return [float(item) for item in values]


def _knowledge_vector(row: dict, columns: list[str], path: Path, at: str) -> list[float]:
    vector = []
    for column in columns:
        vector += _numbers(row[column], path, at, column)
    return vector


def read_table_file(
    path: str | Path, text_column: str = "text", label_column: str = "label", encoding: str = "auto",
    knowledge_columns: dict[str, list[str]] | None = None,
) -> RawRows:
    """Read a CSV, TSV, JSONL or parquet file with a text and a label column.

    Rows with an empty text or a missing label (blank, NaN, NA, None, null in any case) are dropped and
    recorded; labels stay as read (numbers or strings) so the caller can map them consistently across splits.
    A label that is not a single value (a list in a parquet cell) is a DataError naming its line.

    ``knowledge_columns`` (source name -> columns) reads knowledge features: numeric columns, or one column
    holding a vector per row, concatenated in the order given. A missing or non-numeric value, or a vector
    whose width differs from the first row's, is a DataError naming the file, line and column.
    """
    path = Path(path)
    _require_file(path)
    frame, first_line, used = _read_table(path, encoding)
    knowledge_columns = knowledge_columns or {}
    for column in (text_column, label_column, *(c for columns in knowledge_columns.values() for c in columns)):
        if column not in frame.columns:
            raise DataError(f"file '{path}': no column '{column}'; its columns are {list(frame.columns)}")
    # A parquet or JSON table has no lines: its rows are counted from 1.
    unit = "row" if path.suffix in (".parquet", ".json") else "line"
    rows = RawRows(path=path, texts=[], labels=[], line_numbers=[], encoding=used,
                   knowledge={name: [] for name in knowledge_columns}, unit=unit)
    records = frame[[c for columns in knowledge_columns.values() for c in columns]].to_dict("records") \
        if knowledge_columns else None
    for index, (text, label) in enumerate(zip(frame[text_column], frame[label_column])):
        line_no = frame.attrs["lines"][index] if "lines" in frame.attrs else index + first_line
        if not isinstance(label, (str, int, float, bool)) and not hasattr(label, "dtype"):
            raise DataError(f"file '{path}', {unit} {line_no}: label {label!r} in column '{label_column}' is not a "
                            f"single value (a {type(label).__name__})")
        if getattr(label, "ndim", 0):
            raise DataError(f"file '{path}', {unit} {line_no}: label {label!r} in column '{label_column}' is not a "
                            f"single value (an array)")
        if _is_missing(label):
            rows.dropped.append((line_no, "missing label"))
            continue
        if not isinstance(text, str) or not text.strip():
            rows.dropped.append((line_no, "missing text"))
            continue
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        for name, columns in knowledge_columns.items():
            vector, kept = _knowledge_vector(records[index], columns, path, f"{unit} {line_no}"), rows.knowledge[name]
            if kept and len(vector) != len(kept[0]):
                raise DataError(f"file '{path}', {unit} {line_no}: knowledge column(s) {', '.join(columns)} hold "
                                f"{len(vector)} numbers where the first row has {len(kept[0])}")
            kept.append(vector)
        rows.texts.append(text.strip())
        rows.labels.append(label)
        rows.line_numbers.append(line_no)
    if not rows.texts:
        raise DataError(f"file '{path}' has no usable rows ({len(frame)} rows, none with both text and label)")
    return rows
