"""The data overlap card: how many texts two tasks of a study share, before any training.

Texts are compared in their normalised form (``tasks.normalised``: whitespace collapsed, case folded), so a
sentence that appears in two corpora with different spacing or case counts once. Within a task, the loader
already removed such leaks between splits; across tasks, a study drops the target's validation and test texts
from its sources (``study.load_study_tasks``), and this card shows what is left and where.
"""
from __future__ import annotations

import itertools

import pandas as pd

from fusionkit.data.tasks import Task, normalised

COLUMNS = ["task", "split", "other_task", "other_split", "shared_texts", "share_of_split"]


def _normalised_texts(task: Task) -> dict[str, set[str]]:
    return {split: {normalised(text) for text in data["text"][:]} for split, data in task.splits.items()}


def overlap_card(tasks: list[Task]) -> pd.DataFrame:
    """One row per (task, split) and (other task, other split) of two different tasks: the number of distinct
    normalised texts they share and that number's share of the first split's distinct texts. Every ordered pair of
    tasks appears, so each row reads as "this many of <task>'s <split> texts are also in <other task>'s <split>"."""
    texts = {task.name: _normalised_texts(task) for task in tasks}
    rows = []
    for first, second in itertools.permutations(texts, 2):
        for split, own in texts[first].items():
            for other_split, other in texts[second].items():
                shared = len(own & other)
                rows.append({"task": first, "split": split, "other_task": second, "other_split": other_split,
                             "shared_texts": shared, "share_of_split": shared / len(own) if own else 0.0})
    return pd.DataFrame(rows, columns=COLUMNS)
