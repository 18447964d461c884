"""Report: what the notebooks share, and the report folder they build (papermill -> index.html).

Owns the notebooks' one-call setup (``setup_notebook``), the tables and figures they show, the findings
written first on the page (``findings``; ``matrix`` for the transfer-matrix report), provenance, and
``run_report``, which executes the numbered notebooks shipped in ``fusionkit.notebooks``.
May import every other subpackage; nothing imports it but the command line.
"""
from fusionkit.report import findings, matrix, plots, provenance, tables
from fusionkit.report.build import ReportError, run_report, write_index
from fusionkit.report.notebook import (MatrixRun, NotebookRun, matrix_run, notebook_run, notebooks_dir,
                                       setup_matrix_notebook, setup_notebook)

__all__ = ["findings", "matrix", "plots", "provenance", "tables", "ReportError", "notebooks_dir", "run_report",
           "write_index", "NotebookRun", "notebook_run", "setup_notebook", "MatrixRun", "matrix_run",
           "setup_matrix_notebook"]
