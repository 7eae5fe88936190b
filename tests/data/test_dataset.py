import re

import pytest
import torch

from mner.cached.dataset import CachedMultimodalDataset, collate
from mner.core.cache import CacheError, CacheReader
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import read_prepared
from tests.synthetic import write_synthetic, write_synthetic_visual


@pytest.fixture
def caches(tmp_path):
    prepared, text = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    return prepared, CacheReader(text), CacheReader(visual), CacheReader(grounding)


@pytest.mark.parametrize(
    ("kind", "extra"), [("objects", [0, 1, 2]), ("grounded", [2, 2, 2]), ("grid", [4, 4, 4])]
)
def test_visual_items_put_the_whole_image_first(caches, kind, extra):
    prepared, text, visual, grounding = caches
    sentences = read_prepared(prepared / "train.jsonl")
    data = CachedMultimodalDataset(text, visual, grounding, "train", sentences, TWITTER_LABELS, kind)
    for i in range(3):
        item = data[i]
        assert len(item["visual"]) == 1 + extra[i]
        torch.testing.assert_close(item["visual"][0], torch.from_numpy(visual.get("train", "image", i))[0])
        n = len(sentences[i].tokens)
        if kind == "grounded":
            assert item["visual_positions"].tolist() == [[0, n - 1], [0, 1], [1, 2]]
        else:
            assert item["visual_positions"].tolist() == [[0, n - 1]] * (1 + extra[i])


def test_limit_and_collate(caches):
    prepared, text, visual, grounding = caches
    sentences = read_prepared(prepared / "train.jsonl")
    data = CachedMultimodalDataset(
        text, visual, grounding, "train", sentences, TWITTER_LABELS, "grid", limit=2
    )
    assert len(data[0]["visual"]) == 3
    batch = collate(
        [data[0], CachedMultimodalDataset(text, visual, grounding, "train", sentences, TWITTER_LABELS)[0]]
    )
    assert batch["visual"].shape == (2, 3, 8) and batch["visual"].dtype == torch.float32
    assert batch["visual_mask"].tolist() == [[True] * 3, [True, False, False]]
    assert batch["visual_positions"].shape == (2, 3, 2)


@pytest.mark.parametrize(
    ("overrides", "cells", "visual_rows_read"),
    [
        ({"model": "gei", "max_visual": 2}, 2, 2),  # the whole image and the first of 2 objects
        ({"model": "gei", "max_visual": 2, "image_region": True}, 5, 5),  # the image and all 4 grid cells
        ({"model": "fmit", "max_visual": 2}, 2, 3),  # and the first grounded object's positions
        ({"model": "fmit", "max_visual": 2, "objects": False}, 5, 5),
    ],
)
def test_a_model_reads_its_cap_of_objects_and_every_grid_cell(
    caches, overrides, cells, visual_rows_read, monkeypatch
):
    from mner.cached.dataset import FeatureCaches
    from mner.models import InputDims, build_model

    prepared, text, visual, grounding = caches
    sentences = read_prepared(prepared / "train.jsonl")
    overrides = dict(overrides)  # the parameters are shared between runs
    name, config = overrides.pop("model"), {"heads": 2, **overrides}
    model = build_model(name, config, InputDims(2, 16, visual_dim=8), len(TWITTER_LABELS))
    read = []
    get = CacheReader.get
    monkeypatch.setattr(CacheReader, "get", lambda self, *a: read.append(get(self, *a)) or read[-1])
    item = FeatureCaches(text, visual, grounding).dataset(model, "train", sentences, TWITTER_LABELS)[2]
    assert len(item["visual"]) == cells
    assert sum(map(len, read)) == len(sentences[2].tokens) + visual_rows_read  # only the rows kept


def test_mismatched_visual_cache_is_refused(caches):
    prepared, text, visual, grounding = caches
    sentences = read_prepared(prepared / "train.jsonl")
    with pytest.raises(CacheError, match="does not match the prepared sentences"):
        CachedMultimodalDataset(
            text, visual, grounding, "valid", read_prepared(prepared / "valid.jsonl")[:-1], TWITTER_LABELS
        )
    with pytest.raises(KeyError, match="unknown visual kind 'regions'"):
        CachedMultimodalDataset(text, visual, grounding, "train", sentences, TWITTER_LABELS, "regions")


@pytest.mark.parametrize("at", [[3, 2], [-1, 0], [0, 5], [500, 700]])
def test_grounded_word_positions_outside_their_tweet_are_refused(tmp_path, at):
    """Head and tail word of each grounded box: 0 <= head <= tail < the tweet's words (the
    train split's tweet 0 has 5)."""
    import shutil

    import h5py

    prepared, text = write_synthetic(tmp_path)
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    sentences = read_prepared(prepared / "train.jsonl")

    def grounded_with(position, path):
        shutil.copy(grounding, path)
        with h5py.File(path, "r+") as f:
            f["train/positions/data"][1] = position  # the second box of tweet train-0
        readers = (CacheReader(text), CacheReader(visual), CacheReader(path))
        return CachedMultimodalDataset(*readers, "train", sentences, TWITTER_LABELS, "grounded")

    with pytest.raises(CacheError) as refused:
        grounded_with(at, tmp_path / "bad.h5")
    assert str(refused.value) == (
        f"{tmp_path / 'bad.h5'}: train/positions item train-0 holds {at}, not a head and a tail word of "
        "its tweet (0 <= head <= tail < its words); rerun the stage that writes it"
    )
    assert grounded_with([4, 4], tmp_path / "good.h5")[0]["visual_positions"][2].tolist() == [
        4,
        4,
    ]  # a one-word phrase, the last
    # the image's own cells carry no positions: read as before
    grid = CachedMultimodalDataset(
        CacheReader(text), CacheReader(visual), None, "train", sentences, TWITTER_LABELS, "grid"
    )
    assert len(grid) == len(sentences)


def test_entity_tags_follow_conlleval_chunks():
    from mner.data.labels import entity_tags

    spans, boundaries = entity_tags(["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-ORG", "I-ORG", "B-MISC"])
    assert spans.tolist() == [1, 2, 0, 1, 1, 2, 2, 1]
    assert boundaries.tolist() == [1, 2, 0, 1, 1, 0, 2, 1]


def test_gold_labels_outside_the_models_are_refused_naming_the_tweet(caches):
    """A model trained on other entity types (a cross-domain pair whose datasets differ)."""
    from dataclasses import replace

    from mner.cached.dataset import CachedTextDataset

    prepared, text, _, _ = caches
    sentences = read_prepared(prepared / "valid.jsonl")
    retyped = [replace(sentences[0], labels=("B-product", *sentences[0].labels[1:])), *sentences[1:]]
    labels = re.escape(", ".join(TWITTER_LABELS))
    refusal = (
        rf"^valid tweet {sentences[0].id}: label 'B-product' is not one of the model's labels \({labels}\); "
    )
    with pytest.raises(ValueError, match=refusal):
        CachedTextDataset(text, "valid", retyped, TWITTER_LABELS)
    assert len(CachedTextDataset(text, "valid", sentences, TWITTER_LABELS)) == len(sentences)
