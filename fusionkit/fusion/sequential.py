"""``sequential`` (intermediate-task transfer, STILTs; Phang et al. 2018): source expert first, then the target."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fusionkit.errors import ConfigError
from fusionkit.experts import ExpertKnobs, expert_backbone, get_expert
from fusionkit.fusion.finetune import Finetune, train_classifier
from fusionkit.models import TextClassifier
from fusionkit.train import TrainConfig


@dataclass
class SequentialKnobs(TrainConfig, ExpertKnobs):
    pass


class Sequential(Finetune):
    """Fine-tune the source expert's encoder (with a new head) on the target. One source per run,
    so that the gain of each source can be measured and compared with its transferability."""

    name = "sequential"
    Knobs = SequentialKnobs
    needs_sources = True

    def _fit(self, target, sources, seed):
        if len(sources) != 1:
            raise ConfigError(f"strategy 'sequential' takes exactly one source per run, got {len(sources)}; "
                              f"run it once per source")
        base = self.load_base()
        expert = get_expert(sources[0], self, seed, base.fingerprint())
        backbone = expert_backbone(expert).to(self.device)
        for param in backbone.parameters():
            param.requires_grad_(True)
        torch.manual_seed(seed)
        module = TextClassifier(backbone, target.num_labels, self.pooling).to(self.device)
        history = train_classifier(module, base.tokenizer, target, self.knobs, seed, self.max_length)
        return module, base.tokenizer, history, {"expert": expert.spec.get("target")}
