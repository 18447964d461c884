"""Study: a grid of runs (strategies x sources x seeds x train sizes) on a target, each stored once.

Owns the study config, its design (tuning on validation with an equal budget, matched controls,
leave-one-source-out), its runner and plan, the executors that carry a plan out (``run_study``: local
or Ray, resumable, every run fitted at most once per work folder), the named profiles, the results store
(one atomic record per run) and the source scores (experts and their transferability before fusion).
May import: ``fusionkit.errors``, ``fusionkit._io``, ``data``, ``modeling``, ``strategies``, ``evaluation``.
"""
from fusionkit.study import source_scores
from fusionkit.study.profiles import MATRIX_SYSTEMS, PROFILES, matrix_configs, profile_parameters, study_config
from fusionkit.study.executors import LocalExecutor, RayExecutor, run_studies, run_study
from fusionkit.study.design import StudyDesign
from fusionkit.study.runner import Arm, StudyConfig, load_study_tasks
from fusionkit.study.store import ResultsStore, run_key

__all__ = ["source_scores", "PROFILES", "MATRIX_SYSTEMS", "matrix_configs", "profile_parameters", "study_config", "Arm",
           "StudyConfig", "StudyDesign", "load_study_tasks", "run_study", "run_studies", "LocalExecutor", "RayExecutor",
           "ResultsStore", "run_key"]
