"""The install paths agree: environment.yml lists pyproject's dependencies, and CI runs the README's Makefile commands."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch", "ray-core": "ray"}  # conda-forge name -> PyPI name, where they differ
NOT_DEPENDENCIES = {"python", "pip"}


def normalise(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_NAMES.get(name, name)


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {normalise(req.name): req.specifier for req in map(Requirement, lines)}


def conda_requirements() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    lines = [x for x in env["dependencies"] if isinstance(x, str)]
    lines += [x for block in env["dependencies"] if isinstance(block, dict) for x in block.get("pip", [])]
    found = {}
    for line in lines:
        if line.startswith("-"):  # pip options such as "-e ." install fusionkit itself
            continue
        name, spec = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", line.strip()).groups()
        found[normalise(name)] = SpecifierSet(spec.replace(" ", ""))
    return {name: spec for name, spec in found.items() if name not in NOT_DEPENDENCIES}


@pytest.fixture(scope="module")
def environment():
    return yaml.safe_load((REPO / "environment.yml").read_text())


def test_environment_lists_the_same_packages_as_pyproject():
    ours, conda = pyproject_requirements(), conda_requirements()
    assert sorted(set(conda) - set(ours)) == [] and sorted(set(ours) - set(conda)) == []


def test_environment_uses_the_same_minimum_versions():
    ours, conda = pyproject_requirements(), conda_requirements()
    differ = {name: (str(ours[name]), str(conda[name])) for name in ours.keys() & conda.keys()
              if str(ours[name]) and str(conda[name]) and ours[name] != conda[name]}
    assert differ == {}


def test_deepsig_is_a_dev_dependency_for_the_aso_comparison():
    assert pyproject_requirements()["deepsig"] == SpecifierSet(">=1.2")


def test_environment_installs_fusionkit_and_the_same_python(environment):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert environment["name"] == "fusionkit" and "conda-forge" in environment["channels"]
    assert f"python{project['requires-python']}" in environment["dependencies"]
    pip = next(block["pip"] for block in environment["dependencies"] if isinstance(block, dict))
    assert "-e ." in pip


def make_commands(text: str) -> list[str]:
    return re.findall(r"^\s*make ([\w-]+)", text, flags=re.M)


def test_ci_runs_the_readme_commands_in_order():
    ci = make_commands((REPO / ".ci" / "run").read_text())
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Three commands\s+```bash\n(.*?)```", readme, flags=re.S).group(1)
    assert ci == ["setup", "test"]
    assert [c for c in make_commands(block) if c in ci] == ci


def test_make_test_sets_up_then_runs_pytest_on_the_tests():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^test: (.*)\n\t(.*)$", makefile, flags=re.M)
    assert recipe.group(1).split() == ["setup"]
    assert re.match(r"\$\(PY\) -m pytest tests\b", recipe.group(2))
    assert re.search(r"^setup: ", makefile, flags=re.M)


def test_ci_and_make_point_the_tests_at_the_shared_data():
    """Without this the real-data tests would silently skip in CI."""
    ci = (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r'FUSIONKIT_DATA=.*\$\(cd \.\. && pwd\)/shared/data/senteval', ci)
    assert re.search(r"export FUSIONKIT_DATA \?= \$\(abspath \.\./shared/data/senteval\)", makefile)


def test_readme_points_conda_users_at_environment_yml():
    assert "conda env create -f environment.yml" in (REPO / "README.md").read_text()
