"""fusionkit: fuse knowledge from related tasks into a pretrained encoder, and evaluate honestly whether it helped.

The subpackages follow the pipeline: ``data`` -> ``modeling`` -> ``strategies`` -> ``evaluation`` -> ``study``
-> ``report``. The names a user needs first are re-exported here.
"""
import warnings

# tqdm.auto (imported by transformers and datasets) warns inside a Jupyter kernel without ipywidgets, then falls
# back to text bars, which is what the reports want; the warning would print this machine's paths into them.
warnings.filterwarnings("ignore", message="IProgress not found")

from fusionkit import data, evaluation, modeling, report, selection, strategies, study  # noqa: E402
from fusionkit.data import TASKS, Task, load_task, load_task_from_files  # noqa: E402
from fusionkit.errors import ConfigError, DataError, FusionkitError, InputError, TrainingError  # noqa: E402
from fusionkit.modeling import Encoder, load_encoder  # noqa: E402
from fusionkit.strategies import STRATEGIES, FittedModel, get_strategy  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "TASKS", "Task", "load_task", "load_task_from_files", "Encoder", "load_encoder",
    "STRATEGIES", "FittedModel", "get_strategy", "FusionkitError", "DataError", "ConfigError", "InputError",
    "TrainingError", "data", "modeling", "strategies", "evaluation", "selection", "study", "report", "__version__",
]
