"""The feature cache: computed once, reused after, keyed on everything that changes the features."""
import numpy as np
import pytest

from fusionkit.modeling.encoders import load_encoder
from fusionkit.modeling.features import FeatureCache

TEXTS = ["a short one", "a somewhat longer sentence than the first", "third"]


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny", max_length=16)


def test_second_call_reads_the_cache_and_returns_the_same_array(tiny, tmp_path):
    cache = FeatureCache(tmp_path)
    first = cache.features(tiny, TEXTS, "toy", "train")
    second = cache.features(tiny, TEXTS, "toy", "train")
    assert (cache.misses, cache.hits) == (1, 1)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, tiny.encode(TEXTS), rtol=1e-6)


def test_a_new_process_finds_what_an_earlier_one_cached(tiny, tmp_path):
    FeatureCache(tmp_path).features(tiny, TEXTS, "toy", "train")
    later = FeatureCache(tmp_path)
    later.features(tiny, TEXTS, "toy", "train")
    assert later.hits == 1


def test_the_key_changes_with_every_input(tiny, tmp_path):
    cache = FeatureCache(tmp_path)
    base = cache.key(tiny, TEXTS, "toy", "train")
    other_weights = load_encoder("tiny", from_scratch=True, seed=1, max_length=16)
    cls_pooling = load_encoder("tiny", pooling="cls", max_length=16)
    longer = load_encoder("tiny", max_length=32)
    variants = {
        "encoder weights": cache.key(other_weights, TEXTS, "toy", "train"),
        "task": cache.key(tiny, TEXTS, "other", "train"),
        "split": cache.key(tiny, TEXTS, "toy", "test"),
        "texts": cache.key(tiny, TEXTS[:2], "toy", "train"),
        "pooling": cache.key(cls_pooling, TEXTS, "toy", "train"),
        "max length": cache.key(longer, TEXTS, "toy", "train"),
        "layer set": cache.key(tiny, TEXTS, "toy", "train", layers=[1, 2]),
    }
    for what, key in variants.items():
        assert key != base, f"changing the {what} must change the cache key"
    assert len(set(variants.values())) == len(variants)


def test_per_layer_features_have_a_layer_axis(tiny, tmp_path):
    features = FeatureCache(tmp_path).features(tiny, TEXTS, "toy", "train", layers=[0, 1, 2])
    assert features.shape == (3, 3, tiny.hidden_size)


def test_writes_leave_no_temporary_files(tiny, tmp_path):
    FeatureCache(tmp_path).features(tiny, TEXTS, "toy", "train")
    assert [p.suffix for p in tmp_path.iterdir()] == [".npy"]


def test_a_truncated_cache_file_is_moved_aside_and_recomputed(tmp_path):
    from fusionkit.errors import FusionkitWarning

    encoder = load_encoder("tiny")
    cache = FeatureCache(tmp_path)
    texts = ["a good phone", "a bad screen", "fine"]
    first = cache.features(encoder, texts, "toy", "train")
    [path] = tmp_path.glob("*.npy")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.warns(FusionkitWarning, match=r"is damaged .*moved to"):
        again = cache.features(encoder, texts, "toy", "train")
    np.testing.assert_array_equal(first, again)
    assert cache.misses == 2 and len(list((tmp_path / "damaged").iterdir())) == 1
