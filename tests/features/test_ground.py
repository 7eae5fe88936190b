import json

import numpy as np
import pytest
import torch
from PIL import Image

from mner.core.cache import CacheError, CacheReader, CacheWriter, provenance
from mner.core.config import ConfigError, section
from mner.core.workspace import Workspace
from mner.data.conll import Sentence
from mner.data.prepared import write_prepared
from mner.features.ground import (
    FIELDS,
    ground_dataset,
    pack_prompts,
    query_scores,
    top_k_per_query,
    tweet_queries,
)
from mner.settings.ground import GROUNDERS, GroundConfig, expected_provenance, query_texts
from mner.settings.images import ImagesConfig
from mner.tiny import build_tiny_grounding_dino, build_tiny_owlv2, build_tiny_owlvit

BUILDERS = {
    "grounding-dino": build_tiny_grounding_dino,
    "owlvit": build_tiny_owlvit,
    "owlv2": build_tiny_owlv2,
}
GENERAL = ("person", "location", "organization", "miscellaneous")

# (id, image id, words, phrase spans); img1 is missing and img2 is an empty file: both blank
SPLITS = {
    "train": [
        (
            "tr0",
            "img0",
            ["Kevin", "Durant", "joins", "the", "Warriors", "in", "New", "York"],
            [[0, 2], [3, 5], [6, 8]],
        ),
        ("tr1", "img1", ["hello", "world"], []),
        ("tr2", "img2", ["RT", "@user", ":", "U.S.", "Army", "?"], [[3, 5]]),
    ],
    "valid": [("va0", "img3", ["Paris", "!"], [[0, 1]])],
    "test": [("te0", "img4", ["I", "love", "cats"], [[2, 3]])],
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """backend -> directory of its tiny random model (built once per module)."""
    return {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}


@pytest.fixture
def dataset(tmp_path):
    """Prepared splits, a phrases cache and an image directory under ``tmp_path``."""
    prepared, images = tmp_path / "prepared", tmp_path / "images" / "tw"
    prepared.mkdir()
    images.mkdir(parents=True)
    Image.new("RGB", (120, 80), (200, 30, 30)).save(images / "img0.jpg")
    (images / "img2.jpg").write_bytes(b"")
    Image.new("RGB", (50, 90), (20, 90, 20)).save(images / "img3.jpg")
    Image.new("L", (64, 64), 128).save(images / "img4.jpg")
    with CacheWriter(tmp_path / "phrases.h5", provenance("parse", {})) as cache:
        for split, rows in SPLITS.items():
            sentences = [Sentence(i, img, tuple(words), ("O",) * len(words)) for i, img, words, _ in rows]
            write_prepared(prepared / f"{split}.jsonl", sentences)
            cache.write_ids(split, [s.id for s in sentences])
            spans = [np.asarray(s, dtype=np.int32).reshape(-1, 2) for *_, s in rows]
            cache.write_field(split, "spans", spans, np.int32)
    return prepared, tmp_path / "phrases.h5", ImagesConfig(dir=str(tmp_path / "images"))


def run(dataset, tmp_path, expect_phrases=None, **settings):
    prepared, phrases, images = dataset
    config = GroundConfig(**{"device": "cpu", "batch_size": 2, "num_workers": 1, **settings})
    expect_phrases = expect_phrases or {"stage": "parse"}
    report = ground_dataset(
        config,
        images,
        Workspace.of("tw", prepared, phrases=phrases),
        tmp_path / "grounding.h5",
        expect_phrases=expect_phrases,
    )
    expect = expected_provenance(config, images, {})
    return config, report, CacheReader(tmp_path / "grounding.h5", expect)


def test_config_defaults_and_checks():
    config = section({}, "ground", GroundConfig)
    assert (config.backend, config.top_k, config.general_words) == ("grounding-dino", 1, GENERAL)
    with pytest.raises(ConfigError, match="unknown grounder 'dino'; valid: grounding-dino, owlv2, owlvit"):
        section({"ground": {"backend": "dino"}}, "ground", GroundConfig)
    with pytest.raises(ConfigError, match="ground.top_k: 0 is out of range; allowed: at least 1"):
        section({"ground": {"top_k": 0}}, "ground", GroundConfig)
    with pytest.raises(KeyError, match="unknown grounder 'x'; valid: grounding-dino, owlv2, owlvit"):
        GROUNDERS["x"]


def test_queries_are_phrases_then_general_words_with_fmit_positions():
    words = ["Kevin", "Durant", "joins", "the", "Warriors"]
    queries = tweet_queries(words, np.array([[0, 2], [3, 5]]), GroundConfig())
    assert queries.texts == ["Kevin Durant", "the Warriors", *GENERAL]
    assert queries.positions.tolist() == [[0, 1], [3, 4]] + [[0, 4]] * 4
    assert queries.n_phrases == 2 and not queries.capped
    capped = tweet_queries(words, np.array([[0, 2], [3, 5]]), GroundConfig(max_phrases=1))
    assert capped.texts == ["Kevin Durant", *GENERAL] and capped.capped
    none = tweet_queries(["hi"], np.zeros((0, 2), int), GroundConfig(general_words=()))
    assert none.texts == [] and none.positions.shape == (0, 2)


def test_a_grounded_box_is_named_by_its_query_a_general_word_by_itself_not_the_tweet():
    """What predict and the report show for each grounded box: the box of a general word
    spans the whole tweet in positions, but is named by the word."""
    words = ["Kevin", "Durant", "joins", "the", "Warriors"]
    queries = tweet_queries(words, np.array([[0, 2], [3, 5]]), GroundConfig())
    query = np.array([1, 0, 3, 2])  # boxes of: the Warriors, Kevin Durant, location, person
    names = query_texts(words, query, queries.n_phrases, queries.positions[query], GENERAL)
    assert names == ["the Warriors", "Kevin Durant", "location", "person"]
    assert names == [queries.texts[q] for q in query]


def test_top_k_per_query_keeps_the_best_kept_boxes_of_each_query():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.6], [0.8, 0.2, 0.7]])  # [N=3 boxes, Q=3]
    boxes, query, values = top_k_per_query(scores, scores > 0.25, top_k=2)
    assert query.tolist() == [0, 0, 1, 2, 2]  # query 1 has one box above 0.25
    assert boxes.tolist() == [0, 2, 1, 2, 1]
    np.testing.assert_allclose(values.numpy(), [0.9, 0.8, 0.3, 0.7, 0.6])
    assert len(top_k_per_query(scores, scores > 1.0, top_k=2)[0]) == 0


def test_grounding_dino_prompts_pack_queries_with_exact_token_spans():
    queries = [[5, 6], [7], [], [8, 9, 10, 11, 12, 13]]  # token ids of 4 queries; CLS 1, SEP 2, '.' 3
    prompts, truncated = pack_prompts(0, queries, budget=8, cls=1, sep=2, dot=3)
    assert [p.ids for p in prompts] == [[1, 5, 6, 3, 7, 3, 3, 2], [1, 8, 9, 10, 11, 12, 3, 2]]
    assert [p.spans for p in prompts] == [[(0, 1, 3), (1, 4, 5), (2, 6, 6)], [(3, 1, 6)]]
    assert truncated == 1  # query 3 has 6 tokens, 5 fit next to [CLS] '.' [SEP]
    # a stand-in for the model: token probabilities of 2 boxes over the first prompt
    probs = torch.tensor(
        [[0.9, 0.1, 0.2, 0.95, 0.3, 0.99, 0.0, 0.9], [0.0, 0.6, 0.4, 0.0, 0.7, 0.0, 0.0, 0.0]]
    )
    scores = query_scores(probs, prompts[0])  # delimiters and [CLS]/[SEP] belong to no query
    np.testing.assert_allclose(scores.numpy(), [[0.2, 0.3, -1.0], [0.6, 0.7, -1.0]])


def test_grounding_dino_query_mapping_is_exact_on_the_model(tiny):
    grounder = GROUNDERS["grounding-dino"](
        GroundConfig(
            model=str(tiny["grounding-dino"]), device="cpu", box_threshold=0.0, text_threshold=0.0, top_k=12
        )
    )
    queries = ["The cat", "New York", "U.S. Army", "person"]
    (prompt,) = grounder.prompts([queries])
    tokenizer, processor = grounder.processor.tokenizer, grounder.processor
    decoded = [tokenizer.decode(prompt.ids[start:end]) for _, start, end in prompt.spans]
    assert decoded == ["the cat", "new york", "u s army", "person"]  # '.' is a phrase delimiter
    # the same prompt as the processor writes it, and each query's tokens found from its characters
    text = "the cat. new york. u s army. person."
    encoding = processor(images=[Image.new("RGB", (80, 60))], text=text, return_tensors="pt")
    assert encoding["input_ids"][0].tolist() == prompt.ids
    with torch.no_grad():
        outputs = grounder.model(**encoding)
    probs = outputs.logits[0].sigmoid()  # [N, max_text_len]
    char_spans = [(text.index(q), text.index(q) + len(q)) for q in decoded]
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    post = processor.post_process_grounded_object_detection(
        outputs, threshold=float("-inf"), text_threshold=0.5, target_sizes=[(60, 80)]
    )[0]["boxes"] / torch.tensor([80, 60, 80, 60])  # every box, normalised
    grounding = grounder.ground([Image.new("RGB", (80, 60))], [queries])[0]
    for q, (a, b) in enumerate(char_spans):
        tokens = [t for t, (s, e) in enumerate(offsets) if e > s and a <= s and e <= b]
        expected, order = probs[:, tokens].max(dim=1).values.sort(descending=True)
        np.testing.assert_allclose(grounding.scores[grounding.query == q], expected.numpy(), rtol=1e-5)
        np.testing.assert_allclose(grounding.boxes[grounding.query == q], post[order].clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("backend", ["owlvit", "owlv2"])
def test_owl_boxes_and_scores_match_the_raw_model_outputs(tiny, backend):
    grounder = GROUNDERS[backend](
        GroundConfig(
            backend=backend,
            model=str(tiny[backend]),
            device="cpu",
            select="threshold",
            box_threshold=0.3,
            top_k=3,
        )
    )
    image, queries = Image.new("RGB", (120, 80), (10, 120, 200)), ["the cat", "dog", "person"]
    grounding = grounder.ground([image], [queries])[0]
    inputs = grounder.processor(text=[queries], images=[image], return_tensors="pt")
    with torch.no_grad():
        outputs = grounder.model(**inputs)
    scores = outputs.logits[0].sigmoid()  # [N, Q]
    cx, cy, w, h = outputs.pred_boxes[0].unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)  # relative to the model input
    if backend == "owlv2":  # the input is the image padded to a square at its bottom and right
        xyxy = xyxy * torch.tensor([120 / 120, 120 / 80, 120 / 120, 120 / 80])
    for q in range(len(queries)):
        order = scores[:, q].argsort(descending=True)
        best = [int(i) for i in order[:3] if scores[i, q] > 0.3]
        np.testing.assert_allclose(grounding.scores[grounding.query == q], scores[best, q].numpy(), rtol=1e-5)
        expected = xyxy[best].clamp(0, 1).numpy()
        np.testing.assert_allclose(grounding.boxes[grounding.query == q], expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["grounding-dino", "owlvit", "owlv2"])
def test_ground_dataset_writes_top_k_boxes_per_query_at_threshold_zero(tiny, dataset, tmp_path, backend):
    config, report, cache = run(
        dataset,
        tmp_path,
        backend=backend,
        model=str(tiny[backend]),
        box_threshold=0.0,
        text_threshold=0.0,
        top_k=2,
    )
    assert set(cache.ids) == {"train", "valid", "test"}
    for split, rows in SPLITS.items():
        assert cache.ids[split] == [row[0] for row in rows]
        assert set(cache.fields(split)) == set(FIELDS)
        for i, (_, _, words, spans) in enumerate(rows):
            boxes, scores, query, positions, n_phrases = (cache.get(split, name, i) for name in FIELDS)
            n_queries = len(spans) + 4
            assert boxes.dtype == scores.dtype == np.float32 and query.dtype == positions.dtype == np.int32
            assert boxes.shape == (2 * n_queries, 4) and positions.shape == (2 * n_queries, 2)
            assert ((boxes >= 0) & (boxes <= 1)).all()
            assert query.tolist() == [q for q in range(n_queries) for _ in range(2)]
            heads = [[s, e - 1] for s, e in spans] + [[0, len(words) - 1]] * 4
            assert positions.tolist() == [heads[q] for q in query]
            assert n_phrases.tolist() == [len(spans)]
            assert (scores[::2] >= scores[1::2]).all()  # best first within each query
    assert report.tweets == 5 and report.queries == 5 * 4 + 6 and report.boxes == 2 * report.queries
    assert cache.provenance["backend"] == backend and cache.provenance["box_threshold"] == 0.0
    assert str(dataset[1]) in cache.provenance["inputs"]
    assert report.images.blank("train") == 2 and report.images.blank("valid") == 0
    report.images.write(tmp_path / "images.json")
    counts = json.loads((tmp_path / "images.json").read_text())["counts"]
    assert counts["train"] == {
        "images": 3,
        "missing": 1,
        "empty": 1,
        "truncated": 0,
        "undecodable": 0,
        "too_large": 0,
    }


def test_threshold_above_one_leaves_every_tweet_without_boxes(tiny, dataset, tmp_path):
    config, report, cache = run(
        dataset,
        tmp_path,
        backend="owlv2",
        model=str(tiny["owlv2"]),
        select="threshold",
        box_threshold=1.01,
        max_phrases=1,
        num_workers=0,
    )
    assert report.boxes == 0 and report.empty_tweets == 5 and report.capped_tweets == 1
    assert [len(cache.get("train", "query", i)) for i in range(3)] == [0, 0, 0]
    assert cache.row_shape("train", "boxes") == (4,) and cache.row_shape("train", "positions") == (2,)
    assert cache.get("train", "n_phrases", 0).tolist() == [1]  # tr0 has 3 phrases, capped at 1


def test_thresholds_and_top_k_bound_what_is_kept(tiny, dataset, tmp_path):
    config, report, cache = run(
        dataset,
        tmp_path,
        model=str(tiny["grounding-dino"]),
        select="threshold",
        box_threshold=0.0,
        text_threshold=0.99,
        top_k=3,
    )
    counts = []
    for split, rows in SPLITS.items():
        for i in range(len(rows)):
            scores, query = cache.get(split, "scores", i), cache.get(split, "query", i)
            assert (scores > 0.99).all() and all(np.bincount(query) <= 3)
            counts.append(len(query))
    assert report.boxes == sum(counts) and 0 < sum(counts) < 3 * report.queries


@pytest.mark.parametrize("backend", ["grounding-dino", "owlv2"])
def test_select_best_gives_every_query_top_k_boxes_whatever_the_thresholds(tiny, dataset, tmp_path, backend):
    config, report, cache = run(
        dataset,
        tmp_path,
        backend=backend,
        model=str(tiny[backend]),
        select="best",
        box_threshold=1.01,
        text_threshold=0.99,
        top_k=2,
        num_workers=0,
    )
    assert report.boxes == 2 * report.queries and report.empty_tweets == 0
    for split, rows in SPLITS.items():
        for i in range(len(rows)):
            query = cache.get(split, "query", i)
            assert np.bincount(query).tolist() == [2] * (len(rows[i][3]) + 4)
    assert cache.provenance["params"]["select"] == "best"
    with pytest.raises(ConfigError, match="ground.select must be one of best, threshold, got 'all'"):
        GroundConfig(select="all")


def test_bad_inputs_fail_with_clear_messages(tiny, dataset, tmp_path):
    with pytest.raises(
        ConfigError, match="ground.backend owlv2 needs a owlv2 model; .* is a grounding-dino model"
    ):
        run(dataset, tmp_path, backend="owlv2", model=str(tiny["grounding-dino"]))
    with pytest.raises(
        CacheError,
        match=r"phrases.h5 was built with other settings: params.keep is nothing, expected 'all'. "
        r"Rerun dvc repro parse@tw",
    ):
        run(dataset, tmp_path, {"stage": "parse", "params.keep": "all"}, model=str(tiny["grounding-dino"]))
    prepared, phrases, images = dataset
    write_prepared(prepared / "test.jsonl", [Sentence("other", "img4", ("x",), ("O",))])
    with pytest.raises(
        CacheError,
        match=r"split 'test' lacks 1 of the prepared tweets \(first: other\); rerun dvc repro parse@tw",
    ):
        run(dataset, tmp_path, model=str(tiny["grounding-dino"]))
    assert not (tmp_path / "grounding.h5").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["grounding-dino", "owlv2"])
def test_cuda_with_amp_gives_the_layout_of_cpu(tiny, backend):
    images = [Image.new("RGB", (120, 80), (200, 30, 30)), Image.new("RGB", (50, 90))]
    queries = [["the cat", "new york", *GENERAL], ["dog", *GENERAL]]
    results = {}
    for device in ("cpu", "cuda"):
        config = GroundConfig(
            backend=backend,
            model=str(tiny[backend]),
            device=device,
            box_threshold=0.0,
            text_threshold=0.0,
            top_k=2,
        )
        results[device] = GROUNDERS[backend](config).ground(images, queries)
    for cpu, cuda in zip(results["cpu"], results["cuda"]):
        np.testing.assert_array_equal(cpu.query, cuda.query)
        assert np.isfinite(cuda.scores).all() and ((cuda.boxes >= 0) & (cuda.boxes <= 1)).all()
        np.testing.assert_allclose(np.sort(cuda.scores), np.sort(cpu.scores), atol=0.05)


def test_grounding_dino_splits_long_query_lists_over_prompts_and_keeps_query_indices(tiny):
    config = GroundConfig(
        model=str(tiny["grounding-dino"]), device="cpu", box_threshold=0.0, text_threshold=0.0
    )
    grounder = GROUNDERS["grounding-dino"](config)
    queries = [f"q{i}abcdefgh" for i in range(12)]  # 10 tokens each: 5 queries per prompt of 64 tokens
    prompts = grounder.prompts([queries])
    assert [[q for q, _, _ in p.spans] for p in prompts] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    image = Image.new("RGB", (100, 70), (90, 90, 200))
    together = grounder.ground([image], [queries])[0]
    alone = grounder.ground([image], [queries[5:10]])[0]  # the second prompt, on its own
    assert together.query.tolist() == list(range(12))
    np.testing.assert_allclose(together.scores[5:10], alone.scores, rtol=1e-4)
    np.testing.assert_allclose(together.boxes[5:10], alone.boxes, atol=1e-5)
