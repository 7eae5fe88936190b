"""A feature stage SIGKILLed at several points: no reader takes what it left for a cache,
the cache already there is kept, and the next run removes the leftovers and writes the
same bytes as a run that was never interrupted."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mner.cache import CacheError, CacheReader
from mner.data.conll import SPLITS, read_conll
from mner.data.prepared import write_prepared
from mner.features.text import TextFeaturesConfig, extract_text_features
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
TWEETS_PER_SPLIT = 12

# Runs the text features stage and kills itself at the COUNT-th call of the named step.
CHILD = """
import json, os, signal, sys
from pathlib import Path

import h5py
import mner.cache
from mner.features.text import TextFeaturesConfig, extract_text_features

step, count, settings, prepared, out = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
calls = 0


def killed_at(original):
    def call(*args, **kwargs):
        global calls
        calls += 1
        if calls == count:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    return call


if step == "item":
    mner.cache.FieldWriter.__setitem__ = killed_at(mner.cache.FieldWriter.__setitem__)
elif step == "close":
    h5py.File.close = killed_at(h5py.File.close)
elif step == "rename":
    mner.cache.os.replace = killed_at(os.replace)
extract_text_features(TextFeaturesConfig(**json.loads(settings)), Path(prepared), Path(out))
"""


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
