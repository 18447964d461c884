"""Torch modules shared by the strategies: a text classifier, a text collator, batched prediction."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fusionkit.modeling.encoders import map_length_sorted, pool


class TextClassifier(nn.Module):
    """A transformers backbone, pooled to one vector per text, and a linear head (dropout before it)."""

    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def pooled(self, input_ids, attention_mask, **extra) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return pool(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, input_ids, attention_mask, **extra) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(input_ids, attention_mask, **extra)))


class TextCollator:
    """(text, label, *extras) examples -> a padded batch; only as long as its longest text (dynamic padding)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, examples: list[tuple]) -> dict:
        batch = dict(self.tokenizer([e[0] for e in examples], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt"))
        batch.pop("token_type_ids", None)
        batch["labels"] = torch.tensor([e[1] for e in examples], dtype=torch.long)
        if len(examples[0]) > 2:  # per-example extras, e.g. a teacher's soft targets or a task id
            batch["extra"] = torch.as_tensor(np.stack([e[2] for e in examples]))
        return batch

    def lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]


def model_inputs(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@torch.no_grad()
def predict_logits(module: nn.Module, tokenizer, texts, max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits [n, k] in input order; texts are length-sorted into batches so padding stays small."""
    module.eval()
    device = next(module.parameters()).device
    collate = TextCollator(tokenizer, max_length)

    def logits_of(batch_texts: list[str]) -> np.ndarray:
        batch = collate([(text, 0) for text in batch_texts])
        return module(**{k: v.to(device) for k, v in model_inputs(batch).items()}).float().cpu().numpy()
    return map_length_sorted(texts, batch_size, logits_of)


def count_trainable(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def model_flops(module: nn.Module, tokens_trained: int, tokens_inferred: int) -> float:
    """Model FLOPs (Kaplan et al. 2020): 6 x N x tokens to train (forward and backward), 2 x N x tokens to infer,
    N the non-embedding parameters (a lookup is not a matmul)."""
    dense = sum(p.numel() for name, p in module.named_parameters() if "embeddings" not in name)
    return float(6 * dense * tokens_trained + 2 * dense * tokens_inferred)


def is_lora(backbone: nn.Module) -> bool:
    """Whether a backbone carries peft LoRA adapters (its weights are base + low-rank deltas)."""
    return hasattr(backbone, "peft_config")


def dense_backbone(backbone: nn.Module) -> nn.Module:
    """A frozen plain transformers copy of ``backbone``: a LoRA backbone is merged into dense weights."""
    dense = copy.deepcopy(backbone)
    if is_lora(dense):
        dense = dense.merge_and_unload()
    for param in dense.parameters():
        param.requires_grad_(False)
    return dense.eval()


def frozen_classifier(backbone: nn.Module, head: nn.Linear, pooling: str) -> TextClassifier:
    """A TextClassifier whose backbone is frozen: only the head counts as trainable."""
    module = TextClassifier(backbone, head.out_features, pooling)
    module.head = head
    for param in module.backbone.parameters():
        param.requires_grad_(False)
    return module.eval()


def inference_size(module: nn.Module) -> tuple[int, int]:
    """(parameters, transformer encoders) a fitted model runs at inference, frozen ones included: a
    representation model over three experts runs four encoders whatever its few trainable parameters."""
    from transformers import PreTrainedModel

    encoders, inside = 0, set()  # ids of the modules within an encoder already counted
    for sub in module.modules():  # parents come before their children
        if isinstance(sub, PreTrainedModel) and id(sub) not in inside:
            encoders += 1
            inside.update(id(inner) for inner in sub.modules())
    return sum(p.numel() for p in module.parameters()), encoders

