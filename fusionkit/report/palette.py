"""How report figures look: a fixed colour per system (a hue per strategy family, a shade per variant, from a
colour-blind-safe palette) and each column's axis label in words with its unit, in one place for every figure."""
from __future__ import annotations

import colorsys
import re
from itertools import cycle
from typing import Iterable, Mapping

import numpy as np
import seaborn as sns
from matplotlib.colors import to_hex, to_rgb

from fusionkit.errors import InputError

# seaborn's "colorblind" palette (Okabe and Ito's colours, told apart with the common colour-vision deficiencies):
# one hue per strategy family. Its yellow is darkened to read as a line on white; its light blue goes to families
# not named here, since as a family's own hue it would pass for a light shade of sequential's blue.
PALETTE = sns.color_palette("colorblind")
FAMILY_COLORS = {"sequential": PALETTE[0], "representation": PALETTE[1], "merge": PALETTE[2], "distill": PALETTE[3],
                 "multitask": PALETTE[4], "lora": PALETTE[5], "scratch": PALETTE[6], "finetune": PALETTE[7],
                 "linear_probe": sns.set_hls_values(PALETTE[8], l=0.4)}
OTHER_FAMILY_COLOR = PALETTE[9]
# A family's variants after the first: its colour made darker and lighter in turn (HLS lightness), skipping a
# step that lands within _MIN_SHADE_GAP of a shade already taken; past the last step the shades repeat.
_SHADE_STEPS = (-0.15, 0.15, -0.28, 0.28, -0.08, 0.08, -0.22, 0.22)
_LIGHTNESS_RANGE, _MIN_SHADE_GAP = (0.15, 0.85), 0.06

# Each column a figure may put on an axis, in words, with its unit (None: a count or a score without one).
COLUMN_LABELS = {"accuracy": ("Accuracy", "fraction correct"), "macro_f1": ("Macro F1", "0-1"),
                 "mcc": ("Matthews correlation", "-1 to 1"), "ece": ("Expected calibration error", "fraction"),
                 "nll": ("Negative log-likelihood", "nats per example"), "brier": ("Brier score", None),
                 "train_seconds": ("Training time", "s"), "expert_seconds": ("Experts' training time", "s"),
                 "train_seconds_with_experts": ("Training time, experts included", "s"),
                 "train_seconds_amortised": ("Training time, experts shared among runs", "s"),
                 "trainable_params": ("Trainable parameters", None),
                 "infer_ms_per_example": ("Inference time", "ms per example"), "model_flops": ("Model FLOPs", None),
                 "train_size": ("Target training examples", None), "logme": ("LogME", None),
                 "hscore": ("H-score", None), "leep": ("LEEP", None), "nce": ("NCE", None),
                 "textemb": ("Text-embedding similarity", "cosine")}


def axis_label(column: str, scale: str | None = None) -> str:
    """A column as an axis label with its unit and scale, e.g. axis_label("train_seconds", "log scale") ->
    "Training time (s, log scale)"; a column not in COLUMN_LABELS is written out in words."""
    name, unit = COLUMN_LABELS.get(column, (column_name(column), None))
    details = ", ".join(detail for detail in (unit, scale) if detail)
    return f"{name} ({details})" if details else name


def column_name(column: str) -> str:
    """What a column is, in words, without its unit: "train_seconds" -> "Training time"."""
    return COLUMN_LABELS[column][0] if column in COLUMN_LABELS else column.replace("_", " ").capitalize()


def system_family(system: str) -> str:
    """The strategy a system's name starts with: "sequential (mr): no source" -> "sequential"."""
    match = re.match(r"[^\s(:]+", str(system).strip())
    return match.group(0) if match else str(system)


def system_colors(systems: Iterable[str]) -> dict[str, str]:
    """A fixed colour per system: its family's hue (FAMILY_COLORS) and a shade per variant, the variants sorted by
    name with controls and ablations ("<system>: ...") last, so adding them changes no system's colour. Pass every
    system of a report, so that a figure drawing a few of them keeps each one's colour."""
    by_family: dict[str | None, list[str]] = {}
    for system in sorted({str(system) for system in systems}, key=lambda name: (":" in name, name)):
        family = system_family(system)
        by_family.setdefault(family if family in FAMILY_COLORS else None, []).append(system)
    colors = {}
    for family, members in by_family.items():
        colors.update(zip(members, _shades(FAMILY_COLORS.get(family, OTHER_FAMILY_COLOR), len(members))))
    return colors


def _shades(color, count: int) -> list[str]:
    hue, lightness, saturation = colorsys.rgb_to_hls(*to_rgb(color))
    levels = [lightness]
    for step in _SHADE_STEPS:
        level = float(np.clip(lightness + step, *_LIGHTNESS_RANGE))
        if all(abs(level - taken) >= _MIN_SHADE_GAP for taken in levels):
            levels.append(level)
    return [to_hex(colorsys.hls_to_rgb(hue, level, saturation)) for level, _ in zip(cycle(levels), range(count))]


def colors_for(names: Iterable[str], colors: Mapping[str, str] | None) -> Mapping[str, str]:
    """``colors`` (checked to have one for each of ``names``), or by default ``system_colors(names)``."""
    names = [str(name) for name in names]
    if colors is None:
        return system_colors(names)
    missing = sorted(set(names) - set(colors))
    if missing:
        raise InputError(f"colors has no colour for {missing}; it has {sorted(colors)} (system_colors of every "
                         f"system of the report gives one to each)")
    return colors


def category_colors(names: Iterable) -> dict:
    """Colour-blind-safe colours for things that are not systems (labels, tasks, sources), in the given order."""
    return dict(zip(list(dict.fromkeys(names)), cycle(PALETTE)))
