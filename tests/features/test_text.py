import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mner.clues import read_clue_set, write_image_text
from mner.core.cache import CacheError, CacheReader, directory_sha256
from mner.core.config import ConfigError
from mner.data.conll import Sentence
from mner.data.prepared import write_prepared
from mner.features.text import EncodeReport, WordEncoder, extract_text_features, load_encoder
from mner.settings.clues import clue_set
from mner.settings.text import TextFeaturesConfig, expected_provenance, expected_text


def encoder(tiny_bert, **overrides):
    config = TextFeaturesConfig(model=str(tiny_bert), layers=(-1, 0), device="cpu", window=64, stride=8)
    config = TextFeaturesConfig(**{**config.__dict__, **overrides})
    return WordEncoder(*load_encoder(config), config)


def direct_forward(enc, words):
    """The model run by hand on one whole tweet: the reference for one-window tweets."""
    encoding = enc.tokenizer(list(words), is_split_into_words=True, return_tensors="pt")
    states = enc.model(**encoding, output_hidden_states=True).hidden_states
    kept = torch.stack([states[i][0] for i in enc.config.layers], dim=1)  # [S, L, D]
    return kept, encoding.word_ids()


def test_short_tweet_matches_a_direct_forward_pass(tiny_bert):
    enc = encoder(tiny_bert)
    words = ["Kevin", "Durant", "joins", "#Warriors", "in", "Oakland"]
    with torch.no_grad():
        reference, word_ids = direct_forward(enc, words)
    first = [word_ids.index(i) for i in range(len(words))]
    out = enc.encode([("t", words)], EncodeReport())[0]
    assert out.shape == (6, 2, 32) and out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), reference[first].numpy(), atol=2e-3)

    mean = encoder(tiny_bert, pooling="mean").encode([("t", words)], EncodeReport())[0]
    positions = [[p for p, w in enumerate(word_ids) if w == i] for i in range(len(words))]
    expected = torch.stack([reference[p].mean(0) for p in positions]).numpy()
    np.testing.assert_allclose(mean.astype(np.float32), expected, atol=2e-3)


def test_long_tweets_use_overlapping_windows_and_keep_every_word(tiny_bert):
    enc = encoder(tiny_bert, window=12, stride=4)
    words = [f"word{i}" for i in range(40)]
    report = EncodeReport()
    out = enc.encode([("long", words), ("short", ["hi"])], report)
    assert [len(o) for o in out] == [40, 1]
    assert report.long_tweets == 1 and report.words == 41
    assert np.isfinite(out[0].astype(np.float32)).all()
    # the first words have their vectors from the first window alone
    first_window = enc.tokenizer(words, is_split_into_words=True, add_special_tokens=False)["input_ids"][
        : enc.inner
    ]
    with torch.no_grad():
        states = enc.model(torch.tensor([enc.prefix + first_window + enc.suffix]), output_hidden_states=True)
    np.testing.assert_allclose(
        out[0][0, 0].astype(np.float32), states.hidden_states[-1][0, len(enc.prefix)].numpy(), atol=2e-3
    )


@pytest.mark.parametrize("n", [1, 10, 11, 37, 100])
def test_each_subword_is_read_from_the_window_where_it_has_most_context(tiny_bert, n):
    enc = encoder(tiny_bert, window=12, stride=4)
    starts, choice = enc.windows(n)
    assert starts[0] == 0 and starts[-1] == max(0, n - enc.inner)
    for p, w in enumerate(choice):
        assert starts[w] <= p < starts[w] + enc.inner
        margin = min(p - starts[w], starts[w] + enc.inner - 1 - p)
        assert all(margin >= min(p - s, s + enc.inner - 1 - p) for s in starts if s <= p < s + enc.inner)


def test_words_without_subwords_become_the_unknown_token_and_are_reported(tiny_bert):
    enc = encoder(tiny_bert)
    report = EncodeReport()
    out = enc.encode([("t7", ["hello", "\u200b", "world"])], report)[0]
    assert out.shape[0] == 3
    assert report.empty_words == ["t7:1"]
    unk = enc.encode([("u", ["hello", enc.tokenizer.unk_token, "world"])], EncodeReport())[0]
    np.testing.assert_array_equal(out, unk)


def test_bad_settings_fail_before_any_work(tiny_bert):
    with pytest.raises(ConfigError, match=r"layers \[-4\] out of range for a model with 3 hidden states"):
        encoder(tiny_bert, layers=(-4,))
    with pytest.raises(  # the pre-flight refuses [-1, -1]; the model's layer count is known only here
        ConfigError,
        match=r"layers \[0, -1, 2\]: 2 is the same hidden state as -1 for a model with 3 hidden states",
    ):
        encoder(tiny_bert, layers=(0, -1, 2))
    with pytest.raises(ConfigError, match="window 1000 must be at most the model's 64 positions"):
        encoder(tiny_bert, window=1000)


def test_extract_writes_a_cache_in_tweet_order_with_provenance(tiny_bert, tmp_path):
    sentences = {
        "train": [Sentence(f"train-{i}", str(i), tuple(["w"] * (5 - i)), ("O",) * (5 - i)) for i in range(4)],
        "valid": [Sentence("valid-0", "9", ("Paris",), ("B-LOC",))],
        "test": [Sentence("test-0", "8", ("Rome", "!"), ("B-LOC", "O"))],
    }
    for split, items in sentences.items():
        write_prepared(tmp_path / f"{split}.jsonl", items)
    config = TextFeaturesConfig(
        model=str(tiny_bert), layers=(-1, -2), device="cpu", window=64, stride=8, batch_size=3
    )
    report = extract_text_features(config, tmp_path, tmp_path / "text.h5")
    assert report.tweets == 6 and report.words == 5 + 4 + 3 + 2 + 1 + 2

    cache = CacheReader(tmp_path / "text.h5", expected_provenance(config))
    assert cache.ids["train"] == [f"train-{i}" for i in range(4)]
    assert [len(cache.get("train", "words", i)) for i in range(4)] == [5, 4, 3, 2]
    assert cache.row_shape("test", "words") == (2, 32)
    assert cache.provenance["hidden_size"] == 32
    assert str(tmp_path / "train.jsonl") in cache.provenance["inputs"]
    alone = WordEncoder(*load_encoder(config), config).encode([("x", ("Rome", "!"))], EncodeReport())[0]
    np.testing.assert_array_equal(cache.get("test", "words", 0), alone)

    other = TextFeaturesConfig(**{**config.__dict__, "layers": (-1, -2, -3, -4)})
    with pytest.raises(CacheError, match=r"params\.layers is \[-1, -2\], expected \(-1, -2, -3, -4\)"):
        CacheReader(tmp_path / "text.h5", expected_provenance(other))


def test_a_local_encoder_rebuilt_under_its_path_is_told_apart(tiny_bert, tmp_path):
    """The cache records the SHA-256 of a local encoder's files: the same directory with
    other weights (rebuilt under the same path) makes the cache stale, where the path alone
    matched before."""
    model = tmp_path / "encoder"
    shutil.copytree(tiny_bert, model)
    for split, words in (("train", ("Paris",)), ("valid", ("Rome",)), ("test", ("Oslo",))):
        write_prepared(tmp_path / f"{split}.jsonl", [Sentence(f"{split}-0", "0", words, ("B-LOC",))])
    config = TextFeaturesConfig(model=str(model), layers=(-1,), device="cpu", window=64, stride=8)
    extract_text_features(config, tmp_path, tmp_path / "text.h5")
    recorded = CacheReader(tmp_path / "text.h5", expected_provenance(config)).provenance["model_sha256"]
    assert recorded == directory_sha256(model)
    weights = model / "model.safetensors"
    state = load_file(weights)
    name = next(iter(state))
    state[name] = state[name] + 1.0
    save_file(state, weights)
    with pytest.raises(
        CacheError, match=rf"model_sha256 is '{recorded}', expected '{directory_sha256(model)}'"
    ):
        CacheReader(tmp_path / "text.h5", expected_provenance(config))
    assert "model_sha256" not in expected_provenance(TextFeaturesConfig(model="bert-base-cased"))


def test_a_clue_is_read_after_its_tweet_as_the_second_text_of_a_pair(tiny_bert):
    """The context route (ITA, PGIM): the tweet, the separator, then the clue, the clue as the
    second segment; the tweet's word vectors are those of a direct forward pass over the pair."""
    enc = encoder(tiny_bert)
    words, clue = ["Kevin", "Durant", "joins", "#Warriors"], "a man in a blue jersey"
    report = EncodeReport()
    out = enc.encode([("t", words)], report, [["  " + clue]])[0]
    pair = enc.tokenizer(list(words), clue.split(), is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        states = enc.model(**pair, output_hidden_states=True).hidden_states
    kept = torch.stack([states[i][0] for i in enc.config.layers], dim=1)
    ids = pair.word_ids()
    first = [ids.index(i) for i in range(len(words))]  # the tweet's words come first
    assert out.shape == (4, 2, 32) and (report.clues, report.clues_truncated) == (1, 0)
    np.testing.assert_allclose(out.astype(np.float32), kept[first].numpy(), atol=2e-3)
    _, input_ids, _, types = enc.model_inputs([("t", words)], EncodeReport(), [[clue]])
    assert input_ids[0].tolist() == pair["input_ids"][0].tolist()
    assert types[0].tolist() == pair["token_type_ids"][0].tolist()
    plain = enc.encode([("t", words)], EncodeReport())[0]
    assert np.abs(out.astype(np.float32) - plain.astype(np.float32)).max() > 0.01  # the clue is read


def test_an_empty_clue_gives_the_plain_word_vectors(tiny_bert):
    """Tweets without a clue, alone or batched beside tweets with one, are read exactly as
    with no clues at all (up to float16 rounding of a batch padded to another length)."""
    enc = encoder(tiny_bert)
    tweets = [("a", ["Durant", "joins", "#Warriors"]), ("b", ["Oakland", "tonight"])]
    plain = enc.encode(tweets, EncodeReport())
    alone = enc.encode(tweets, EncodeReport(), [[], [" "]])
    beside = enc.encode(tweets, EncodeReport(), [[], ["a crowd at an arena " * 5]])
    for p, a in zip(plain, alone):
        np.testing.assert_array_equal(p, a)
    np.testing.assert_allclose(beside[0].astype(np.float32), plain[0].astype(np.float32), atol=2e-3)


def test_a_long_clue_is_cut_to_the_window_and_a_long_tweet_reads_none(tiny_bert):
    enc = encoder(tiny_bert)  # window 64: 62 subwords between [CLS] and [SEP]
    words = ["Durant", "joins", "#Warriors"]
    report = EncodeReport()
    _, input_ids, mask, types = enc.model_inputs([("t", words)], report, [["arena " * 200]])
    assert input_ids.shape == (1, 64) and bool(mask.all()) and report.clues_truncated == 1
    sep = enc.tokenizer.sep_token_id
    tweet = len(enc.subwords(words, "t", EncodeReport())[0])
    assert input_ids[0].tolist().count(sep) == 2 and int(types[0].sum()) == 64 - 1 - tweet - 1
    long_tweet = [f"w{i}" for i in range(80)]
    report = EncodeReport()
    enc.model_inputs([("long", long_tweet)], report, [["a caption"]])
    assert (report.long_tweets, report.clues, report.clues_dropped) == (1, 0, 1)


def test_clue_cells_are_the_clue_texts_read_alone_word_by_word(tiny_bert):
    """The clue kind's cells: each clue text read by itself as its words (not after the
    tweet), each word the mean of the kept layers; the texts' words one after the other, then
    their mean first. An empty clue has no cells and a zero mean."""
    enc = encoder(tiny_bert)
    tweets = [("a", ["Durant", "joins"]), ("b", ["Oakland"])]
    cells = enc.clue_cells(tweets, [["a man in blue", "the arena"], [" "]])
    alone = [enc.encode([("x", text.split())], EncodeReport())[0] for text in ("a man in blue", "the arena")]
    expected = np.concatenate([v.astype(np.float32).mean(axis=1) for v in alone])  # [6, D]
    mean, words = cells[0]
    assert words.shape == (6, 32) and mean.shape == (1, 32)
    np.testing.assert_allclose(words.astype(np.float32), expected, atol=2e-3)
    np.testing.assert_allclose(mean.astype(np.float32), expected.mean(axis=0, keepdims=True), atol=2e-3)
    mean, words = cells[1]
    assert words.shape == (0, 32) and not mean.any()


def test_several_clue_texts_are_read_one_after_the_other_between_separators(tiny_bert):
    enc = encoder(tiny_bert)
    words = ["Durant", "joins"]
    _, two, _, _ = enc.model_inputs([("t", words)], EncodeReport(), [["a caption", "some knowledge"]])
    pair = enc.tokenizer(
        list(words), ["a", "caption", "[SEP]", "some", "knowledge"], is_split_into_words=True
    )
    assert two[0].tolist() == pair["input_ids"]


def test_a_cache_read_with_clues_records_them_and_refuses_an_edited_clue_file(tiny_bert, tmp_path):
    """The cache of a clue set records the set and each file's SHA-256; what a run expects of
    it (``expected_text``) is computed from the files as they are now, so the cache read from
    a clue file that was edited since is refused, naming the hashes."""
    prepared = tmp_path / "prepared"
    sentences = {
        "train": [Sentence("train-0", "1", ("Anna", "in", "Rome"), ("B-PER", "O", "B-LOC"))],
        "valid": [Sentence("valid-0", "2", ("Paris",), ("B-LOC",))],
        "test": [Sentence("test-0", "3", ("Rome", "!"), ("B-LOC", "O"))],
    }
    prepared.mkdir()
    for split, items in sentences.items():
        write_prepared(prepared / f"{split}.jsonl", items)
    (tmp_path / "data/d/clues").mkdir(parents=True)
    clue_file = tmp_path / "data/d/clues/own.tsv"
    write_image_text(clue_file, {"1": "a woman in a square", "2": "the eiffel tower", "3": "a stadium"})
    text = {"model": str(tiny_bert), "layers": [-1], "device": "cpu", "window": 64, "stride": 8}
    params = {
        "text_features": text,
        "clues": {"own": {"format": "image-text", "path": "data/{dataset}/clues/own.tsv"}},
    }
    config = TextFeaturesConfig(**{**text, "layers": (-1,)})
    clues = read_clue_set("own", clue_set(params, "own"), "d", sentences, tmp_path)
    report = extract_text_features(config, prepared, tmp_path / "text.h5", clues=clues)
    assert report.clues == 3
    expect = expected_text(params, "own", "d", tmp_path)
    cache = CacheReader(tmp_path / "text.h5", expect)
    assert cache.get("train", "clue_words", 0).shape == (5, 32)  # "a woman in a square"
    assert cache.get("test", "clue", 0).shape == (1, 32)  # the mean of "a stadium"'s 2 cells
    assert cache.provenance["clues"]["name"] == "own" and len(cache.provenance["clues"]["sha256"]) == 1
    with pytest.raises(CacheError, match=r"params\.model is"):  # not the plain cache's expectation
        CacheReader(
            tmp_path / "text.h5", expected_text({**params, "text_features": {}}, "own", "d", tmp_path)
        )
    write_image_text(clue_file, {"1": "a man in a square", "2": "the eiffel tower", "3": "a stadium"})
    with pytest.raises(CacheError, match=r"clues\.sha256 is \['[0-9a-f]{64}'\], expected \['[0-9a-f]{64}'\]"):
        CacheReader(tmp_path / "text.h5", expected_text(params, "own", "d", tmp_path))
