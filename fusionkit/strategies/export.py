"""A fitted model as a folder other tools load without fusionkit (``FittedModel.export``).

A model whose module pools one transformers encoder into a linear head (finetune, scratch, lora, linear_probe,
sequential, merge, distill, and multitask with its target's head) becomes::

    config.json, model.safetensors, tokenizer files   the encoder: transformers.AutoModel / AutoTokenizer
    modules.json, sentence_bert_config.json,          sentence-transformers: SentenceTransformer(DIR).encode
    1_Pooling/config.json                             gives fusionkit's pooled vectors (mean or cls pooling)
    classifier.safetensors                            the head: "weight" [num_labels, hidden], "bias" [num_labels]
    fusionkit_export.json                             pooling, max_length, label_names, strategy, how to load
    adapter/, base/                                   lora only: the peft adapter and the base encoder it adapts

probabilities = softmax(pooled @ weight.T + bias), pooled = the encoder's last hidden states pooled over the
attention mask as ``pooling`` says, texts tokenized with truncation to ``max_length``. A LoRA encoder is merged
into dense weights for the top folder; ``adapter/`` loads with
``peft.PeftModel.from_pretrained(AutoModel.from_pretrained(DIR/base), DIR/adapter)``.

Any other model of a registered strategy (``representation``: a base encoder, several frozen experts and a
fusion layer, which no standard class holds) is exported as what it is: the folder ``FittedModel.save`` writes
(the module's safetensors and its spec as config.json), loaded with ``fusionkit.FittedModel.load(DIR)``, plus
``fusionkit_export.json`` saying so. A model of an unregistered strategy is a ConfigError.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from fusionkit._io import atomic_folder
from fusionkit.errors import ConfigError
from fusionkit.modeling.heads import dense_backbone, is_lora

MANIFEST, CLASSIFIER_FILE, ADAPTER_FOLDER, BASE_FOLDER = (
    "fusionkit_export.json", "classifier.safetensors", "adapter", "base")
# sentence-transformers' own names: its Pooling module's boolean switches, one per fusionkit pooling.
POOLING_SWITCHES = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}

TRANSFORMERS_HOW_TO = (
    "Encoder: transformers.AutoModel.from_pretrained(DIR) and AutoTokenizer.from_pretrained(DIR); tokenize with "
    "truncation=True, max_length=max_length; pool last_hidden_state as 'pooling' says (mean: over the attention "
    "mask; cls: the first token). Or sentence_transformers.SentenceTransformer(DIR).encode(texts) for the same "
    "pooled vectors. Probabilities: softmax(pooled @ weight.T + bias) with weight and bias from "
    "safetensors.torch.load_file(DIR/classifier.safetensors), columns in the order of label_names.")
LORA_HOW_TO = (" LoRA: peft.PeftModel.from_pretrained(AutoModel.from_pretrained(DIR/base), DIR/adapter) is the "
               "same encoder before merging.")
FUSIONKIT_HOW_TO = ("This model holds several encoders and a fusion layer, which no standard class holds: load it "
                    "with fusionkit.FittedModel.load(DIR), then .predict_proba(texts).")


def single_encoder_parts(module: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """(encoder, target head) of a module that pools one transformers encoder into a linear head (a
    ``TextClassifier``; a multitask model's first head is its target's), else None."""
    backbone, pooling = getattr(module, "backbone", None), getattr(module, "pooling", None)
    head = getattr(module, "head", None)
    if head is None and isinstance(getattr(module, "heads", None), nn.ModuleList) and len(module.heads):
        head = module.heads[0]
    if not hasattr(backbone, "save_pretrained") or not isinstance(head, nn.Linear) or pooling not in POOLING_SWITCHES:
        return None
    return backbone, head


def check_export_folder(path: str | Path, overwrite: bool = False) -> Path:
    """That ``path`` may become an export folder, before any work: fusionkit never deletes what it did not write.
    A missing or empty folder, or a previous fusionkit export (it holds ``fusionkit_export.json``), is replaced;
    a non-empty folder of anything else only with ``overwrite``; a file, and the current folder or a folder that
    holds it, never (a ConfigError naming the path)."""
    path = Path(path)
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise ConfigError(f"cannot export to '{path}': it is the current folder or holds it, and an export replaces "
                          f"its folder whole; name a new folder, e.g. --to exported/my-model")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"cannot export to '{path}': it is a file; name a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file() and not overwrite:
        raise ConfigError(f"cannot export to '{path}': it is a folder that holds files fusionkit did not export "
                          f"(no {MANIFEST}), which an export would delete; name a new or empty folder, or pass "
                          f"--overwrite to replace it whole")
    return path


def export_model(fitted, path: str | Path, loadable: bool, overwrite: bool = False) -> Path:
    """Write ``fitted`` (a ``FittedModel``) to the folder ``path``, atomically: it appears whole or not at all.
    ``loadable``: whether ``FittedModel.load`` rebuilds this model (its strategy is registered), the fallback
    for a module that is not one encoder and a head. ``path`` is checked first (``check_export_folder``)."""
    check_export_folder(path, overwrite)
    strategy = fitted.spec.get("strategy")
    parts = single_encoder_parts(fitted.module)
    if parts is None and not loadable:
        raise ConfigError(f"cannot export a model of strategy {strategy!r}: its module "
                          f"({type(fitted.module).__name__}) is not one transformers encoder with a linear head, "
                          f"and no registered strategy {strategy!r} can load it back")
    with atomic_folder(path) as folder:
        if parts is None:
            # save() replaces this (still empty) temporary folder with its own, whole; the manifest joins it.
            fitted.save(folder)
            manifest = {"format": "fusionkit", "how_to_load": FUSIONKIT_HOW_TO}
        else:
            manifest = _write_encoder_and_head(fitted, *parts, folder)
        record = {**manifest, **{key: fitted.spec.get(key) for key in (
            "strategy", "encoder", "pooling", "max_length", "num_labels", "label_names", "target", "sources",
            "seed", "train_size", "knobs")}}
        (folder / MANIFEST).write_text(json.dumps(record, indent=2, default=str))
    return Path(path)


def _write_encoder_and_head(fitted, backbone: nn.Module, head: nn.Linear, folder: Path) -> dict:
    from safetensors.torch import save_file

    spec = fitted.spec
    dense_backbone(backbone).save_pretrained(folder)
    fitted.tokenizer.save_pretrained(folder)
    hidden = backbone.config.hidden_size
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": spec["max_length"], "do_lower_case": False})
    (folder / "1_Pooling").mkdir()
    _write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": hidden, **{
        switch: spec["pooling"] == pooling for pooling, switch in POOLING_SWITCHES.items()}})
    save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
              str(folder / CLASSIFIER_FILE))
    manifest = {"format": "transformers", "classifier": CLASSIFIER_FILE, "hidden_size": hidden,
                "how_to_load": TRANSFORMERS_HOW_TO}
    if is_lora(backbone):
        backbone.save_pretrained(folder / ADAPTER_FOLDER)
        _base_encoder(backbone).save_pretrained(folder / BASE_FOLDER)
        fitted.tokenizer.save_pretrained(folder / BASE_FOLDER)
        manifest.update(adapter=ADAPTER_FOLDER, adapter_base=BASE_FOLDER, how_to_load=TRANSFORMERS_HOW_TO + LORA_HOW_TO)
    return manifest


def _base_encoder(lora_backbone: nn.Module) -> nn.Module:
    """The encoder a LoRA backbone adapts, without its adapters (a copy: the fitted model keeps them)."""
    return copy.deepcopy(lora_backbone).unload().eval()


def _write_json(path: Path, payload) -> None:
    path.write_text(json.dumps(payload, indent=2))
