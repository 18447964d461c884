"""Data: reading task files and building train/validation/test splits.

Owns the readers (label-text files, CSV/TSV/JSONL/parquet tables), the task registry and ``Task``.
May import: ``fusionkit.errors``, ``fusionkit._io``. Nothing here knows about models or studies.
"""
from fusionkit.data.tasks import TASKS, Task, TaskDefinition, load_task, load_task_from_files, stratified_sample

__all__ = ["TASKS", "Task", "TaskDefinition", "load_task", "load_task_from_files", "stratified_sample"]
