"""Bottleneck adapters and AdapterFusion inside a BERT-style encoder (Pfeiffer et al. 2021).

Each transformer layer's output block (``BertOutput``: dense, dropout, LayerNorm(h + input)) is replaced by
``AdapterOutput``, which keeps those three modules under the same names (the encoder's weights keep their keys)
and adds, in the Pfeiffer configuration (AdapterHub's ``SeqBnConfig``: after the feed-forward block, reduction
factor 16, ReLU):

    h = dropout(dense(intermediate));  x = LayerNorm(h + input)
    one adapter:  out = LayerNorm(up(relu(down(x))) + h + input)
    fusion:       out = LayerNorm(sum_s a_s V up_s(x) + h + input),  a = softmax_s(<Q x, K up_s(x)>)

The fusion's query is the layer's output ``x``, its keys and values the adapters' outputs per token, and ``V``
starts as the identity (1 on the diagonal, 1e-6 elsewhere, as the paper and AdapterHub's "dynamic" fusion do), so
fusing one adapter starts as that adapter. This is AdapterHub's arithmetic; ``benchmarks/adapters_crosscheck.py``
compares the two on the same weights.
"""
from __future__ import annotations

import torch
from torch import nn

from fusionkit.errors import ConfigError

PFEIFFER_REDUCTION = 16
VALUE_OFF_DIAGONAL = 1e-6


def _bert_init(module: nn.Module) -> None:
    """AdapterHub's default initialisation of adapter and fusion layers (BERT's: normal(0, 0.02), zero bias)."""
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()


class BottleneckAdapter(nn.Module):
    """down-projection to ``dim // reduction``, ReLU, up-projection back: the adapter's contribution."""

    def __init__(self, dim: int, reduction: int = PFEIFFER_REDUCTION):
        super().__init__()
        if reduction < 1:
            raise ConfigError(f"adapter reduction factor must be >= 1, got {reduction!r}")
        self.down = nn.Linear(dim, max(1, dim // reduction))
        self.up = nn.Linear(max(1, dim // reduction), dim)
        self.apply(_bert_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x)))


class FusionAttention(nn.Module):
    """AdapterFusion's attention over the adapters' outputs of one layer, token by token."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.query, self.key = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim, bias=False)
        self.apply(_bert_init)
        with torch.no_grad():
            self.value.weight.fill_(VALUE_OFF_DIAGONAL).fill_diagonal_(1.0)
        self.dropout = nn.Dropout(dropout)
        self.last_attention: torch.Tensor | None = None  # [batch, tokens, adapters] of the last forward

    def forward(self, x: torch.Tensor, ups: torch.Tensor) -> torch.Tensor:
        """x [b, t, d]; ups [b, t, S, d] -> sum_s a_s V ups_s [b, t, d]."""
        scores = torch.einsum("btd,btsd->bts", self.query(x), self.key(ups))
        weights = self.dropout(scores).softmax(dim=-1)
        self.last_attention = weights.detach()
        return torch.einsum("bts,btsd->btd", weights, self.value(ups))

    def value_regularization(self) -> torch.Tensor:
        """||I - V||^2: AdapterFusion's penalty keeping the values near the identity (weighted 0.01 by the paper)."""
        identity = torch.eye(self.value.weight.shape[0], device=self.value.weight.device)
        return (identity - self.value.weight).pow(2).sum()


class AdapterOutput(nn.Module):
    """A layer's output block with named adapters and, when several are fused, a fusion attention."""

    def __init__(self, output: nn.Module):
        super().__init__()
        self.dense, self.dropout, self.LayerNorm = output.dense, output.dropout, output.LayerNorm
        self.adapters = nn.ModuleDict()
        self.fusion: FusionAttention | None = None

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(hidden_states))
        if not self.adapters:
            return self.LayerNorm(h + input_tensor)
        x = self.LayerNorm(h + input_tensor)
        if self.fusion is None:
            (adapter,) = self.adapters.values()
            delta = adapter(x)
        else:
            delta = self.fusion(x, torch.stack([adapter(x) for adapter in self.adapters.values()], dim=2))
        return self.LayerNorm(delta + h + input_tensor)


def adapter_outputs(backbone: nn.Module) -> list[AdapterOutput]:
    """Every layer's output block as an ``AdapterOutput`` (replacing the plain one the first time)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if layers is None or not all(hasattr(getattr(layer, "output", None), "LayerNorm") for layer in layers):
        raise ConfigError(f"adapters need a BERT-style encoder (encoder.layer[i].output with dense, dropout and "
                          f"LayerNorm: BERT, RoBERTa, MiniLM); {type(backbone).__name__} has another layout")
    for layer in layers:
        if not isinstance(layer.output, AdapterOutput):
            layer.output = AdapterOutput(layer.output)
    return [layer.output for layer in layers]


def add_adapters(backbone: nn.Module, names: list[str], reduction: int = PFEIFFER_REDUCTION) -> nn.Module:
    """A bottleneck adapter under each name in every layer of ``backbone`` (in place); returns ``backbone``."""
    for output in adapter_outputs(backbone):
        for name in names:
            output.adapters[name] = BottleneckAdapter(output.dense.out_features, reduction)
    return backbone


def add_fusion(backbone: nn.Module, dropout: float = 0.1) -> nn.Module:
    """A fusion attention over the adapters of every layer (in place; Pfeiffer's per-layer Q, K, V)."""
    for output in adapter_outputs(backbone):
        output.fusion = FusionAttention(output.dense.out_features, dropout)
    return backbone


def adapter_state(backbone: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The weights of adapter ``name`` in every layer, keyed by layer index and parameter ("3.down.weight")."""
    return {f"{index}.{key}": value for index, output in enumerate(adapter_outputs(backbone))
            for key, value in output.adapters[name].state_dict().items()}


def load_adapter_state(backbone: nn.Module, name: str, state: dict[str, torch.Tensor]) -> None:
    """Loads what ``adapter_state`` returned into adapter ``name`` of every layer."""
    for index, output in enumerate(adapter_outputs(backbone)):
        prefix = f"{index}."
        output.adapters[name].load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def fusion_layers(backbone: nn.Module) -> list[FusionAttention]:
    return [output.fusion for output in adapter_outputs(backbone) if output.fusion is not None]
