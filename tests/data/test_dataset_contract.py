"""The dataset contract the models rely on: items, tags, word shapes, the visual cells and
their positions, the padded batch, and the cache checks with messages that name the
stage to rerun."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mner.cached.dataset import (
    TAG_FIELDS,
    CachedMultimodalDataset,
    CachedTextDataset,
    FeatureCaches,
    add_visual,
    collate,
    text_item,
)
from mner.core.cache import CacheError, CacheReader, CacheWriter
from mner.core.workspace import Workspace
from mner.data.labels import BOUNDARY_TAGS, SPAN_TAGS, TWITTER_LABELS, WORD_SHAPES, entity_tags, word_shape
from mner.data.prepared import read_prepared
from mner.tagger import VISUAL_KINDS
from tests.synthetic import TEXT_CONFIG, StandInModel, write_synthetic, write_synthetic_visual


@pytest.fixture
def caches(tmp_path):
    prepared, text = write_synthetic(tmp_path, sizes=(6, 4, 4))
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    return prepared, CacheReader(text), CacheReader(visual), CacheReader(grounding)


def train_sentences(prepared):
    return read_prepared(prepared / "train.jsonl")


def test_tag_vocabularies_are_the_documented_ones():
    """Span tags are untyped BIO, boundary tags O/B/E, shapes start with the padding."""
    assert SPAN_TAGS == ("O", "B", "I") and BOUNDARY_TAGS == ("O", "B", "E")
    assert WORD_SHAPES[0] == "pad" and len(set(WORD_SHAPES)) == len(WORD_SHAPES) == 11
    assert TAG_FIELDS == ("labels", "shapes", "span_tags", "boundary_tags")
    assert tuple(VISUAL_KINDS) == ("objects", "grounded", "grid", "clue")


@pytest.mark.parametrize(
    ("token", "shape"),
    [
        ("https://x.co", "url"),
        ("www.nasa.gov", "url"),
        ("http:x", "lower"),
        ("@a", "mention"),
        ("@", "punct"),
        ("#1", "hashtag"),
        ("a", "lower"),
        ("A", "upper"),
        ("Ab1", "title"),
        ("aB", "mixed"),
        ("McDonald", "mixed"),
        ("3-4", "digits"),
        ("...", "punct"),
        ("ß", "lower"),
        ("Ǆ", "upper"),
        ("ǅ", "other"),  # a titlecase letter: neither lower nor upper
        ("中a", "other"),  # a letter without case first
        ("Xbox", "title"),
        ("ABc", "mixed"),
    ],
)
def test_word_shape_of_each_surface_form(token, shape):
    """A token's shape: URL, @mention, #hashtag (with a body), else its letters' casing,
    digits or punctuation; letters with no case are "other"."""
    assert WORD_SHAPES[word_shape(token)] == shape


def test_a_text_item_without_labels_has_zero_tags():
    """A tweet without labels (prediction) gets zero labels, span and boundary tags."""
    features = np.ones((3, 2, 4), dtype=np.float16)
    item = text_item(5, ["Hi", "@you", "x"], features)
    assert item["index"] == 5 and item["features"].dtype == torch.float16
    assert item["features"].shape == (3, 2, 4)
    for name in ("labels", "span_tags", "boundary_tags"):
        assert item[name].tolist() == [0, 0, 0] and item[name].dtype == torch.long
    assert [WORD_SHAPES[s] for s in item["shapes"].tolist()] == ["title", "mention", "lower"]


def test_a_text_item_with_labels_has_their_ids_and_entity_tags():
    """Labels become their vocabulary ids; span and boundary tags follow the entities."""
    labels = ["B-PER", "I-PER", "O", "B-LOC"]
    ids = {label: i for i, label in enumerate(TWITTER_LABELS)}
    item = text_item(0, ["a", "b", "c", "d"], np.zeros((4, 1, 2), dtype=np.float16), labels, ids)
    assert item["labels"].tolist() == [TWITTER_LABELS.index(label) for label in labels]
    assert item["span_tags"].tolist() == [1, 2, 0, 1]
    assert item["boundary_tags"].tolist() == [1, 2, 0, 1]


def test_entity_tags_of_a_long_entity_mark_only_its_first_and_last_word():
    """A boundary tag is B on an entity's first word, E on its last, O inside."""
    spans, boundaries = entity_tags(["O", "B-ORG", "I-ORG", "I-ORG", "I-ORG"])
    assert spans.tolist() == [0, 1, 2, 2, 2] and boundaries.tolist() == [0, 1, 0, 0, 2]
    spans, boundaries = entity_tags(["O", "O"])
    assert spans.tolist() == [0, 0] and boundaries.tolist() == [0, 0]
    assert spans.dtype == boundaries.dtype == torch.long


def test_add_visual_puts_the_image_first_then_at_most_limit_cells():
    """The visual vectors are the whole image, then the first ``limit`` extra rows (all
    without a limit), as float16; each spans the tweet unless grounded to its phrase."""
    item = {"labels": torch.zeros(4, dtype=torch.long)}
    image = np.full((1, 2), 9.0, dtype=np.float32)
    extra = np.arange(10, dtype=np.float32).reshape(5, 2)
    out = add_visual(dict(item), image, extra, None, limit=2)
    assert out["visual"].dtype == torch.float16
    assert out["visual"].tolist() == [[9.0, 9.0], [0.0, 1.0], [2.0, 3.0]]
    assert out["visual_positions"].tolist() == [[0, 3]] * 3 and out["visual_positions"].dtype == torch.long
    positions = np.array([[0, 1], [2, 2], [1, 3], [0, 0], [3, 3]])
    grounded = add_visual(dict(item), image, extra, positions, limit=2)
    assert grounded["visual_positions"].tolist() == [[0, 3], [0, 1], [2, 2]]
    alone = add_visual(dict(item), image, extra[:0], None, limit=2)
    assert alone["visual"].tolist() == [[9.0, 9.0]] and alone["visual_positions"].tolist() == [[0, 3]]
    assert len(add_visual(dict(item), image, extra, None)["visual"]) == 6  # no limit: every row


def test_collate_pads_every_field_on_the_right():
    """A batch: float32 features, long tag fields and a bool mask, zeros on the padding."""
    items = [
        text_item(3, ["A", "b"], np.ones((2, 2, 3), dtype=np.float16), ["B-PER", "O"], {"B-PER": 1, "O": 0}),
        text_item(7, ["c"], np.full((1, 2, 3), 2.0, dtype=np.float16), ["B-PER"], {"B-PER": 1, "O": 0}),
    ]
    b = collate(items)
    assert b["index"].tolist() == [3, 7] and set(b) == {"index", "features", "mask", *TAG_FIELDS}
    assert b["features"].dtype == torch.float32 and b["features"].shape == (2, 2, 2, 3)
    assert b["features"][1, 0].eq(2.0).all() and b["features"][1, 1].eq(0.0).all()
    assert b["mask"].dtype == torch.bool and b["mask"].tolist() == [[True, True], [True, False]]
    assert b["labels"].tolist() == [[1, 0], [1, 0]] and b["span_tags"].tolist() == [[1, 0], [1, 0]]
    assert b["shapes"].tolist() == [[WORD_SHAPES.index("upper"), WORD_SHAPES.index("lower")], [1, 0]]
    for name in TAG_FIELDS:
        assert b[name].dtype == torch.long


def test_collate_pads_the_visual_cells_with_a_mask():
    """Visual inputs: float32 ``[B, V, C]``, their positions and a mask, padded right."""
    base = text_item(0, ["a", "b"], np.zeros((2, 1, 1), dtype=np.float16))
    one = add_visual(dict(base), np.ones((1, 2)), np.full((2, 2), 3.0), np.array([[0, 0], [1, 1]]), 8)
    two = add_visual(dict(base), np.ones((1, 2)), np.zeros((0, 2)), None, 8)
    b = collate([two, one])
    assert b["visual"].dtype == torch.float32 and b["visual"].shape == (2, 3, 2)
    assert b["visual"][0].tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert b["visual"][1].tolist() == [[1.0, 1.0], [3.0, 3.0], [3.0, 3.0]]
    assert b["visual_mask"].tolist() == [[True, False, False], [True, True, True]]
    assert b["visual_positions"].tolist() == [[[0, 1], [0, 0], [0, 0]], [[0, 1], [0, 0], [1, 1]]]
    assert b["visual_positions"].dtype == torch.long


def test_text_dataset_items_are_the_cached_vectors_of_each_tweet(caches):
    """Item ``i`` of a split is its tweet's cached word vectors, labels and tags."""
    prepared, text, _, _ = caches
    sentences = train_sentences(prepared)
    data = CachedTextDataset(text, "train", sentences, TWITTER_LABELS)
    assert len(data) == len(sentences) == 6
    for i in (0, 5):
        item = data[i]
        assert item["index"] == i
        assert np.array_equal(item["features"].numpy(), text.get("train", "words", i))
        assert item["labels"].tolist() == [TWITTER_LABELS.index(label) for label in sentences[i].labels]


def test_a_text_cache_of_other_sentences_is_refused_naming_the_rerun(caches):
    """A split whose ids are not the prepared sentences' is refused, naming the split, the
    counts and the stage to rerun; so is a missing split."""
    prepared, text, _, _ = caches
    sentences = train_sentences(prepared)
    text.rerun = "dvc repro text_features@d"
    with pytest.raises(CacheError, match=r"split 'train' does not match .*\(6 ids vs 5 sentences.*dvc repro"):
        CachedTextDataset(text, "train", sentences[:5], TWITTER_LABELS)
    with pytest.raises(CacheError, match=r"split 'nope' .*\(no such split vs 6 sentences"):
        CachedTextDataset(text, "nope", sentences, TWITTER_LABELS)


def test_a_tweet_with_the_wrong_number_of_word_vectors_is_refused(caches):
    """A tweet whose cached vectors do not match its words names the tweet and counts."""
    prepared, text, _, _ = caches
    sentences = train_sentences(prepared)
    longer = dataclasses.replace(sentences[2], tokens=(*sentences[2].tokens, "x"))
    sentences = [*sentences[:2], longer, *sentences[3:]]
    n = len(longer.tokens)
    with pytest.raises(
        CacheError, match=rf"train item train-2 has {n - 1} word vectors for {n} words; rerun"
    ):
        CachedTextDataset(text, "train", sentences, TWITTER_LABELS)


@pytest.mark.parametrize("kind", ["objects", "grounded", "grid"])
def test_multimodal_items_read_the_kind_they_are_given(caches, kind):
    """Each item's visual cells are the whole image then the ``kind`` rows of its tweet."""
    prepared, text, visual, grounding = caches
    sentences = train_sentences(prepared)
    data = CachedMultimodalDataset(
        text, visual, grounding, "train", sentences, TWITTER_LABELS, kind, limit=None
    )
    assert data.kind == VISUAL_KINDS[kind] and data.limit is None
    for i in range(len(data)):
        item = data[i]
        rows = np.concatenate([visual.get("train", "image", i), visual.get("train", kind, i)])
        assert np.array_equal(item["visual"].numpy(), rows.astype(np.float16))
        if kind == "grounded":
            assert np.array_equal(
                item["visual_positions"][1:].numpy(), grounding.get("train", "positions", i)
            )
    default = CachedMultimodalDataset(text, visual, grounding, "train", sentences, TWITTER_LABELS)
    assert default.kind.name == "objects" and default.limit is None


def test_a_visual_cache_of_other_sentences_is_refused(caches):
    """A visual or grounding cache of other tweets is refused, naming its stage."""
    prepared, text, visual, grounding = caches
    sentences = read_prepared(prepared / "valid.jsonl")
    visual.rerun, grounding.rerun = "dvc repro visual_features@d", "dvc repro ground@d"
    train = train_sentences(prepared)
    other = [dataclasses.replace(s, id=f"x{i}") for i, s in enumerate(train)]
    text.rerun = "dvc repro text_features@d"
    with pytest.raises(CacheError, match=r"split 'train' does not match .*rerun dvc repro text"):
        CachedMultimodalDataset(text, visual, grounding, "train", other, TWITTER_LABELS)
    visual_ids = visual.ids["train"]
    try:
        visual.ids["train"] = [f"x{i}" for i in range(len(train))]
        with pytest.raises(
            CacheError, match=rf"{visual.path}: split 'train' .*rerun dvc repro visual_features@d"
        ):
            CachedMultimodalDataset(text, visual, grounding, "train", train, TWITTER_LABELS, "objects")
    finally:
        visual.ids["train"] = visual_ids
    grounding_ids = grounding.ids["train"]
    try:
        grounding.ids["train"] = [f"x{i}" for i in range(len(train))]
        CachedMultimodalDataset(
            text, visual, grounding, "train", train, TWITTER_LABELS, "objects"
        )  # not read
        with pytest.raises(CacheError, match=rf"{grounding.path}: split 'train' .*rerun dvc repro ground@d"):
            CachedMultimodalDataset(text, visual, grounding, "train", train, TWITTER_LABELS, "grounded")
    finally:
        grounding.ids["train"] = grounding_ids
    assert len(CachedMultimodalDataset(text, visual, grounding, "valid", sentences, TWITTER_LABELS)) == len(
        sentences
    )


def crafted_cache(path, record, sentences, **fields):
    """A cache with provenance ``record`` of the train split of ``sentences``, every item
    with the same rows of each of ``fields``."""
    with CacheWriter(path, record) as writer:
        writer.write_ids("train", [s.id for s in sentences])
        for field, rows in fields.items():
            writer.write_field("train", field, [rows] * len(sentences))
    return path


def test_a_visual_cache_without_the_kind_is_refused_naming_the_field(tmp_path, caches):
    """A visual cache without the asked kind (grid: false) says which features it lacks."""
    prepared, text, _, _ = caches
    sentences = train_sentences(prepared)
    vectors = np.zeros((1, 8), dtype=np.float16)
    record = {"stage": "visual_features", "params": {"grid": False}, "feature_dim": 8}
    path = crafted_cache(
        tmp_path / "no-grid.h5", record, sentences, image=vectors, objects=vectors, grounded=vectors
    )
    visual = CacheReader(path, rerun="dvc repro visual_features@d")
    with pytest.raises(
        CacheError, match=r"no-grid.h5 has no 'grid' features; rerun dvc repro visual_features@d"
    ):
        CachedMultimodalDataset(text, visual, None, "train", sentences, TWITTER_LABELS, "grid")


def test_grounded_objects_must_agree_with_their_positions(tmp_path, caches):
    """Grounded features and grounding positions of different counts are refused."""
    prepared, text, visual, _ = caches
    sentences = train_sentences(prepared)
    positions = np.zeros((3, 2), dtype=np.int32)
    boxes, scores, ones = np.zeros((3, 4), np.float32), np.zeros(3, np.float32), np.ones(3, np.int32)
    path = crafted_cache(
        tmp_path / "ground.h5",
        {"stage": "ground", "params": {}},
        sentences,
        boxes=boxes,
        scores=scores,
        query=ones,
        positions=positions,
        n_phrases=ones[:1],
    )
    grounding = CacheReader(path)
    with pytest.raises(CacheError, match=r"visual.h5 and .*ground.h5 disagree on the grounded objects"):
        CachedMultimodalDataset(text, visual, grounding, "train", sentences, TWITTER_LABELS, "grounded")


def test_feature_caches_give_each_model_the_dataset_it_reads(tmp_path):
    """A text-only model gets text items; a multimodal one its ``visual_kind``: the first
    ``max_visual - 1`` objects after the whole image, or every grid cell."""
    prepared, text = write_synthetic(tmp_path, sizes=(4, 4, 4))
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    expect = {"text": {"params.model": TEXT_CONFIG.model}, "visual": {}, "grounding": {}}
    caches = FeatureCaches.open(Workspace.of("d", text=text, visual=visual, grounding=grounding), expect)
    assert (
        caches.visual.rerun == "dvc repro visual_features@d"
        and caches.grounding.rerun == "dvc repro ground@d"
    )
    assert caches.text.rerun == "dvc repro text_features@d"
    sentences = train_sentences(prepared)
    data = caches.dataset(StandInModel(), "train", sentences, TWITTER_LABELS)
    assert type(data) is CachedTextDataset
    few = caches.dataset(StandInModel("objects", max_visual=2), "train", sentences, TWITTER_LABELS)
    assert isinstance(few, CachedMultimodalDataset) and few.kind.name == "objects" and few.limit == 1
    assert len(few[2]["visual"]) == 2  # the image and 1 of its 2 objects
    grid = caches.dataset(StandInModel("grid", max_visual=2), "train", sentences, TWITTER_LABELS)
    assert grid.limit is None and len(grid[0]["visual"]) == 5  # the image and every grid cell
    # the caches a run's expectations name, whatever else the workspace holds
    text_only = FeatureCaches.open(Workspace.of("d", text=text, visual=visual), {"text": {}})
    assert text_only.visual is None and text_only.grounding is None
    with pytest.raises(
        CacheError, match="^this model reads visual features: give it the visual_features and ground caches$"
    ):
        text_only.dataset(StandInModel("objects"), "train", sentences, TWITTER_LABELS)
    no_ground = FeatureCaches.open(Workspace.of("d", text=text, visual=visual), {"text": {}, "visual": {}})
    assert no_ground.grounding is None
    assert no_ground.dataset(StandInModel("grid"), "train", sentences, TWITTER_LABELS).kind.name == "grid"
    with pytest.raises(CacheError, match="give it the visual_features and ground caches"):
        no_ground.dataset(StandInModel("grounded"), "train", sentences, TWITTER_LABELS)


def test_unknown_visual_kind_lists_the_valid_ones(caches):
    """An unknown visual kind is refused listing the valid kinds."""
    prepared, text, visual, grounding = caches
    with pytest.raises(KeyError, match="unknown visual kind 'boxes'; valid: clue, grid, grounded, objects"):
        CachedMultimodalDataset(
            text, visual, grounding, "train", train_sentences(prepared), TWITTER_LABELS, "boxes"
        )
