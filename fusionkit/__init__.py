"""fusionkit: fuse knowledge from related tasks into a pretrained encoder, and evaluate honestly whether it helped.

The subpackages follow the pipeline: ``data`` -> ``modeling`` -> ``strategies`` -> ``evaluation`` -> ``study``
-> ``report``. The names a user needs first are re-exported here.
"""
from fusionkit import data, evaluation, modeling, report, strategies, study
from fusionkit.data import TASKS, Task, load_task, load_task_from_files
from fusionkit.errors import ConfigError, DataError, FusionkitError, InputError, TrainingError
from fusionkit.modeling import Encoder, load_encoder
from fusionkit.strategies import STRATEGIES, FittedModel, get_strategy

__version__ = "0.1.0"

__all__ = [
    "TASKS", "Task", "load_task", "load_task_from_files", "Encoder", "load_encoder",
    "STRATEGIES", "FittedModel", "get_strategy", "FusionkitError", "DataError", "ConfigError", "InputError",
    "TrainingError", "data", "modeling", "strategies", "evaluation", "study", "report", "__version__",
]
