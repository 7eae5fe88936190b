"""Sharded feature extraction: shard selection, the merge and its checks, and every feature
stage run as 2 shards (torchrun with gloo, and independent jobs) against one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mner.cli import main
from mner.core.cache import CacheError, CacheReader, CacheWriter, provenance
from mner.data.conll import SPLITS
from mner.data.prepared import read_prepared
from mner.offline import make_offline_workspace
from mner.runner.shards import Shard, merge_shards, select, shard_of
from tests.synthetic import write_synthetic


def test_shard_of_is_a_stable_partition():
    # sha256-based: the same on every machine and Python run (str hash() is salted)
    assert [shard_of(i, 4) for i in ("0", "1", "2", "3", "1015")] == [
        int.from_bytes(__import__("hashlib").sha256(i.encode()).digest()[:8], "big") % 4
        for i in ("0", "1", "2", "3", "1015")
    ]
    assert shard_of("1015", 4) == shard_of("1015", 4)
    ids = [str(i) for i in range(200)]
    parts = [Shard(k, 3).select(ids, key=str) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(parts)
    assert select(ids, None) == ids


def test_shard_parse_and_path(tmp_path):
    assert Shard.parse("1/4") == Shard(1, 4) and str(Shard(1, 4)) == "1/4"
    assert (
        Shard(1, 4).path(tmp_path / "features/objects/t.h5") == tmp_path / "features/objects/t.shard1-of-4.h5"
    )
    for bad in ("4/4", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="need 0 <= i < n"):
            Shard.parse(bad)
    with pytest.raises(ValueError, match="expected i/n"):
        Shard.parse("1of4")


def write_shards(prepared, out, count, record=None, skip=()):
    """A cache per shard of the prepared splits: field ``rows`` with (index of the tweet in
    its split) + 1 rows of that index, so a misplaced row is visible."""
    for k in range(count):
        shard = Shard(k, count)
        with CacheWriter(shard.path(out), record or provenance("synthetic", {"x": 1})) as cache:
            for split in SPLITS:
                order = {s.id: i for i, s in enumerate(read_prepared(prepared / f"{split}.jsonl"))}
                items = [i for i in shard.select(list(order), key=str) if i not in skip]
                cache.write_ids(split, items)
                cache.write_field(
                    split, "rows", [np.full((order[i] + 1, 2), order[i], np.int32) for i in items]
                )


def test_merge_restores_the_prepared_order(tmp_path):
    prepared, _ = write_synthetic(tmp_path)
    out = tmp_path / "features" / "synthetic.h5"
    write_shards(prepared, out, 3)
    (Shard(1, 3).path(out).with_suffix(".images.json")).write_text(
        json.dumps(
            {
                "no_directory": False,
                "counts": {"train": {"images": 5, "missing": 1}},
                "blank_images": [{"id": "a"}],
            }
        )
    )
    (Shard(2, 3).path(out).with_suffix(".images.json")).write_text(
        json.dumps(
            {"no_directory": False, "counts": {"train": {"images": 7, "missing": 0}}, "blank_images": []}
        )
    )
    merge_shards(out, 3, prepared)
    cache = CacheReader(out)
    assert cache.provenance["stage"] == "synthetic"
    for split in SPLITS:
        ids = [s.id for s in read_prepared(prepared / f"{split}.jsonl")]
        assert cache.ids[split] == ids
        for i in range(len(ids)):
            assert (cache.get(split, "rows", i) == i).all() and len(cache.get(split, "rows", i)) == i + 1
    report = json.loads(out.with_suffix(".images.json").read_text())
    assert report["counts"] == {"train": {"images": 12, "missing": 1}} and report["blank_images"] == [
        {"id": "a"}
    ]
    assert not list(out.parent.glob("*.shard*"))  # merged shards are removed


def test_merge_refuses_bad_shards_and_keeps_them(tmp_path):
    prepared, _ = write_synthetic(tmp_path)
    out = tmp_path / "synthetic.h5"
    write_shards(prepared, out, 2)
    Shard(1, 2).path(out).unlink()
    with pytest.raises(CacheError, match=r"shard files not found: .*synthetic.shard1-of-2.h5"):
        merge_shards(out, 2, prepared)

    write_shards(prepared, out, 2, skip={"valid-3"})
    with pytest.raises(CacheError, match="split valid: 1 prepared tweets are in no shard .first: valid-3"):
        merge_shards(out, 2, prepared)

    write_shards(prepared, out, 2)
    with CacheWriter(Shard(1, 2).path(out), provenance("synthetic", {"x": 2})) as cache:
        cache.write_ids("train", [])
    with pytest.raises(
        CacheError, match=r"shard1-of-2.h5 was built with other settings .* differs in: params"
    ):
        merge_shards(out, 2, prepared)

    write_shards(prepared, out, 3)  # files of 3 shards merged as 2: ids in the wrong shard
    Shard(0, 2).path(out).write_bytes(Shard(0, 3).path(out).read_bytes())
    Shard(1, 2).path(out).write_bytes(Shard(1, 3).path(out).read_bytes())
    with pytest.raises(
        CacheError, match="tweet .* belongs to shard ., not .; was it written with another --shard"
    ):
        merge_shards(out, 2, prepared)
    assert not out.exists() and Shard(0, 2).path(out).is_file()  # nothing computed is lost


def test_merge_shards_command_names_the_problem(tmp_path, capsys):
    prepared, _ = write_synthetic(tmp_path)
    out = tmp_path / "synthetic.h5"
    write_shards(prepared, out, 2)
    assert main(["merge-shards", str(out), "--shards", "2", "--prepared", str(prepared), "--keep"]) == 0
    assert CacheReader(out).ids["train"] == [s.id for s in read_prepared(prepared / "train.jsonl")]
    assert Shard(0, 2).path(out).is_file()  # --keep
    assert main(["merge-shards", str(out), "--shards", "3", "--prepared", str(prepared)]) == 2
    assert "shard files not found" in capsys.readouterr().err


# Every feature stage of the offline configuration, as one process and as 2 shards.
STAGES = [
    ("text_features", "features/text/twitter2017.h5"),
    ("detect", "features/objects/twitter2017.h5"),
    ("parse", "features/phrases/twitter2017.h5"),
    ("ground", "features/grounding/twitter2017.h5"),
    ("visual_features", "features/visual/twitter2017.h5"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    workspace = make_offline_workspace(tmp_path_factory.mktemp("sharded") / "ws")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["prepare"]["limit"] = 12
    for stage in ("detect", "ground"):  # DETR-style models pad a batch to its largest image
        params[stage]["batch_size"] = 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(workspace, sys.executable, "stages/prepare.py", "--dataset", "twitter2017")
    return workspace


def run(workspace, *command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def contents(path):
    cache = CacheReader(path)
    fields = {
        (split, field): [cache.get(split, field, i) for i in range(len(ids))]
        for split, ids in cache.ids.items()
        for field in cache.fields(split)
    }
    return cache.provenance, cache.ids, fields


def assert_same_cache(merged, single):
    provenance, ids, fields = contents(merged)
    assert (provenance, ids) == contents(single)[:2]
    for key, items in contents(single)[2].items():
        assert len(fields[key]) == len(items)
        for a, b in zip(fields[key], items):
            assert a.dtype == b.dtype and a.shape == b.shape, key
            np.testing.assert_allclose(
                a.astype(np.float32), b.astype(np.float32), atol=2e-3, err_msg=str(key)
            )


@pytest.mark.pipeline
def test_every_feature_stage_runs_as_two_shards(workspace):
    """Each stage: one process, then ``torchrun --nproc_per_node 2`` (rank i runs shard i,
    rank 0 merges); the merged cache must equal the single-process one (ids, provenance,
    every row), and the next stage reads it."""
    for stage, cache in STAGES:
        run(workspace, sys.executable, f"stages/{stage}.py", "--dataset", "twitter2017")
        single = workspace / cache
        single.rename(single.with_suffix(".single.h5"))
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        run(workspace, *torchrun, f"stages/{stage}.py", "--dataset", "twitter2017")
        assert_same_cache(single, single.with_suffix(".single.h5"))
        assert not list(single.parent.glob("*.shard*"))
        report = single.with_suffix(".images.json")
        if report.exists():
            assert json.loads(report.read_text())["counts"]["train"]["images"] == 12


@pytest.mark.pipeline
def test_independent_shard_jobs_then_merge_shards(workspace):
    cache = workspace / "features/phrases/twitter2017.h5"
    if not cache.exists():
        run(workspace, sys.executable, "stages/parse.py", "--dataset", "twitter2017")
    single = cache.with_suffix(".jobs-single.h5")
    cache.rename(single)
    for shard in ("0/2", "1/2"):
        run(workspace, sys.executable, "stages/parse.py", "--dataset", "twitter2017", "--shard", shard)
    assert sorted(p.name for p in cache.parent.glob("twitter2017.shard*")) == [
        "twitter2017.shard0-of-2.h5",
        "twitter2017.shard1-of-2.h5",
    ]
    run(workspace, "mner", "merge-shards", "features/phrases/twitter2017.h5", "--shards", "2")
    assert_same_cache(cache, single)
