"""Data: reading task files and building train/validation/test splits.

Owns the readers (label-text files, CSV/TSV/JSONL/parquet tables), the task registry, ``Task`` and the
data overlap card (texts two tasks share).
May import: ``fusionkit.errors``, ``fusionkit._io``. Nothing here knows about models or studies.
"""
from fusionkit.data.overlap import overlap_card
from fusionkit.data.tasks import (TASKS, Task, TaskDefinition, load_task, load_task_from_files, stratified_sample,
                                  tasks_present)

__all__ = ["overlap_card", "TASKS", "Task", "TaskDefinition", "load_task", "load_task_from_files", "stratified_sample",
           "tasks_present"]
