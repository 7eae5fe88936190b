"""A feature stage SIGKILLed at several points: no reader takes what it left for a cache,
the cache already there is kept, and the next run removes the leftovers and writes the
same bytes as a run that was never interrupted."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mner.core.cache import CacheError, CacheReader
from mner.data.conll import SPLITS, read_conll
from mner.data.prepared import write_prepared
from mner.features.text import extract_text_features
from mner.settings.text import TextFeaturesConfig
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
TWEETS_PER_SPLIT = 12

# The COUNT-th call of a function wrapped by killed_at kills the process (SIGKILL).
KILLED_AT = """
calls = 0


def killed_at(original):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    return call

"""

# Runs the text features stage and kills itself at the COUNT-th call of the named step.
CHILD = (
    """
import json, os, signal, sys
from pathlib import Path

import h5py
import mner.core.cache
from mner.features.text import TextFeaturesConfig, extract_text_features

step, count, settings, prepared, out = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
"""
    + KILLED_AT
    + """
if step == "item":
    mner.core.cache.FieldWriter.__setitem__ = killed_at(mner.core.cache.FieldWriter.__setitem__)
elif step == "close":
    h5py.File.close = killed_at(h5py.File.close)
elif step == "rename":
    mner.core.cache.os.replace = killed_at(os.replace)
extract_text_features(TextFeaturesConfig(**json.loads(settings)), Path(prepared), Path(out))
"""
)


def settings(model) -> dict:
    return {
        "model": str(model),
        "layers": [-1, 0],
        "device": "cpu",
        "batch_size": 4,
        "window": 64,
        "stride": 8,
    }


def config(model) -> TextFeaturesConfig:
    return TextFeaturesConfig(**settings(model))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prepared")
    sentences = read_conll(DATA / "twitter2017" / "valid.txt")
    for i, split in enumerate(SPLITS):
        write_prepared(
            directory / f"{split}.jsonl", sentences[i * TWEETS_PER_SPLIT : (i + 1) * TWEETS_PER_SPLIT]
        )
    return directory


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "text.h5"
    extract_text_features(config(tiny_bert), prepared, out)
    return out.read_bytes()


def killed_run(tiny_bert, prepared, out, step, count):
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            step,
            str(count),
            json.dumps(settings(tiny_bert)),
            str(prepared),
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


@pytest.mark.parametrize(
    ("step", "count"),
    [
        ("item", 1),  # the first tweet of train
        ("item", 7),  # halfway through train
        ("item", TWEETS_PER_SPLIT + 3),  # into valid
        ("close", 1),  # closing the finished file
        ("rename", 1),  # before the rename
    ],
)
def test_a_killed_stage_leaves_no_cache_and_a_rerun_equals_an_uninterrupted_one(
    tiny_bert, prepared, uninterrupted, tmp_path, step, count
):
    out = tmp_path / "text.h5"
    killed_run(tiny_bert, prepared, out, step, count)
    assert not out.exists()
    [leftover] = tmp_path.glob(".text.h5.tmp-*")
    if step == "item":
        with pytest.raises(CacheError):
            CacheReader(leftover)
    extract_text_features(config(tiny_bert), prepared, out)
    assert out.read_bytes() == uninterrupted
    assert [p.name for p in tmp_path.iterdir()] == ["text.h5"]


def test_a_killed_rerun_keeps_the_cache_already_there(tiny_bert, prepared, uninterrupted, tmp_path):
    out = tmp_path / "text.h5"
    out.write_bytes(uninterrupted)
    killed_run(tiny_bert, prepared, out, "item", TWEETS_PER_SPLIT + 3)
    assert out.read_bytes() == uninterrupted
    CacheReader(out)


# Saves a linear-crf checkpoint (seed 1) and kills itself at the COUNT-th call of the named step.
CHECKPOINT_CHILD = (
    """
import os, signal, sys

import torch
import mner.models
from mner.data.labels import TWITTER_LABELS
from mner.models import InputDims, build_model, save_checkpoint

step, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
"""
    + KILLED_AT
    + """
if step == "weights":
    mner.models.save_file = killed_at(mner.models.save_file)
elif step == "rename":
    mner.models.os.replace = killed_at(os.replace)
torch.manual_seed(1)
model = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
save_checkpoint(out, "linear-crf", model, InputDims(2, 16), TWITTER_LABELS, seed=1)
"""
)


@pytest.mark.parametrize(
    ("step", "count", "old_kept"),
    [
        ("weights", 1, True),  # writing the new weights
        ("rename", 1, False),  # the old checkpoint.json removed, nothing renamed yet
        ("rename", 2, False),  # the new weights in place, not yet their checkpoint.json
    ],
)
def test_a_save_killed_midway_leaves_the_old_checkpoint_or_none_and_a_rerun_a_whole_one(
    tmp_path, step, count, old_kept
):
    """Never one run's checkpoint.json beside another's weights; the temporary files of the
    killed save are removed by the next one."""
    from mner.data.labels import TWITTER_LABELS
    from mner.models import CheckpointError, InputDims, build_model, load_checkpoint, save_checkpoint

    out = tmp_path / "checkpoint"
    torch.manual_seed(0)
    old = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_checkpoint(out, "linear-crf", old, InputDims(2, 16), TWITTER_LABELS, seed=0)
    child = subprocess.run(
        [sys.executable, "-c", CHECKPOINT_CHILD, step, str(count), str(out)], cwd=ROOT, capture_output=True
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    if old_kept:
        assert load_checkpoint(out)[1]["seed"] == 0
    else:
        with pytest.raises(CheckpointError, match="checkpoint.json: not found"):
            load_checkpoint(out)
    assert any(p.name.startswith(".") for p in out.iterdir()) == (step == "rename")  # temporaries
    torch.manual_seed(1)
    new = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_checkpoint(out, "linear-crf", new, InputDims(2, 16), TWITTER_LABELS, seed=1)
    loaded, record = load_checkpoint(out)
    assert record["seed"] == 1 and torch.equal(loaded.out.weight, new.out.weight)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.json", "model.safetensors"]


def test_a_second_save_into_the_directory_waits_for_the_first(tmp_path, monkeypatch):
    """Another training saving into the same checkpoint directory while this save is
    between its two renames (its weights in place, not yet its checkpoint.json) waits for
    it, and the result is the later save, whole. Before, 2 of 60 trials of two trainings
    into one directory left one run's checkpoint.json beside the other's weights."""
    import os
    import time

    import mner.models
    from mner.data.labels import TWITTER_LABELS
    from mner.models import InputDims, build_model, load_checkpoint, save_checkpoint

    out, ready = tmp_path / "checkpoint", tmp_path / "ready"
    other = CHECKPOINT_CHILD.replace(
        "save_checkpoint(out,", "open(sys.argv[4], 'w').close()\nsave_checkpoint(out,"
    )
    renames, waited, real_replace = [], [], os.replace

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == 2:  # the weights are in place: let the other save run now
            child = subprocess.Popen(
                [sys.executable, "-c", other, "none", "0", str(out), str(ready)], cwd=ROOT
            )
            while not ready.exists() and child.poll() is None:
                time.sleep(0.1)
            time.sleep(2.0)  # a tiny save takes milliseconds: done by now unless it waits
            waited.append(child.poll() is None)
            real_replace(src, dst)
            waited.append(child)
            return
        real_replace(src, dst)

    monkeypatch.setattr(mner.models.os, "replace", replace)
    torch.manual_seed(0)
    first = build_model("linear-crf", {}, InputDims(2, 16), len(TWITTER_LABELS))
    save_checkpoint(out, "linear-crf", first, InputDims(2, 16), TWITTER_LABELS, seed=0)
    monkeypatch.undo()
    assert waited[0], "the second save did not wait for the first"
    assert waited[1].wait(timeout=60) == 0
    _, record = load_checkpoint(out)
    assert record["seed"] == 1
