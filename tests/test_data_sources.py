"""Where a registered task's data comes from: the local folder (no network), else the Hub unless offline mode is on,
and the Makefile's choice of folder and offline mode (a copy of it run beside, or without, ../shared/data/senteval)."""
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from fusionkit import load_task
from fusionkit.data.tasks import TASKS
from fusionkit.errors import DataError

REPO = Path(__file__).resolve().parent.parent
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@pytest.fixture
def hub_never_called(monkeypatch):
    """datasets.load_dataset fails the test if called: offline mode must refuse before trying the Hub."""
    import datasets

    def load_dataset(*args, **kwargs):
        raise AssertionError(f"the Hub was tried: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection raises (and is recorded)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a, **k: refuse(*a))
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def assert_names_both_ways(message: str, name: str) -> None:
    definition = TASKS[name]
    assert f"task '{name}'" in message
    assert "FUSIONKIT_DATA" in message and all(file in message for file in definition.files.values())
    assert "unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE" in message and definition.hub.dataset_id in message


# ----- (a) no local copy and offline: one error naming both ways to get the data -----

@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
@pytest.mark.parametrize("name", ["cr", "sst2"])
def test_no_folder_and_offline_is_one_error_naming_both_ways(monkeypatch, hub_never_called, variable, value, name):
    monkeypatch.delenv("FUSIONKIT_DATA", raising=False)
    for other in OFFLINE:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(DataError) as error:
        load_task(name)
    message = str(error.value)
    assert_names_both_ways(message, name)
    assert "no data_dir or FUSIONKIT_DATA was given" in message and f"offline mode is on ({variable}={value})" in message


def test_folder_without_the_task_and_offline_is_the_same_error_naming_the_folder(tmp_path, monkeypatch,
                                                                              hub_never_called):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path))
    with pytest.raises(DataError, match=r"task 'trec': files '.*TREC\.train\.all', '.*TREC\.test\.all' not found in "
                                        r"data folder") as error:
        load_task("trec")
    assert_names_both_ways(str(error.value), "trec")


def test_failed_download_is_one_error_naming_both_ways(monkeypatch):
    import datasets

    def unreachable(dataset_id, *args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    for variable in OFFLINE:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("FUSIONKIT_DATA", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match=r"'SetFit/CR' could not be loaded \(ConnectionError: no route") as error:
        load_task("cr")
    assert_names_both_ways(str(error.value), "cr")


@pytest.mark.parametrize("value", ["0", "false", ""])
def test_a_false_offline_value_leaves_the_hub_reachable(monkeypatch, value):
    import datasets

    calls = []

    def load_dataset(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        raise ConnectionError("stop here")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.delenv("FUSIONKIT_DATA", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", value)
    with pytest.raises(DataError, match="could not be loaded"):
        load_task("cr")
    assert calls == ["SetFit/CR"]


def test_folder_without_the_task_falls_back_to_the_hub_when_online(tmp_path, monkeypatch):
    import datasets
    from datasets import Dataset, DatasetDict

    def fake(n, tag):
        return Dataset.from_dict({"text": [f"{tag} {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})

    for variable in OFFLINE:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: DatasetDict({"train": fake(40, "train"),
                                                                               "test": fake(10, "test")}))
    task = load_task("mpqa")
    assert task.origin == "hub:SetFit/mpqa"
    assert re.match(r"file '.*mpqa\.all' not found in data folder .*: loaded from the Hugging Face Hub", task.notes[0])


def test_folder_with_only_some_of_the_files_is_refused_not_replaced_by_the_hub(tmp_path, monkeypatch,
                                                                               hub_never_called):
    for variable in OFFLINE:
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "TREC.train.all").write_text("".join(f"{i % 6} question {i}\n" for i in range(60)))
    with pytest.raises(DataError, match=r"task 'trec': file '.*TREC\.test\.all' not found in data folder"):
        load_task("trec", data_dir=tmp_path)


def test_missing_data_folder_says_how_to_use_the_hub_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"data folder '.*nowhere' \(from FUSIONKIT_DATA\) does not exist .*Hugging "
                                        r"Face Hub instead, unset FUSIONKIT_DATA"):
        load_task("cr")


# ----- (b) with the local folder nothing touches the network, offline mode or not -----

@pytest.mark.parametrize("offline", [True, False])
def test_local_folder_loads_with_the_network_blocked(data_dir, monkeypatch, no_network, hub_never_called, offline):
    for variable in OFFLINE:
        if offline:
            monkeypatch.setenv(variable, "1")
        else:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("FUSIONKIT_DATA", str(data_dir))
    task = load_task("cr")
    assert task.origin == str(data_dir) and len(task.train) == 3014 and len(task.test) == 378
    assert no_network == []


def test_the_network_block_works(no_network):
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


# ----- (c) the Makefile: the shared folder and offline mode when it exists, else neither; the user's wins -----

def make_env(tmp_path: Path, with_shared: bool, **user) -> dict[str, str | None]:
    """Run `make env` in a copy of the Makefile at <tmp>/repo, with or without <tmp>/shared/data/senteval;
    returns the variables it prints (None: unset)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    repo = tmp_path / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Makefile", repo / "Makefile")
    if with_shared:
        (tmp_path / "shared" / "data" / "senteval").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FUSIONKIT_DATA", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", *OFFLINE)}
    env.update(user)
    out = subprocess.run(["make", "-s", "env"], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout
    printed = dict(line.split("=", 1) for line in out.splitlines())
    return {key: None if value.startswith("(unset") else value for key, value in printed.items()}


def shared(tmp_path: Path) -> str:
    return str((tmp_path / "shared" / "data" / "senteval").resolve())


def test_make_uses_the_shared_folder_offline_when_it_exists(tmp_path):
    assert make_env(tmp_path, with_shared=True) == {
        "FUSIONKIT_DATA": shared(tmp_path), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1"}


def test_make_without_the_shared_folder_sets_no_folder_and_stays_online(tmp_path):
    assert make_env(tmp_path, with_shared=False) == {
        "FUSIONKIT_DATA": None, "HF_HUB_OFFLINE": None, "HF_DATASETS_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}


def test_make_keeps_the_users_folder_and_stays_online_for_it(tmp_path):
    printed = make_env(tmp_path, with_shared=True, FUSIONKIT_DATA="/my/data")
    assert printed["FUSIONKIT_DATA"] == "/my/data" and printed["HF_HUB_OFFLINE"] is None
    assert printed["HF_DATASETS_OFFLINE"] is None


def test_make_keeps_the_users_offline_setting(tmp_path):
    online = make_env(tmp_path, with_shared=True, HF_HUB_OFFLINE="0")
    assert online["FUSIONKIT_DATA"] == shared(tmp_path)
    assert online["HF_HUB_OFFLINE"] == online["HF_DATASETS_OFFLINE"] == online["TRANSFORMERS_OFFLINE"] == "0"
    offline = make_env(tmp_path / "bare", with_shared=False, HF_HUB_OFFLINE="1")
    assert offline["FUSIONKIT_DATA"] is None and offline["HF_HUB_OFFLINE"] == offline["HF_DATASETS_OFFLINE"] == "1"


def test_make_as_ci_runs_it_the_shared_folder_given_explicitly_is_offline(tmp_path):
    """.ci/run exports FUSIONKIT_DATA=<parent>/shared/data/senteval itself: the same folder, so offline mode too."""
    given = str(tmp_path / "repo" / ".." / "shared" / "data" / "senteval")
    printed = make_env(tmp_path, with_shared=True, FUSIONKIT_DATA=given)
    assert printed["FUSIONKIT_DATA"] == given and printed["HF_HUB_OFFLINE"] == "1"


def test_make_command_line_folder_wins(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    make_env(tmp_path, with_shared=True)  # writes the copy
    env = {k: v for k, v in os.environ.items() if k not in ("FUSIONKIT_DATA", "MAKEFLAGS", "MAKELEVEL", *OFFLINE)}
    out = subprocess.run(["make", "-s", "env", "FUSIONKIT_DATA=/cli/data"], cwd=tmp_path / "repo", env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "FUSIONKIT_DATA=/cli/data\n" in out and "HF_HUB_OFFLINE=(unset" in out


def test_the_tasks_command_says_where_each_task_would_come_from(tmp_path, data_dir):
    """`fusionkit tasks` agrees with the loader: a whole local copy, a partial one (refused), or the Hub."""
    import shutil

    from typer.testing import CliRunner

    from fusionkit.cli import app

    shutil.copy(data_dir / "TREC.train.all", tmp_path)
    shutil.copy(data_dir / "custrev.all", tmp_path)
    output = CliRunner().invoke(app, ["tasks", "--data-dir", str(tmp_path)]).output
    assert "local: custrev.all" in output
    assert "incomplete local copy: TREC.test.all missing" in output
    assert "hub: SetFit/subj" in output
