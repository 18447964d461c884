"""Atomic writes and content digests: written once in fusionkit._io, used for every artefact on disk."""
import os

import numpy as np
import pytest

from fusionkit._io import atomic_folder, atomic_write, digest, stream_digest


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    atomic_write(path, "a,b\n")
    atomic_write(path, b"a,b\n1,2\n")
    atomic_write(path.with_suffix(".npy"), lambda handle: np.save(handle, np.arange(3)))
    assert path.read_text() == "a,b\n1,2\n" and np.load(path.with_suffix(".npy")).tolist() == [0, 1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.csv", "table.npy"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "record.json"
    atomic_write(path, "old")

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_written_files_and_folders_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", "x")
        with atomic_folder(tmp_path / "model") as folder:
            (folder / "w").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755


def test_atomic_folder_replaces_the_old_folder_or_leaves_it_on_error(tmp_path):
    with atomic_folder(tmp_path / "m") as folder:
        (folder / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_folder(tmp_path / "m") as folder:
            (folder / "b").write_text("2")
            raise ValueError("interrupted")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_digests_name_content_not_order():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2}) and len(digest({"a": 1})) == 20
    assert digest({"n": np.int64(3)}) == digest({"n": 3})
    assert stream_digest(["ab", "c"]) == stream_digest(["a", "bc"]) != stream_digest(["abd"])
