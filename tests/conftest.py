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
    """The real SentEval folder: FUSIONKIT_DATA, else ../shared/data/senteval. Skips if neither exists."""
    folder = Path(os.environ.get("FUSIONKIT_DATA") or DEFAULT_DATA)
    if not folder.is_dir():
        pytest.skip(f"real data folder {folder} not present (set FUSIONKIT_DATA)")
    return folder
