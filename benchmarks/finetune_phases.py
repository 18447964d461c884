"""Where one fine-tuning run's time goes: MiniLM, n=128 on CR, the quick profile's recipe (LP-FT head, at least 48
update steps, early stopping on the capped validation split), then the test set predicted once, as a study does.

Phases from cProfile (cumulative seconds of the functions that do each): loading the encoder, the LP-FT probe
(encoding the training and validation texts once, then scikit-learn), tokenising the training batches, the
forward pass with the loss, the backward pass, the optimiser (gradient clipping, AdamW, the schedule), the
validation passes (each epoch, tokenisation included), test inference; and the padding the length-grouped
batches carry (padded tokens over real ones). Rounds alternate nothing: this measures shares, not a ratio.
With ``--compile``, also the torch.compile lever: eight forward batches of the training texts, eager against
``torch.compile(dynamic=True)``, the first pass (compilation) and two after it, and the largest difference.
Last line: ``finetune_run_seconds=X.XX`` (the median over rounds of the whole run: fit and test inference).
Usage: python benchmarks/finetune_phases.py [--rounds 2] [--compile] [--data DIR]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import tempfile
import time

import numpy as np
import torch

from fusionkit.data import load_task
from fusionkit.modeling.heads import TextCollator
from fusionkit.strategies import get_strategy

PHASES = {  # phase -> (file suffix, function) whose cumulative time it is
    "load the encoder": ("modeling/encoders.py", "load_encoder"),
    "LP-FT probe (encode, fit)": ("strategies/finetune.py", "probe_head_init"),
    "tokenise training batches": ("modeling/heads.py", "__call__"),
    "forward + loss": ("strategies/finetune.py", "cross_entropy_loss"),
    "backward": ("torch/_tensor.py", "backward"),
    "clip gradients": ("torch/nn/utils/clip_grad.py", "clip_grad_norm_"),
    "optimiser step": ("torch/optim/optimizer.py", "wrapper"),
    "validation passes": ("strategies/finetune.py", "<lambda>"),
    "test inference": ("strategies/base.py", "predict_proba"),
}


def padding_share(task, tokenizer, batch_size: int = 16, max_length: int = 64) -> float:
    """Padded tokens over real tokens in length-grouped batches of the training texts (as the loop forms them)."""
    from fusionkit.modeling.training import TrainKnobs, length_grouped_batches

    lengths = TextCollator(tokenizer, max_length).lengths(task.train["text"][:])
    batches = length_grouped_batches(lengths, batch_size, TrainKnobs().length_group_size, np.random.default_rng(0))
    real = sum(lengths)
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return padded / real - 1


def compile_check(task) -> None:
    from fusionkit.modeling.encoders import load_encoder
    from fusionkit.modeling.heads import TextClassifier

    encoder = load_encoder("minilm", max_length=64)
    torch.manual_seed(0)
    module = TextClassifier(encoder.model, 2).eval()
    collate, texts = TextCollator(encoder.tokenizer, 64), list(task.train["text"][:])
    batches = [collate([(text, 0) for text in texts[i:i + 16]]) for i in range(0, len(texts), 16)]

    @torch.no_grad()
    def forward(model):
        return [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]) for b in batches]

    outputs = {}
    for name, model in (("eager", module), ("torch.compile", torch.compile(module, dynamic=True))):
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            outputs[name] = forward(model)
            passes.append(time.perf_counter() - start)
        print(f"  {name:<14} first pass {passes[0]:.2f} s, then {passes[1]:.2f} s and {passes[2]:.2f} s")
    difference = max(float((a - b).abs().max()) for a, b in zip(outputs["eager"], outputs["torch.compile"]))
    print(f"  largest difference in logits: {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile on the forward pass")
    parser.add_argument("--data", default=os.environ.get("FUSIONKIT_DATA"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a study's run uses (its `threads` parameter)
    task = load_task("cr", args.data).capped("validation", 300).capped("test", 1000)
    knobs = {"lr": 1e-4, "epochs": 6, "min_steps": 48, "head_init": "probe", "progress": False}
    totals, table = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for round_ in range(args.rounds):
            strategy = get_strategy("finetune", knobs, encoder="minilm", workdir=workdir, max_length=64)
            profile = cProfile.Profile()
            start = time.perf_counter()
            profile.enable()
            fitted = strategy.fit(task, seed=round_, train_size=128)
            fitted.predict_proba(task.test)
            profile.disable()
            totals.append(time.perf_counter() - start)
            stats = pstats.Stats(profile).stats
            table = {phase: sum(entry[3] for (path, _, name), entry in stats.items()
                                if path.endswith(suffix) and name == function)
                     for phase, (suffix, function) in PHASES.items()}
            print(f"round {round_ + 1}: {totals[-1]:.1f} s, {fitted.history.steps} steps over "
                  f"{len(fitted.history.train_loss)} epochs, best epoch {fitted.history.best_epoch}")
        tokenizer = fitted.tokenizer
    print("phases of the last round (cumulative seconds; tokenising counts inside validation and test too):")
    for phase, seconds in table.items():
        print(f"  {phase:<30} {seconds:6.2f}  {seconds / totals[-1]:5.0%}")
    print(f"padding: {padding_share(task.subsample(128, 0), tokenizer):.0%} padded tokens over real ones in the "
          f"training batches")
    if args.compile:
        print("torch.compile on the forward pass (8 batches of 16 training texts):")
        compile_check(task.subsample(128, 0))
    print(f"finetune_run_seconds={statistics.median(totals):.2f}")


if __name__ == "__main__":
    main()
