"""Fine-tuning throughput: fusionkit's training loop against transformers' Trainer on the same work.

One epoch of minilm on 2048 SST-2 training sentences, batch 32, max length 128, the same learning rate,
fp32 on CPU; the Trainer samples with ``group_by_length``. The arms alternate (A/B, at least twice) so
machine noise hits both. Also prints the achieved GFLOP/s against a torch matmul measured in the same
run (model FLOPs utilisation). Last line: ``ratio_vs_hf_trainer=X.XX`` (target: >= 1.3).
Usage: python benchmarks/train_throughput.py [--rounds 2] [--n 2048] [--data DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import fusionkit as fk
from fusionkit.modeling.encoders import minilm_path
from fusionkit.strategies.finetune import cross_entropy_loss
from fusionkit.modeling.heads import TextClassifier, TextCollator
from fusionkit.modeling.training import TrainKnobs, train_loop
from fusionkit.report.provenance import matmul_peak_flops

BATCH, MAX_LENGTH, LR = 32, 128, 5e-5


def fusionkit_epoch(texts, labels) -> float:
    encoder = fk.load_encoder("minilm", max_length=MAX_LENGTH)
    torch.manual_seed(0)
    module = TextClassifier(encoder.model, 2)
    collate = TextCollator(encoder.tokenizer, MAX_LENGTH)
    config = TrainKnobs(epochs=1, batch_size=BATCH, lr=LR, progress=False)
    start = time.perf_counter()
    train_loop(module, list(zip(texts, labels)), collate, cross_entropy_loss, None, config,
               lengths=collate.lengths(texts))
    return time.perf_counter() - start


def trainer_epoch(texts, labels) -> float:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    data = Dataset.from_dict({"text": texts, "label": labels})
    data = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True,
                    remove_columns=["text"])
    data = data.map(lambda b: {"length": [len(x) for x in b["input_ids"]]}, batched=True)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, learning_rate=LR,
                             num_train_epochs=1, train_sampling_strategy="group_by_length", report_to=[],
                             save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
                             disable_tqdm=True, warmup_steps=0.1, weight_decay=0.01)
    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def training_gflop(texts) -> float:
    """6 x (non-embedding parameters) x (real tokens): forward + backward of the dense layers, no padding."""
    encoder = fk.load_encoder("minilm", max_length=MAX_LENGTH)
    dense = sum(p.numel() for n, p in encoder.model.named_parameters() if "embeddings" not in n)
    tokens = sum(TextCollator(encoder.tokenizer, MAX_LENGTH).lengths(texts))
    return 6 * dense * tokens / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    train = fk.load_task("sst2", data_dir=args.data).train.select(range(args.n))
    texts, labels = list(train["text"]), list(train["label"])
    gflop = training_gflop(texts)
    seconds = {"fusionkit": [], "hf_trainer": []}
    for round_index in range(args.rounds):
        for arm, run in (("fusionkit", fusionkit_epoch), ("hf_trainer", trainer_epoch)):
            seconds[arm].append(run(texts, labels))
            print(f"round {round_index} {arm:>10}: {args.n / seconds[arm][-1]:6.1f} samples/s", flush=True)
    peak = matmul_peak_flops() / 1e9
    for arm, values in seconds.items():
        best = min(values)
        print(f"{arm:>10}: {args.n / best:6.1f} samples/s (best of {len(values)}), "
              f"{gflop / best:6.1f} GFLOP/s = {gflop / best / peak:.1%} of a {peak:.0f} GFLOP/s fp32 matmul")
    print(f"ratio_vs_hf_trainer={min(seconds['hf_trainer']) / min(seconds['fusionkit']):.2f}")


if __name__ == "__main__":
    main()
