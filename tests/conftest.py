"""Shared test setup: never touch the network, find the real data, build small fixtures once."""
import os
from pathlib import Path

# Set before transformers/datasets are imported anywhere: tests must never reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "senteval"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real SentEval folder: FUSIONKIT_DATA, else ../shared/data/senteval. Skips if neither exists. Made absolute
    here: tests that run a report from a temporary folder pass it on, where a relative FUSIONKIT_DATA (read from
    the repository) would name no folder."""
    folder = Path(os.environ.get("FUSIONKIT_DATA") or DEFAULT_DATA).resolve()
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not present (set FUSIONKIT_DATA)")
    return folder


def write_toy_csv(path: Path, n: int, seed: int) -> Path:
    """A two-class sentiment toy: the label is carried by the words, so even a tiny model can learn it."""
    import random

    rng = random.Random(seed)
    good, bad = ["good", "great", "lovely", "fine"], ["bad", "awful", "poor", "broken"]
    filler = ["the", "phone", "screen", "battery", "it", "was", "really", "quite", "very"]
    rows, seen = ["text,label"], set()
    for i in range(n):
        label = i % 2
        while True:  # every text differs: a repeated one would leak across splits and be dropped
            words = rng.sample(filler, 4) + [rng.choice(good if label else bad)]
            rng.shuffle(words)
            if " ".join(words) not in seen:
                break
        seen.add(" ".join(words))
        rows.append(f"{' '.join(words)},{'pos' if label else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="session")
def toy_csv():
    """write_toy_csv for tests that build their own files (a fixture: notebooks/conftest.py is also "conftest")."""
    return write_toy_csv


@pytest.fixture(scope="session")
def toy_task(tmp_path_factory):
    """A small user task (CSV, string labels) loaded through the public loader."""
    from fusionkit import load_task_from_files

    folder = tmp_path_factory.mktemp("toy")
    return load_task_from_files(write_toy_csv(folder / "toy.csv", 120, seed=0), name="toy")


@pytest.fixture(scope="session")
def toy_source(tmp_path_factory):
    from fusionkit import load_task_from_files

    folder = tmp_path_factory.mktemp("toy_source")
    return load_task_from_files(write_toy_csv(folder / "src.csv", 80, seed=1), name="toysrc")
