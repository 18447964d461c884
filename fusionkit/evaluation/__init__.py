"""Evaluation: arrays in, numbers out. Metrics, statistics, gains and verdicts, transferability, task
selection, similarity.

Owns every number a report states and the rules that turn numbers into words ("helps", "inconclusive").
Free of torch and of models: functions take numpy arrays or results tables and validate them at the door
(``metrics`` holds the shared input checks). Where a maintained library computes the same thing (scipy,
statsmodels), the function here is a thin, validated wrapper around it.
May import: ``fusionkit.errors`` only.
"""
from fusionkit.evaluation import gains, metrics, selection, similarity, stats, transferability, verdicts

__all__ = ["gains", "metrics", "selection", "similarity", "stats", "transferability", "verdicts"]
