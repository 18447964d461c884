"""The file readers: real SentEval files read row for row (Windows-1252, dropped rows), bad files named precisely."""
import pytest

from fusionkit.errors import DataError, FusionkitError
from fusionkit.data.readers import read_label_text_file, read_table_file

# (file, line) -> (label, exact decoded text): real rows with 'é', 'ñ', 'ð' and '…' (byte 0x85 in Windows-1252).
REAL_ROWS = {
    ("rt-polarity.all", 32): (0, "the action clich\xe9s just pile up ."),
    ("rt-polarity.all", 474): (0, "\u2026the maudlin way its story unfolds suggests a director fighting against "
                                  "the urge to sensationalize his material ."),
    ("rt-polarity.all", 815): (0, "this overproduced piece of dreck is shockingly bad and absolutely unnecessary . "
                                  "hmmm\u2026might i suggest that the wayward wooden one end it all by stuffing "
                                  "himself into an electric pencil sharpener ?"),
    ("subj.all", 21): (0, "si el siglo xxi necesita de h\xe9roes , el hombre ara\xf1a parece haber llegado para quedarse ."),
    ("subj.all", 140): (0, "even if the world doesn't see things the way [michael moore] does , his questions are "
                           "worth asking . \u2026 and bowling for columbine benefits from his iconoclastic zeal ."),
    # TREC.train.all has neither 'é' nor 0x85: its one non-ASCII byte is 0xF0, 'ð' in Windows-1252.
    ("TREC.train.all", 66): (4, "Which city has the oldest relationship as a sister\xf0city with Los Angeles ?"),
}


@pytest.fixture(scope="module")
def real(data_dir):
    """Every real LABEL TEXT file, read once."""
    names = ["rt-polarity.all", "subj.all", "custrev.all", "TREC.train.all", "TREC.test.all",
             "stsa.binary.train", "stsa.binary.dev", "stsa.binary.test"]
    return {name: read_label_text_file(data_dir / name) for name in names}


@pytest.mark.parametrize("name, rows", [("rt-polarity.all", 10662), ("subj.all", 10000), ("TREC.train.all", 5452),
                                        ("TREC.test.all", 500), ("custrev.all", 3771)])
def test_real_row_counts(real, name, rows):
    assert len(real[name].texts) == len(real[name].labels) == rows


@pytest.mark.parametrize("name", ["rt-polarity.all", "subj.all", "TREC.train.all"])
def test_windows_1252_files_are_detected_as_such(real, name):
    assert real[name].encoding == "cp1252"


@pytest.mark.parametrize("key", list(REAL_ROWS), ids=[f"{f}:{line}" for f, line in REAL_ROWS])
def test_real_accented_and_ellipsis_rows_decode_exactly(real, key):
    name, line = key
    rows = real[name]
    index = rows.line_numbers.index(line)
    assert (rows.labels[index], rows.texts[index]) == REAL_ROWS[key]


def test_no_text_keeps_a_nel_replacement_or_control_character(real):
    for name, rows in real.items():
        for line, text in zip(rows.line_numbers, rows.texts):
            assert "\x85" not in text and "\ufffd" not in text, (name, line)
            assert not any(ord(c) < 32 for c in text), (name, line)


def test_cr_drops_exactly_the_four_rows_without_text(real):
    assert real["custrev.all"].dropped == [(769, "label without text"), (1368, "label without text"),
                                           (3691, "label without text"), (3775, "label without text")]


def test_latin1_would_have_split_rows_on_0x85(data_dir):
    """The reason for splitting on bytes: str.splitlines() under Latin-1 changes MR's row count."""
    naive = (data_dir / "rt-polarity.all").read_bytes().decode("latin-1").splitlines()
    assert len(naive) > 10662


# ----- bad LABEL TEXT files -----

def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"file '.*nope\.all' not found"):
        read_label_text_file(tmp_path / "nope.all")


def test_folder_instead_of_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"'.*' is not a file"):
        read_label_text_file(tmp_path)


def test_empty_file_is_named(tmp_path):
    (tmp_path / "e.all").write_bytes(b"")
    with pytest.raises(DataError, match=r"file '.*e\.all' is empty"):
        read_label_text_file(tmp_path / "e.all")


def test_non_integer_label_names_file_line_and_label(tmp_path):
    (tmp_path / "x.all").write_text("0 fine\n1 also fine\npos not fine\n")
    with pytest.raises(DataError, match=r"file '.*x\.all', line 3: label 'pos' is not an integer"):
        read_label_text_file(tmp_path / "x.all")


def test_file_of_labels_without_text_has_no_usable_rows(tmp_path):
    (tmp_path / "x.all").write_text("0\n1 \n\n")
    with pytest.raises(DataError, match=r"file '.*x\.all' has no usable rows"):
        read_label_text_file(tmp_path / "x.all")


def test_blank_lines_are_dropped_and_recorded(tmp_path):
    (tmp_path / "x.all").write_text("0 a\n\n1 b\n")
    rows = read_label_text_file(tmp_path / "x.all")
    assert rows.texts == ["a", "b"] and rows.line_numbers == [1, 3] and rows.dropped == [(2, "blank line")]


def test_forced_utf8_on_windows_1252_bytes_names_line_column_and_byte(tmp_path):
    (tmp_path / "x.all").write_bytes("0 plain\n1 caf\xe9 au lait\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"file '.*x\.all', line 2: byte 0xe9 at column 6 cannot be decoded as utf-8"):
        read_label_text_file(tmp_path / "x.all", encoding="utf-8")


def test_unknown_encoding_is_named(tmp_path):
    (tmp_path / "x.all").write_text("0 a\n")
    with pytest.raises(DataError, match=r"unknown encoding 'klingon'"):
        read_label_text_file(tmp_path / "x.all", encoding="klingon")


def test_crlf_line_endings_leave_no_carriage_return(tmp_path):
    (tmp_path / "x.all").write_bytes(b"0 a b\r\n1 c\r\n")
    assert read_label_text_file(tmp_path / "x.all").texts == ["a b", "c"]


# ----- bad tables -----

def test_table_missing_column_lists_the_columns(tmp_path):
    (tmp_path / "t.csv").write_text("sentence,label\nhello,0\n")
    with pytest.raises(DataError, match=r"file '.*t\.csv': no column 'text'; its columns are \['sentence', 'label'\]"):
        read_table_file(tmp_path / "t.csv")


def test_table_forced_encoding_names_the_file_line(tmp_path):
    (tmp_path / "t.csv").write_bytes("text,label\nplain,0\ncaf\xe9,1\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"file '.*t\.csv', line 3: byte 0xe9 at column 4 cannot be decoded as utf-8"):
        read_table_file(tmp_path / "t.csv", encoding="utf-8")


def test_table_in_windows_1252_decodes_under_auto(tmp_path):
    (tmp_path / "t.csv").write_bytes("text,label\ncaf\xe9\x85,1\n".encode("latin-1"))
    rows = read_table_file(tmp_path / "t.csv")
    assert rows.texts == ["caf\xe9\u2026"] and rows.encoding == "cp1252"


def test_unsupported_table_format_is_named(tmp_path):
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(FusionkitError, match=r"file '.*t\.xlsx': unsupported format '\.xlsx'"):
        read_table_file(tmp_path / "t.xlsx")


def test_malformed_csv_is_a_fusionkit_error_naming_the_file(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,0\nb,1,2,3\n")
    with pytest.raises(DataError, match=r"file '.*t\.csv' cannot be parsed as csv: .*line 3"):
        read_table_file(tmp_path / "t.csv")


def test_table_rows_without_text_or_label_are_dropped_with_their_line(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\na,0\n,1\nb,\nc,1\n")
    rows = read_table_file(tmp_path / "t.csv")
    assert rows.texts == ["a", "c"] and rows.dropped == [(3, "missing text"), (4, "missing label")]


def test_jsonl_errors_name_the_line_not_a_byte_offset(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n{"text": "c", label: 1}\n')
    with pytest.raises(DataError, match=r"file '.*t\.jsonl', line 4: not valid JSON \(.* at column 15\)"):
        read_table_file(tmp_path / "t.jsonl")
    (tmp_path / "ok.jsonl").write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": null}\n')
    assert read_table_file(tmp_path / "ok.jsonl").dropped == [(3, "missing label")]  # line 3, past a blank line


def test_a_list_valued_label_is_named_with_its_line(tmp_path):
    import pandas as pd

    pd.DataFrame({"text": ["a", "b"], "label": [[0], [1, 0]]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"file '.*t\.parquet', row 1: label .* in column 'label' is not a single "
                                        r"value"):
        read_table_file(tmp_path / "t.parquet")
