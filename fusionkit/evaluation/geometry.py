"""The geometry of the experts: how their task vectors (expert weights minus base weights) relate.

Cosine similarity between two sources' task vectors, over every weight and per encoder layer (Ilharco et al. 2023,
"Editing Models with Task Arithmetic", find task vectors of different tasks nearly orthogonal), and the sign-conflict
rate TIES resolves (Yadav et al. 2023, "TIES-Merging"): after each vector keeps its top ``density`` share of
entries by magnitude, the share of the entries kept by two or more vectors whose kept signs disagree. Task vectors
as dicts of numpy arrays in (``strategies.task_vectors`` makes them as tensors: ``.numpy()`` each), numbers out.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fusionkit.errors import InputError

LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")  # BERT-style encoders: encoder.layer.<i>.


def _flat(vector: dict, keys: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(vector[key], dtype=np.float64).ravel() for key in keys])


def _common_keys(vectors: Sequence[dict], names: Sequence[str]) -> list[str]:
    if len(vectors) != len(names) or len(vectors) < 2:
        raise InputError(f"need at least 2 task vectors, each with a name; got {len(vectors)} and {len(names)} names")
    keys = sorted(set.intersection(*(set(v) for v in vectors)))
    if not keys:
        raise InputError(f"the task vectors of {list(names)} share no weight")
    for key in keys:
        shapes = {tuple(np.shape(v[key])) for v in vectors}
        if len(shapes) > 1:
            raise InputError(f"weight {key!r} has different shapes in the task vectors: {sorted(shapes)}")
    return keys


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else float("nan")


def task_vector_cosines(vectors: Sequence[dict], names: Sequence[str]) -> pd.DataFrame:
    """Cosine similarity of every pair of task vectors over every weight they share (a names x names table)."""
    keys = _common_keys(vectors, names)
    flat = [_flat(v, keys) for v in vectors]
    values = np.array([[_cosine(a, b) for b in flat] for a in flat])
    return pd.DataFrame(values, index=list(names), columns=list(names))


def layer_cosines(vectors: Sequence[dict], names: Sequence[str]) -> pd.DataFrame:
    """The same per encoder layer (weights named ``...layer.<i>....``): long, one row per pair and layer."""
    keys = _common_keys(vectors, names)
    by_layer: dict[int, list[str]] = {}
    for key in keys:
        match = LAYER.search(key)
        if match:
            by_layer.setdefault(int(match.group(1)), []).append(key)
    rows = []
    for layer, layer_keys in sorted(by_layer.items()):
        flat = [_flat(v, layer_keys) for v in vectors]
        rows += [{"source_a": names[i], "source_b": names[j], "layer": layer, "cosine": _cosine(flat[i], flat[j])}
                 for i in range(len(names)) for j in range(i + 1, len(names))]
    return pd.DataFrame(rows, columns=["source_a", "source_b", "layer", "cosine"])


def sign_conflict_rate(vectors: Sequence[dict], names: Sequence[str], density: float = 0.2) -> float:
    """TIES's sign conflicts: each vector trimmed to its top ``density`` share of entries by magnitude (per weight,
    as ``task_vectors.ties`` trims), then among the entries two or more vectors keep, the share whose kept signs
    are not all the same."""
    if not 0 < density <= 1:
        raise InputError(f"density must be in (0, 1], got {density!r}")
    keys = _common_keys(vectors, names)
    conflicts = overlapping = 0
    for key in keys:
        stacked = np.stack([np.asarray(v[key], dtype=np.float64).ravel() for v in vectors])
        k = max(1, int(density * stacked.shape[1]))
        # the top k by magnitude, the first of equal magnitudes first (as torch.topk keeps them)
        top = np.argsort(-np.abs(stacked), axis=1, kind="stable")[:, :k]
        kept = np.zeros_like(stacked, dtype=bool)
        np.put_along_axis(kept, top, True, axis=1)
        signs = np.where(kept, np.sign(stacked), 0.0)
        several = (signs != 0).sum(axis=0) >= 2
        mixed = (signs > 0).any(axis=0) & (signs < 0).any(axis=0)
        overlapping += int(several.sum())
        conflicts += int((several & mixed).sum())
    return conflicts / overlapping if overlapping else float("nan")
