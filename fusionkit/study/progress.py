"""What a study tells the person at the terminal while it runs inside a notebook kernel: progress and warnings.

``fusionkit report`` executes the notebooks in kernels whose output lands in the executed notebooks, not on the
terminal. It names a file in ``EVENTS_VARIABLE``; the study (``Progress``: experts and runs done of total per
phase, elapsed and remaining time) and the kernel's fusionkit warnings (``forward_warnings``) append one JSON line
per event to it, and the report prints them as they come (``report.build``) and lists the warnings on the page.
Without the variable (a study run from Python or a notebook opened by hand) nothing is written.
"""
from __future__ import annotations

import json
import os
import time
import warnings

EVENTS_VARIABLE = "FUSIONKIT_EVENTS"
PROGRESS, WARNING, SCHEDULE = "progress", "warning", "schedule"
NAMES = {"experts": "experts and teachers", "runs": "runs"}  # artefacts: source experts, distillation teachers
EVERY_SECONDS = 5.0  # at most one progress line this often (and one when a phase ends)


def emit(kind: str, text: str) -> None:
    """Append one event to the file ``EVENTS_VARIABLE`` names (nothing when it names none). One ``write`` of one
    line to a file opened for appending: lines from several processes never interleave."""
    path = os.environ.get(EVENTS_VARIABLE)
    if not path:
        return
    line = json.dumps({"kind": kind, "text": text, "time": time.time()}) + "\n"
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line.encode("utf-8"))
    finally:
        os.close(descriptor)


def report_schedule(busy_seconds: float, slot_seconds: float) -> None:
    """Emit how busy an executor's workers were over one phase: ``busy_seconds`` of fitting over ``slot_seconds``
    (the phase's wall time x its workers). The report sums them into provenance's ``workers_busy_fraction``."""
    emit(SCHEDULE, json.dumps({"busy_seconds": busy_seconds, "slot_seconds": slot_seconds}))


def duration(seconds: float) -> str:
    """``seconds`` as people read a duration: 45s, 3m05s, 1h02m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Counts what a phase of a study has done (experts, then runs) and emits a line a person can follow:
    ``study cr, tuning on validation: experts and teachers 3/3, runs 5/19, 1m20s elapsed, about 4m10s left``.
    The time left is the mean time per item so far times the items left (experts and runs alike): a rough guide."""

    def __init__(self, study: str, phase: str, experts: int, runs: int):
        self.study, self.phase = study, phase
        self.totals = {"experts": experts, "runs": runs}
        self.done = {"experts": 0, "runs": 0}
        self.start = self.last = time.perf_counter()
        self._emit(force=True)

    def step(self, what: str) -> None:
        """One more of ``what`` ("experts" or "runs") done."""
        self.done[what] += 1
        self._emit(force=self.done == self.totals)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        counts = ", ".join(f"{NAMES[name]} {self.done[name]}/{total}" for name, total in self.totals.items() if total)
        done, total = sum(self.done.values()), sum(self.totals.values())
        if done == total:
            left = "done"
        elif done:
            left = f"about {duration(elapsed / done * (total - done))} left"
        else:
            left = "time left known after the first"
        return f"study {self.study}, {self.phase}: {counts}, {duration(elapsed)} elapsed, {left}"

    def _emit(self, force: bool) -> None:
        now = time.perf_counter()
        if force or now - self.last >= EVERY_SECONDS:
            self.last = now
            emit(PROGRESS, self.line())


def forward_warnings() -> None:
    """In a notebook kernel: every fusionkit warning is also emitted as an event (the person at the terminal
    and the report page learn of it, e.g. a damaged record moved aside and rebuilt), besides being shown as
    usual. Installed once per process."""
    from fusionkit.errors import FusionkitWarning

    shown = warnings.showwarning
    if getattr(shown, "forwards_fusionkit_warnings", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FusionkitWarning):
            emit(WARNING, str(message))
        shown(message, category, filename, lineno, file, line)

    showwarning.forwards_fusionkit_warnings = True
    warnings.showwarning = showwarning
