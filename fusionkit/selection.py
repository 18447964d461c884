"""``fusionkit.selection``: the task-selection measures (``fusionkit.evaluation.selection``) under a short name."""
from fusionkit.evaluation.selection import (RANDOM, ndcg_at_k, permutation_test_vs_random, regret_at_k,
                                            selection_by_target, selection_table)

__all__ = ["RANDOM", "ndcg_at_k", "regret_at_k", "selection_by_target", "selection_table",
           "permutation_test_vs_random"]
