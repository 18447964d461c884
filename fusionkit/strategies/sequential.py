"""``sequential`` (intermediate-task transfer, STILTs; Phang et al. 2018): source expert first, then the target."""
from __future__ import annotations

from dataclasses import dataclass

from fusionkit.errors import ConfigError
from fusionkit.modeling.training import Knobs, TrainKnobs, knob_group
from fusionkit.strategies.experts import (ExpertKnobs, check_expert, expert_artefacts, expert_backbone,
                                          shuffled_label_control)
from fusionkit.strategies.base import Control
from fusionkit.strategies.finetune import Finetune


@dataclass
class SequentialKnobs(Knobs):
    train: TrainKnobs = knob_group(TrainKnobs)
    experts: ExpertKnobs = knob_group(ExpertKnobs)
    head_init: str = "random"  # or "probe": LP-FT on the expert's encoder (finetune.train_classifier)


class Sequential(Finetune):
    """Fine-tune the source expert's encoder (with a new head) on the target. One source per run,
    so that the gain of each source can be measured and compared with its transferability."""

    name = "sequential"
    Knobs = SequentialKnobs
    needs_sources = True
    same_architecture = True

    @classmethod
    def controls(cls):
        # The target phase alone (fine-tuning with the same configuration: the same target updates), and the same
        # path through the source with its labels shuffled: a gain over the first that the second also has came
        # from the extra training steps, not from the source's knowledge.
        return [Control("no source", Finetune), shuffled_label_control(cls)]

    def requirements(self, target, sources, seed):
        if len(sources) != 1:
            raise ConfigError(f"strategy 'sequential' takes exactly one source per run, got {len(sources)}; "
                              f"run it once per source")
        return expert_artefacts(self.knobs.experts, self.settings, sources, seed)

    def _fit(self, target, sources, seed, artefacts, spec):
        base = self.load_base()
        expert = artefacts[0]
        check_expert(expert, base, "sequential transfer (it fine-tunes the source model's encoder)")
        backbone = expert_backbone(expert).to(self.device)
        for param in backbone.parameters():
            param.requires_grad_(True)
        return self._train(base, backbone, target, seed, spec, arch={"expert": expert.spec.get("target")})
