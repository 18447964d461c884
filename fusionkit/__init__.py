"""fusionkit: fuse knowledge from related tasks into a pretrained encoder, and evaluate honestly whether it helped."""
from fusionkit.encoders import Encoder, load_encoder
from fusionkit.errors import ConfigError, DataError, FusionkitError, InputError, TrainingError
from fusionkit.fusion import STRATEGIES, FittedModel, get_strategy
from fusionkit.tasks import TASKS, Task, load_task, load_task_from_files
# The evaluation and study modules, reachable as fk.stats, fk.study, ... from notebooks.
from fusionkit import (interpret, metrics, plots, profiles, provenance, report, results, similarity, sources, stats,
                       study, summaries, transfer, transferability)

__version__ = "0.1.0"

__all__ = [
    "TASKS", "Task", "load_task", "load_task_from_files", "Encoder", "load_encoder",
    "STRATEGIES", "FittedModel", "get_strategy", "FusionkitError", "DataError", "ConfigError", "InputError", "TrainingError", "__version__",
]
