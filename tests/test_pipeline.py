"""The offline configuration end to end: `dvc repro` in a fresh copy of the pipeline."""

import json
import re
import subprocess

import pytest
import yaml

from mner.cache import CacheReader
from mner.offline import make_offline_workspace


def dvc(workspace, *args):
    result = subprocess.run(["dvc", *args], cwd=workspace, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ran(output):
    return sorted(re.findall(r"Running stage '([^']+)'", output))


def set_param(workspace, keys, value):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    node = params
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_offline_workspace(tmp_path_factory.mktemp("offline") / "ws")


def test_offline_pipeline_runs_then_is_up_to_date(workspace):
    first = dvc(workspace, "repro")
    datasets, models = ["twitter2015", "twitter2017"], ["linear-crf", "linear-softmax", "transformer-crf"]
    multimodal = ["gei", "gei-image-region", "gei-no-entity-level", "gei-no-span-detection"]
    per_dataset = ("prepare", "text_features", "detect", "parse", "ground", "visual_features")
    expected = sorted(
        [f"{stage}@{d}" for stage in per_dataset for d in datasets]
        + [f"{stage}@{d}-{m}-1" for stage in ("train", "evaluate") for d in datasets for m in models]
        + [
            f"{stage}_multimodal@{d}-{m}-1"
            for stage in ("train", "evaluate")
            for d in datasets
            for m in multimodal
        ]
    )
    assert ran(first) == expected
    assert "Data and pipelines are up to date." in dvc(workspace, "repro")

    metrics = json.loads(dvc(workspace, "metrics", "show", "--json"))
    files = next(iter(metrics.values()))["data"]
    evaluated = [p for p in files if p.endswith("eval/metrics.json")]
    assert len(evaluated) == 6 + 8
    assert set(files[evaluated[0]]["data"]) >= {"precision", "recall", "f1"}
    run = workspace / "runs/twitter2017/transformer-crf/seed1"
    assert (run / "live/plots/metrics/dev_f1.tsv").read_text().count("\n") == 3  # header + 2 epochs
    assert (run / "eval/predictions.txt").read_text().startswith("IMGID:")
    stats = json.loads((workspace / "prepared/twitter2017/stats.json").read_text())
    assert stats["splits"]["test"]["tweets"] == 40
    blank = json.loads((workspace / "features/visual/twitter2017.images.json").read_text())
    assert blank["counts"]["test"] == {
        "images": 40,
        "missing": 1,
        "empty": 0,
        "truncated": 0,
        "undecodable": 1,
    }
    visual = CacheReader(workspace / "features/visual/twitter2017.h5")
    objects = CacheReader(workspace / "features/objects/twitter2017.h5")
    assert visual.ids == objects.ids
    assert len(visual.get("train", "objects", 0)) == len(objects.get("train", "boxes", 0))


def test_swapping_the_detector_reruns_detection_and_what_depends_on_it(workspace):
    set_param(workspace, ["detect", "backend"], "torchvision")
    set_param(workspace, ["detect", "model"], "fasterrcnn_mobilenet_v3_large_320_fpn")
    set_param(workspace, ["detect", "weights"], "")
    out = dvc(workspace, "repro")
    datasets = ("twitter2015", "twitter2017")
    multimodal = ("gei", "gei-image-region", "gei-no-entity-level", "gei-no-span-detection")
    expected = sorted(
        [f"{s}@{d}" for s in ("detect", "visual_features") for d in datasets]
        + [f"{s}_multimodal@{d}-{m}-1" for s in ("train", "evaluate") for d in datasets for m in multimodal]
    )
    assert ran(out) == expected  # the text-only runs do not read the image: they stay
    assert CacheReader(workspace / "features/objects/twitter2017.h5").provenance["backend"] == "torchvision"


def test_a_model_param_reruns_only_that_models_training_and_evaluation(workspace):
    set_param(workspace, ["models", "linear-softmax", "dropout"], 0.2)
    out = dvc(workspace, "repro")
    assert ran(out) == sorted(
        f"{s}@{d}-linear-softmax-1" for s in ("train", "evaluate") for d in ("twitter2015", "twitter2017")
    )


def test_a_train_param_touches_only_training(workspace):
    set_param(workspace, ["train", "lr"], 0.003)
    status = json.loads(dvc(workspace, "status", "--json"))
    assert status and all(name.startswith(("train@", "train_multimodal@")) for name in status)
    assert len(status) == 6 + 8
