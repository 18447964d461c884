"""Files on disk: written so that a killed process never leaves half of one, read so that a damaged one is
named (and moved aside to be rebuilt), and named by the digest of their content.

Every artefact fusionkit keeps on disk (run records, cached features, fitted models, tables) is written
through ``atomic_write`` or ``atomic_folder``, and every cache name that stands for content comes from
``digest`` or ``stream_digest``: one way to do each, so a fix or a format change happens in one place.
YAML (profiles, study files, ``-p key=value``) is read by ``parse_yaml``, with numbers as people write them.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np
import yaml

from fusionkit.errors import ConfigError, DataError, FusionkitWarning, InputError

DIGEST_LENGTH = 20  # hex digits: 80 bits, no collision among the runs of any study


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays turn up in configs and scores; keep them as plain JSON numbers and lists.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def to_json(payload: Any, name: str, indent: int | None = None) -> str:
    """``payload`` as JSON with sorted keys (compact unless ``indent``); what cannot be JSON is an InputError."""
    try:
        return json.dumps(payload, sort_keys=True, indent=indent, default=_json_default,
                          separators=None if indent else (",", ":"))
    except TypeError as error:
        raise InputError(f"{name} cannot be stored as JSON: {error}") from None


def digest(payload: Any, length: int = DIGEST_LENGTH, name: str = "payload") -> str:
    """Stable hex digest of a JSON-able payload: dict key order does not matter, any changed value does."""
    return hashlib.sha256(to_json(payload, name).encode("utf-8")).hexdigest()[:length]


def stream_digest(chunks: Iterable[str], length: int = 16) -> str:
    """Hex digest of a sequence of strings fed one by one (texts of a split, rows of a task) without joining them."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk.encode("utf-8"))
    return hasher.hexdigest()[:length]


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable, not just the file's contents.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, content: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``content`` (bytes, text, or a function that writes to a binary handle) to ``path`` atomically.

    The data goes to a hidden ``.<name>.*.tmp`` file in the same folder, is fsynced, then renamed onto
    ``path`` (``os.replace`` is atomic): a reader sees the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o666 & ~_umask())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """``with atomic_folder(p) as tmp:`` fill ``tmp``; on success it replaces ``p`` whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield temp
        _follow_umask(temp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def _follow_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes the user's umask gives new files: mkdtemp makes the folder
    0700 and safetensors writes its files 0600, whatever the umask."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def file_sha256(path: str | Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def read_arrays(path: str | Path, names: tuple[str, ...] = ()) -> np.ndarray | dict[str, np.ndarray]:
    """The array of an ``.npy``, or the arrays ``names`` of an ``.npz``, never unpickling: a missing,
    truncated, garbled or object-holding file is a DataError that says which and why."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' is missing")
    try:
        if path.suffix != ".npz":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as loaded:
            missing = [name for name in names if name not in loaded.files]
            if missing:
                raise DataError(f"'{path}' lacks the array(s) {missing}")
            return {name: loaded[name] for name in names}
    except DataError:
        raise
    except Exception as err:  # zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, ...
        raise DataError(f"'{path}' is damaged ({_plain(err, path)})") from None


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK"
PICKLE_PROTOCOLS = range(2, 6)  # a pickle of protocol 2 to 5 starts with b"\x80" and its protocol number


def _plain(error: Exception, path: Path) -> str:
    # numpy falls back to unpickling whatever is neither .npy nor .npz, and its refusal then suggests
    # allow_pickle=True; fusionkit never loads pickles, so name what the file holds instead.
    if "pickle" in str(error).lower():
        with open(path, "rb") as handle:
            head = handle.read(8)
        if len(head) >= 2 and head[0] == 0x80 and head[1] in PICKLE_PROTOCOLS:
            return "it holds Python objects (a pickle), which fusionkit never loads"
        if head.startswith((NPY_MAGIC, ZIP_MAGIC)):
            return "it holds an array of Python objects (stored as a pickle), which fusionkit never loads"
        if not head:
            return "it is empty"
        return (f"it is neither a .npy nor a .npz file: it starts with bytes {head.hex(' ')}, where a .npy starts "
                f"with {NPY_MAGIC.hex(' ')} and a .npz with {ZIP_MAGIC.hex(' ')}")
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def move_aside(path: str | Path, reason: str) -> Path:
    """Move a damaged file or folder into a ``damaged/`` folder beside it (kept for inspection, never read
    again) and warn, naming it and the reason; the caller then rebuilds it."""
    path = Path(path)
    folder = path.parent / "damaged"
    folder.mkdir(exist_ok=True)
    target = folder / f"{path.name}.{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}"
    os.replace(path, target)
    warnings.warn(f"'{path}' is damaged ({reason}): moved to '{target}' and rebuilt", FusionkitWarning, stacklevel=2)
    return target


def _umask() -> int:
    # mkstemp and mkdtemp create private (600/700) files; what we keep should follow the user's umask.
    current = os.umask(0)
    os.umask(current)
    return current


def shown(value: Any, limit: int = 160) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters: a message names the value at fault, it
    does not repeat a huge one."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def listed(problems: list[str], limit: int = 5) -> str:
    """The first ``limit`` problems joined with "; " and how many more there are: an error names what is wrong,
    it does not list twenty thousand of the same."""
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


class _Loader(yaml.SafeLoader):
    """YAML as people write numbers: ``1e-3`` is a float (PyYAML's YAML 1.1 needs ``1.0e-3``). A study is a few
    fields written out: an alias (``*name``) is refused, since nested aliases expand a small file into gigabytes,
    and so is a key given twice in one mapping, since the last one would silently win."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} is not allowed (write the value out where it is used)",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) or key is None:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key!r} is given twice in one mapping (first {seen[key]}); give it once",
                            key_node.start_mark)
                    seen[key] = f"line {key_node.start_mark.line + 1}"
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def parse_yaml(text: str, where: str):
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where} is not valid YAML ({error})") from None


def read_yaml(path: str | Path, what: str = "file") -> dict:
    """A YAML mapping from a file (``1e-3`` read as a number), or a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' not found")
    data = parse_yaml(path.read_text(encoding="utf-8"), f"{what} '{path}'")
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must be a mapping of fields (name: value), got {type(data).__name__}")
    return data
