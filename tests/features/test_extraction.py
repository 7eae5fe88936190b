"""The extraction skeleton every feature stage runs: splits, shards, one cache with its
provenance, the report and the image report beside the cache."""

import json

import numpy as np
import pytest

from mner.core.cache import CacheReader, provenance
from mner.core.workspace import image_report
from mner.data.conll import Sentence
from mner.data.prepared import write_prepared
from mner.features.images import ImageReport, LoadedImage, blank_image
from mner.runner.extraction import ExtractionReport, prepared_splits, write_cache
from mner.runner.shards import Shard

SPLIT_SIZES = {"train": 5, "valid": 2, "test": 3}


@pytest.fixture
def prepared(tmp_path):
    for split, n in SPLIT_SIZES.items():
        sentences = [Sentence(f"{split}-{i}", str(i), ("w",) * (i + 1), ("O",) * (i + 1)) for i in range(n)]
        write_prepared(tmp_path / f"{split}.jsonl", sentences)
    return tmp_path


def lengths(cache, split, sentences) -> None:
    """A per-split encoder: each tweet's number of words, as a field."""
    cache.write_field(split, "n", [np.array([len(s.tokens)], np.int32) for s in sentences], np.int32)


def test_every_split_is_written_with_its_ids_fields_and_provenance(prepared, tmp_path):
    inputs, splits = prepared_splits(prepared, None)
    assert [p.name for p in inputs] == ["train.jsonl", "valid.jsonl", "test.jsonl"]
    out = tmp_path / "out.h5"
    report = write_cache(out, provenance("lengths", {}, inputs), splits, lengths, ExtractionReport())
    assert report.tweets == 10 and report.seconds > 0
    cache = CacheReader(out)
    assert cache.ids == {split: [f"{split}-{i}" for i in range(n)] for split, n in SPLIT_SIZES.items()}
    assert [int(cache.get("train", "n", i)[0]) for i in range(5)] == [1, 2, 3, 4, 5]
    assert cache.provenance["stage"] == "lengths" and str(inputs[1]) in cache.provenance["inputs"]
    assert not image_report(out).exists()  # a text stage reports no images


def test_a_shard_job_takes_its_own_tweets_of_every_split(prepared):
    shards = [prepared_splits(prepared, Shard(i, 3))[1] for i in range(3)]
    for split, n in SPLIT_SIZES.items():
        ids = sorted(s.id for part in shards for s in part[split])
        assert ids == sorted(f"{split}-{i}" for i in range(n))  # each tweet in exactly one shard


def test_an_image_stage_report_goes_beside_the_cache(prepared, tmp_path):
    inputs, splits = prepared_splits(prepared, None)
    report = ExtractionReport(images=ImageReport())

    def with_images(cache, split, sentences):
        for s in sentences:
            report.images.add(
                split, s.id, s.image_id, LoadedImage(blank_image(4), "missing" if s.id == "test-1" else None)
            )
        lengths(cache, split, sentences)

    write_cache(tmp_path / "out.h5", provenance("lengths", {}, inputs), splits, with_images, report)
    record = json.loads(image_report(tmp_path / "out.h5").read_text())
    assert record["counts"]["test"] == {**record["counts"]["test"], "images": 3, "missing": 1}
    assert [item["id"] for item in record["blank_images"]] == ["test-1"]


def test_a_failing_split_leaves_no_cache(prepared, tmp_path):
    inputs, splits = prepared_splits(prepared, None)

    def fails_on_test(cache, split, sentences):
        if split == "test":
            raise RuntimeError("out of memory")
        lengths(cache, split, sentences)

    with pytest.raises(RuntimeError, match="out of memory"):
        write_cache(
            tmp_path / "out.h5", provenance("lengths", {}, inputs), splits, fails_on_test, ExtractionReport()
        )
    assert list(tmp_path.glob("*.h5")) == [] and not list(tmp_path.glob(".out.h5*"))
