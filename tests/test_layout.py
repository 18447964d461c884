"""The package's shape: subpackages that follow the pipeline, no import cycle, evaluation free of torch, and a
plain (non-editable) install that finds its notebooks and makes a report from outside the repository."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fusionkit"
SUBPACKAGES = ("data", "modeling", "strategies", "evaluation", "study", "report")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """The fusionkit modules a file imports anywhere in it (``from pkg import sub`` counts as importing pkg.sub)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                      for alias in node.names}
    return {name for name in found if name in MODULES}


def test_every_subpackage_says_what_it_owns_and_may_import():
    for name in SUBPACKAGES:
        docstring = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert docstring and "May import" in docstring, name


# What each subpackage may import (besides itself), as its docstring says: the pipeline's order.
MAY_IMPORT = {
    "data": {"errors", "_io"},
    "modeling": {"errors", "_io"},
    "evaluation": {"errors"},
    "strategies": {"errors", "_io", "data", "modeling"},
    "study": {"errors", "_io", "data", "modeling", "strategies", "evaluation"},
    "report": {"errors", "_io", "data", "modeling", "strategies", "evaluation", "study"},
}


def test_each_subpackage_imports_only_what_comes_before_it_in_the_pipeline():
    for name, path in MODULES.items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in MAY_IMPORT:
            continue
        reached = {module.split(".")[1] for module in imported_modules(path) if module != "fusionkit"}
        assert reached <= MAY_IMPORT[parts[1]] | {parts[1]}, f"{name} imports {sorted(reached)}"


def test_the_import_graph_has_no_cycle():
    graph = {name: imported_modules(path) for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", "import cycle: " + " -> ".join(trail + [name, other])
            if other not in state:
                visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_evaluation_is_numpy_in_numbers_out():
    for name, path in MODULES.items():
        if name.startswith("fusionkit.evaluation"):
            tree = ast.parse(path.read_text())
            imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                        for alias in node.names}
            imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                         if isinstance(node, ast.ImportFrom) and node.module}
            assert "torch" not in imported, name
            assert not {m for m in imported_modules(path) if m.split(".")[1] in ("modeling", "strategies", "study",
                                                                                 "report")}, name


@pytest.mark.slow
def test_a_plain_install_makes_a_report_from_outside_the_repository(tmp_path, data_dir):
    """``pip install .`` (not editable) into a fresh virtual environment; ``fusionkit report`` run elsewhere finds
    the notebooks inside the installed package. The dependencies come from this environment's site-packages
    (a path, not a site folder: this environment's editable fusionkit stays out of sight)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    ours = [p for p in sys.path if p.endswith("site-packages")]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "dependencies.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    str(PACKAGE.parent)], check=True, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(python), "-c", "import fusionkit, fusionkit.report as r; "
                            "print(fusionkit.__file__); print(r.notebooks_dir())"],
                           check=True, capture_output=True, text=True, cwd=elsewhere).stdout.split()
    assert all(str(venv) in line for line in where), where
    # nbconvert's HTML templates are data files of this environment; its kernels are left out, so the report's
    # kernel is the fresh environment's own Python.
    jupyter = tmp_path / "jupyter"
    jupyter.mkdir()
    (jupyter / "nbconvert").symlink_to(Path(sys.prefix, "share", "jupyter", "nbconvert"))
    env = {**os.environ, "FUSIONKIT_DATA": str(data_dir), "FUSIONKIT_PROFILE": "", "FUSIONKIT_WORKDIR": "",
           "FUSIONKIT_OUT": "", "JUPYTER_PATH": str(jupyter)}
    result = subprocess.run([str(venv / "bin" / "fusionkit"), "report", "--profile", "smoke", "--target", "cr",
                             "--sources", "mr", "--out", "x", "--workdir", "work", "-p", "seeds=[0]"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (elsewhere / "x" / "index.html").is_file()
    assert len(list((elsewhere / "x" / "notebooks").glob("*.ipynb"))) == 5
