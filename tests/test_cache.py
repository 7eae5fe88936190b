import os
import pickle
import subprocess

import h5py
import numpy as np
import pytest

from mner.core.cache import CacheError, CacheReader, CacheWriter, provenance


def make_cache(path, record=None):
    items = [
        np.random.default_rng(i).standard_normal((n, 2, 3)).astype(np.float16)
        for i, n in enumerate([3, 0, 5])
    ]
    with CacheWriter(path, record or {"stage": "example", "params": {"model": "m", "layers": [-1, -2]}}) as c:
        c.write_ids("train", ["a", "b", "c"])
        c.write_field("train", "words", items)
        boxes = c.create_field("train", "boxes", [1, 2, 0], (4,), np.float32)
        boxes[1] = np.ones((2, 4))
        boxes[0] = np.zeros((1, 4))
    return items


def test_round_trip(tmp_path):
    items = make_cache(tmp_path / "c.h5")
    reader = CacheReader(tmp_path / "c.h5")
    assert reader.ids == {"train": ["a", "b", "c"]}
    assert sorted(reader.fields("train")) == ["boxes", "words"]
    for i, item in enumerate(items):
        got = reader.get("train", "words", i)
        assert got.dtype == np.float16 and np.array_equal(got, item)
    assert reader.get("train", "boxes", 1).tolist() == [[1, 1, 1, 1]] * 2
    assert reader.get("train", "boxes", 2).shape == (0, 4)
    assert reader.row_shape("train", "words") == (2, 3)
    assert reader.provenance["params"]["layers"] == [-1, -2]
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["train/words/data"].compression is None


def test_reader_pickles_without_its_handle_and_reopens(tmp_path):
    make_cache(tmp_path / "c.h5")
    reader = CacheReader(tmp_path / "c.h5")
    reader.get("train", "words", 0)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file is None
    assert np.array_equal(clone.get("train", "words", 2), reader.get("train", "words", 2))


def test_provenance_mismatch_names_difference_and_stage(tmp_path):
    make_cache(tmp_path / "c.h5")
    CacheReader(tmp_path / "c.h5", expect={"params.model": "m", "params.layers": (-1, -2)})
    with pytest.raises(CacheError) as caught:
        CacheReader(
            tmp_path / "c.h5",
            expect={"params.model": "bert-base-cased", "stage": "example"},
            rerun="dvc repro text_features@twitter2017",
        )
    message = str(caught.value)
    assert "params.model is 'm', expected 'bert-base-cased'" in message
    assert "Rerun dvc repro text_features@twitter2017" in message
    assert "stage is" not in message  # only what differs is named


def test_missing_provenance_key_is_reported(tmp_path):
    make_cache(tmp_path / "c.h5")
    with pytest.raises(CacheError, match="params.pooling is nothing, expected 'mean'"):
        CacheReader(tmp_path / "c.h5", expect={"params.pooling": "mean"})


def test_failed_write_leaves_no_cache(tmp_path):
    make_cache(tmp_path / "c.h5")
    before = (tmp_path / "c.h5").read_bytes()
    with pytest.raises(RuntimeError), CacheWriter(tmp_path / "c.h5", {"stage": "x"}) as cache:
        cache.write_ids("train", ["a"])
        raise RuntimeError("interrupted")
    assert (tmp_path / "c.h5").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (np.array([[0.0, np.nan]]), "NaN or Inf"),
        (np.array([[np.inf, 0.0]]), "NaN or Inf"),
        (np.array([[1e6, 0.0]]), r"beyond the range of float16 \(largest 1e\+06\)"),
    ],
)
def test_writer_refuses_non_finite_rows_naming_the_item(tmp_path, rows, why):
    make_cache(tmp_path / "c.h5")
    before = (tmp_path / "c.h5").read_bytes()
    with (
        pytest.raises(CacheError, match=rf"c.h5: valid/f item b: non-finite values \({why}\)"),
        CacheWriter(tmp_path / "c.h5", {}) as c,
    ):
        c.write_ids("valid", ["a", "b"])
        c.write_field("valid", "f", [np.zeros((1, 2)), rows], np.float16)
    assert (tmp_path / "c.h5").read_bytes() == before  # the cache already there is kept
    assert [p.name for p in tmp_path.iterdir()] == ["c.h5"]


def test_a_writer_removes_the_temporaries_of_killed_writers(tmp_path):
    make_cache(tmp_path / "c.h5")
    dead = _dead_pid()
    stale = tmp_path / f".c.h5.tmp-{dead}"
    live = tmp_path / f".c.h5.tmp-{os.getppid()}"  # a writer still running
    other = tmp_path / f".d.h5.tmp-{dead}"  # another cache's
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    make_cache(tmp_path / "c.h5")
    assert not stale.exists() and live.exists() and other.exists()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_file_is_marked_as_a_cache_only_when_its_writer_closes(tmp_path):
    writer = CacheWriter(tmp_path / "c.h5", {"stage": "example"})
    with writer as c:
        c.write_ids("train", ["a"])
        c.write_field("train", "f", [np.zeros((1, 2), np.float16)])
        c.file.flush()
        with pytest.raises(CacheError, match="not an mner cache .*a file whose writer was interrupted"):
            CacheReader(writer.tmp_path)
    assert CacheReader(tmp_path / "c.h5").ids == {"train": ["a"]}


def test_writer_checks_row_count(tmp_path):
    with (
        pytest.raises(ValueError, match="item 0: 2 rows given, 1 declared"),
        CacheWriter(tmp_path / "x.h5", {}) as c,
    ):
        c.create_field("train", "f", [1], (2,), np.float32)[0] = np.zeros((2, 2))


def test_bad_caches_fail_clearly(tmp_path):
    with pytest.raises(CacheError, match="cache not found; run dvc repro"):
        CacheReader(tmp_path / "none.h5", rerun="dvc repro")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5 file"):
        CacheReader(tmp_path / "junk.h5")
    make_cache(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f["train/words/offsets"][2] = 1
    with pytest.raises(CacheError, match="train/words/offsets is not monotone"):
        CacheReader(tmp_path / "c.h5")
    make_cache(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "a") as f:
        f["train/words/offsets"][3] = 99
    with pytest.raises(CacheError, match="must run from 0 to 8"):
        CacheReader(tmp_path / "c.h5")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = [1]
    with pytest.raises(CacheError, match="not an mner cache"):
        CacheReader(tmp_path / "plain.h5")


def test_provenance_records_input_hashes_and_version(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    record = provenance("prepare", {"bio": "keep"}, [tmp_path / "in.txt"], model="m")
    assert record["inputs"][str(tmp_path / "in.txt")].startswith("ba7816bf")
    assert record["model"] == "m" and record["stage"] == "prepare" and record["mner_version"]
