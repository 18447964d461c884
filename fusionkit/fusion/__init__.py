"""Strategies registered by name: one file per fusion family, one line here per strategy."""
from __future__ import annotations

from fusionkit.errors import ConfigError
from fusionkit.fusion.base import FittedModel, Strategy
from fusionkit.fusion.distill import Distill
from fusionkit.fusion.finetune import Finetune, Lora, Scratch
from fusionkit.fusion.linear_probe import LinearProbe
from fusionkit.fusion.merge import Merge
from fusionkit.fusion.multitask import Multitask
from fusionkit.fusion.representation import RepresentationFusion
from fusionkit.fusion.sequential import Sequential

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in [Scratch, LinearProbe, Finetune, Lora, Sequential, Multitask, RepresentationFusion, Merge, Distill]
}


def get_strategy(name: str, knobs: dict | None = None, **settings) -> Strategy:
    """A strategy by name with a plain dict of its knobs (``settings``: encoder, workdir, device, ...)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; known strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](knobs, **settings)


def load_model(path) -> FittedModel:
    return FittedModel.load(path)


__all__ = ["STRATEGIES", "Strategy", "FittedModel", "get_strategy", "load_model"]
