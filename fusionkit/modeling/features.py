"""On-disk cache of frozen-encoder features, so linear probes and fusion heads never re-encode.

Key: (encoder fingerprint, task, split, content hash of the texts, pooling, max length, layer set).
Any change to one of them is a different file. Files are ``.npy`` (loaded without pickle) and are
written to a temporary name and renamed, so a killed run leaves no half-written cache entry; a damaged
one (truncated, garbled, the wrong number of rows) is moved to ``damaged/`` with a warning and recomputed.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fusionkit._io import atomic_write, digest, move_aside, read_arrays, stream_digest
from fusionkit.errors import DataError
from fusionkit.modeling.encoders import Encoder


def default_cache_dir() -> Path:
    return Path(os.environ.get("FUSIONKIT_CACHE", Path.home() / ".cache" / "fusionkit"))


def texts_hash(texts) -> str:
    return stream_digest(chunk for text in texts for chunk in (text, "\0"))


class FeatureCache:
    """``cache.features(encoder, texts, task="cr", split="train", layers=[...])`` -> cached array."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir() / "features"
        self.hits = 0
        self.misses = 0

    def key(self, encoder: Encoder, texts, task: str, split: str, layers: list[int] | None = None) -> str:
        parts = {"encoder": encoder.fingerprint(), "task": task, "split": split, "texts": texts_hash(texts),
                 "pooling": encoder.pooling, "max_length": encoder.max_length,
                 "layers": None if layers is None else [int(x) for x in layers]}
        return f"{task}-{split}-{digest(parts)}"

    def features(self, encoder: Encoder, texts, task: str, split: str, layers: list[int] | None = None,
                 batch_size: int = 64) -> np.ndarray:
        texts = list(texts)
        path = self.root / f"{self.key(encoder, texts, task, split, layers)}.npy"
        if path.is_file():
            try:
                array = read_arrays(path)
                if array.shape[:1] != (len(texts),):
                    raise DataError(f"'{path}' holds {array.shape[0]} rows for {len(texts)} texts")
                self.hits += 1
                return array
            except DataError as error:
                move_aside(path, str(error))
        self.misses += 1
        array = encoder.encode(texts, batch_size=batch_size, layers=layers)
        atomic_write(path, lambda handle: np.save(handle, array))
        return array

    def task_features(self, encoder: Encoder, task, layers: list[int] | None = None,
                      name: str | None = None) -> dict[str, np.ndarray]:
        """Features of the train, validation and test splits of a task (cached under ``name``, default its name)."""
        return {split: self.features(encoder, data["text"][:], name or task.name, split, layers)
                for split, data in task.splits.items()}
