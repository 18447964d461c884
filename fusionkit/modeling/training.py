"""The one training loop every strategy calls.

AdamW with linear warmup and decay, length-grouped batches with dynamic padding, gradient
accumulation, bf16 autocast on CUDA (fp32 on CPU), gradient clipping, early stopping on the
validation metric with the best weights restored, deterministic seeding, and a tqdm bar.
A strategy supplies the examples, how to collate them and how to compute the loss.
"""
from __future__ import annotations

import copy
import math
import random
import time
import typing
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import pydantic
import torch

from fusionkit.errors import ConfigError, TrainingError


class Knobs:
    """Mixin for a dataclass of knobs, built from one flat dict with unknown names rejected by name.

    A field whose default is itself a ``Knobs`` (a *group*, e.g. the training loop's knobs inside a strategy's)
    takes its own names from the same flat dict: groups compose knobs without inheritance, and users and run
    records still see one flat dict. ``to_dict`` flattens the same way.
    """

    # Knobs added after runs were stored, each with the value that does what those runs did: a study leaves such a
    # knob out of a run's key while it has that value (``study.runner.resolved_knobs``), so stored runs keep theirs.
    ADDED: typing.ClassVar[dict] = {}

    @classmethod
    def _groups(cls) -> dict[str, "Knobs"]:
        return {f.name: f.default_factory() for f in fields(cls)
                if f.default_factory is not MISSING and isinstance(f.default_factory(), Knobs)}

    @classmethod
    def knob_names(cls) -> set[str]:
        groups = cls._groups()
        own = {f.name for f in fields(cls)} - set(groups)
        return own.union(*(type(group).knob_names() for group in groups.values()))

    @classmethod
    def from_knobs(cls, knobs: dict):
        """Unknown names are a ConfigError listing the known ones; a value of the wrong type (pydantic's strict
        check of the field's annotation: no "3" for an int, no 1 for a bool) is one naming the knob."""
        names = cls.knob_names()
        unknown = sorted(set(knobs) - names)
        if unknown:
            raise ConfigError(f"unknown knob(s) {unknown}; known: {sorted(names)}")
        groups = {name: group.with_knobs({k: v for k, v in knobs.items() if k in type(group).knob_names()})
                  for name, group in cls._groups().items()}
        own = {k: v for k, v in knobs.items() if k in {f.name for f in fields(cls)}}
        hints = typing.get_type_hints(cls)
        for name, value in own.items():
            try:
                pydantic.TypeAdapter(hints[name]).validate_python(value, strict=True)
            except pydantic.ValidationError:
                raise ConfigError(f"knob {name!r} must be {_type_name(hints[name])}, got {value!r}") from None
        return cls(**own, **groups)

    def with_knobs(self, knobs: dict):
        """A copy with ``knobs`` (a flat dict) replacing this instance's values, which are the defaults here."""
        return type(self).from_knobs({**self.to_dict(), **knobs})

    def to_dict(self) -> dict:
        flat = {}
        for f in fields(self):
            value = getattr(self, f.name)
            flat.update(value.to_dict() if isinstance(value, Knobs) else {f.name: copy.deepcopy(value)})
        return flat


def _type_name(annotation) -> str:
    return " or ".join("None" if part is type(None) else getattr(part, "__name__", str(part))
                       for part in typing.get_args(annotation) or (annotation,))


def knob_group(group: type[Knobs], **defaults):
    """A dataclass field holding a knob group, with this strategy's own defaults for some of its knobs."""
    return field(default_factory=lambda: group(**defaults))


@dataclass
class TrainKnobs(Knobs):
    """Every knob of the loop, with its default next to it."""

    epochs: int = 4
    batch_size: int = 16  # small: target sets in transfer studies are often a few hundred examples
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    patience: int = 2  # epochs without validation improvement before stopping
    # At least this many optimiser updates, however small the training set: epochs are added until they are
    # reached, and early stopping waits for them (few-sample fine-tuning needs enough updates, not a fixed epoch
    # count: Mosbach et al. 2021); the best epoch on validation is still the one kept.
    min_steps: int = 0
    length_group_size: int = 50  # batches per mega-batch sorted by length (as HF's group_by_length)
    bf16: bool | None = None  # None: bf16 autocast exactly when training on CUDA
    progress: bool = True


@dataclass
class History:
    """Per-epoch train loss and validation metric, and which epoch's weights were kept."""

    train_loss: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_epoch: int = -1
    steps: int = 0
    tokens: int = 0  # real (unpadded) tokens of the training batches, for the model-FLOPs estimate

    def to_dict(self) -> dict:
        return asdict(self)


def _on(device: torch.device, value):
    """A batch value on ``device``: a tensor, or each tensor of a list (representation's per-source vectors)."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, list) and value and all(torch.is_tensor(item) for item in value):
        return [item.to(device) for item in value]
    return value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, group_size: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, sort within mega-batches by length, then shuffle the batches: little padding, still random."""
    order = rng.permutation(len(lengths))
    mega = batch_size * group_size
    batches = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _optimizer(model: torch.nn.Module, knobs: TrainKnobs) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            # As in BERT: no weight decay on biases and LayerNorm weights.
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": knobs.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates every tensor in one pass: on CPU the optimizer step takes ~1/5 of the
    # per-tensor loop's time (benchmarks/train_throughput.py), with the same arithmetic.
    return torch.optim.AdamW(groups, lr=knobs.lr, fused=True)


def _linear_schedule(optimizer, total_steps: int, warmup_ratio: float):
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _snapshot(model: torch.nn.Module) -> dict:
    """A copy of the trainable weights only: restoring the best epoch needs nothing more."""
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}


def train_loop(
    model: torch.nn.Module,
    examples: Sequence,
    collate: Callable[[list], dict],
    loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
    evaluate: Callable[[], float] | None,
    knobs: TrainKnobs,
    seed: int = 0,
    lengths: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    batch_sampler: Callable[[np.random.Generator], list[np.ndarray]] | None = None,
) -> History:
    """Train ``model`` in place and return its history.

    ``examples`` are whatever ``collate`` turns into a batch dict; ``loss_fn(model, batch)`` returns
    the mean loss; ``evaluate()`` returns the validation metric (higher is better) and drives early
    stopping; ``lengths`` (e.g. token counts) turn on length-grouped batching; ``batch_sampler(rng)``
    replaces the batching altogether (multitask sampling uses it).
    """
    if len(examples) == 0:
        raise ConfigError("train_loop: no training examples")
    if knobs.grad_accum_steps < 1 or knobs.batch_size < 1 or knobs.epochs < 1:
        raise ConfigError(f"train_loop: epochs, batch_size and grad_accum_steps must be >= 1, got {knobs}")
    seed_everything(seed)
    device = torch.device(device) if device else next(model.parameters()).device
    use_bf16 = device.type == "cuda" if knobs.bf16 is None else knobs.bf16
    rng = np.random.default_rng(seed)
    lengths = lengths if lengths is not None else [1] * len(examples)
    if batch_sampler is None:
        def batch_sampler(generator):
            return length_grouped_batches(lengths, knobs.batch_size, knobs.length_group_size, generator)
    batches_per_epoch = len(batch_sampler(np.random.default_rng(seed)))
    steps_per_epoch = math.ceil(batches_per_epoch / knobs.grad_accum_steps)
    if knobs.min_steps < 0:
        raise ConfigError(f"train_loop: min_steps must be >= 0, got {knobs.min_steps}")
    epochs = max(knobs.epochs, math.ceil(knobs.min_steps / steps_per_epoch))
    total_steps = steps_per_epoch * epochs
    optimizer = _optimizer(model, knobs)
    scheduler = _linear_schedule(optimizer, total_steps, knobs.warmup_ratio)
    history, best_state, best_metric, stale = History(), None, -math.inf, 0

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, disable=not knobs.progress, desc="train", leave=False)
    for epoch in range(epochs):
        model.train()
        batches = batch_sampler(rng)
        losses = []
        for index, batch_indices in enumerate(batches):
            batch = {k: _on(device, v) for k, v in collate([examples[i] for i in batch_indices]).items()}
            if "attention_mask" in batch:
                history.tokens += int(batch["attention_mask"].sum())
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} at step {history.steps} (epoch {epoch}, batch "
                                    f"{index}, examples {list(map(int, batch_indices[:8]))}...): training stopped "
                                    f"rather than return a garbage model; lower the learning rate ({knobs.lr})")
            (loss / knobs.grad_accum_steps).backward()
            losses.append(loss.item())
            if (index + 1) % knobs.grad_accum_steps == 0 or index + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(_trainable(model), knobs.max_grad_norm, foreach=True)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                history.steps += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses[-20:]):.3f}")
        history.train_loss.append(float(np.mean(losses)))
        if evaluate is None:
            continue
        model.eval()
        metric = float(evaluate())
        history.val_metric.append(metric)
        if metric > best_metric:
            best_metric, best_state, stale, history.best_epoch = metric, _snapshot(model), 0, epoch
        else:
            stale += 1
            if stale >= knobs.patience and history.steps >= knobs.min_steps:
                break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    else:
        history.best_epoch = len(history.train_loss) - 1
    model.eval()
    return history


@contextmanager
def torch_threads(threads: int | None):
    """Run a block with torch using ``threads`` CPU threads (None: as it is), then restore the count. A float
    reduction's result depends on the thread count, so a run gives the same numbers wherever it runs only when
    its thread count is fixed (``StudyConfig.threads``)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Timer:
    """Wall-clock seconds of a block: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
