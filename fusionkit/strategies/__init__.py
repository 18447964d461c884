"""Strategies: how knowledge is fused into the encoder, one file per family, all behind ``fit -> FittedModel``.

Owns the strategy registry, the shared base (``Strategy``, ``FittedModel``, ``Artefact``), source experts,
and ``task_vectors`` (merging as pure arithmetic on state dicts). A strategy declares what it needs fitted
first (experts, teachers) and never refers to another strategy by its registered name.
May import: ``fusionkit.errors``, ``fusionkit._io``, ``fusionkit.data``, ``fusionkit.modeling``.

A new strategy is one new file with a ``Strategy`` subclass that sets ``name`` (defining it registers it)
and one import line below.
"""
from __future__ import annotations

from fusionkit.errors import ConfigError
from fusionkit.strategies.adapter_fusion import AdapterFusion
from fusionkit.strategies.base import Artefact, FittedModel, Strategy
from fusionkit.strategies.distill import Distill
from fusionkit.strategies.ensemble import SeedEnsemble
from fusionkit.strategies.finetune import Adapter, Finetune, Lora, Scratch
from fusionkit.strategies.linear_probe import LinearProbe
from fusionkit.strategies.merge import Merge
from fusionkit.strategies.multitask import Multitask
from fusionkit.strategies.representation import RepresentationFusion
from fusionkit.strategies.sequential import Sequential
from fusionkit.strategies.setfit_baseline import SetFit

STRATEGIES: dict[str, type[Strategy]] = Strategy.registry


def get_strategy(name: str, knobs: dict | None = None, **settings) -> Strategy:
    """A strategy by name with a plain dict of its knobs (``settings``: encoder, workdir, device, ...)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy '{name}'; known strategies: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](knobs, **settings)


__all__ = ["STRATEGIES", "Strategy", "FittedModel", "Artefact", "get_strategy", "Adapter", "AdapterFusion",
           "Distill", "Finetune", "Lora",
           "Scratch", "LinearProbe", "Merge", "Multitask", "RepresentationFusion", "Sequential", "SetFit",
           "SeedEnsemble"]
