"""The analyze stage's measurements of one run (mner.analysis), which the report reads."""

import json

import pytest

from mner.analysis import ANALYSIS_FILES, analyze_run, report_reads, write_analysis
from mner.core.workspace import run_dir
from mner.runs import Pipeline
from tests.test_visual_use import SIZES, params, train_run, write_workspace

LAUNCHED = {"cross_domain": [], "cross_domain_runs": [], "train_launcher": "python"}
MODELS = {"fmit": {}, "gei": {}, "gei-no-span-detection": {"model": "gei"}, "fmit-no-obj": {"model": "fmit"}}


def pipeline(visual, datasets=("d",)) -> dict:
    runs = {"text": [], "visual": list(visual)}
    lists = {"datasets": list(datasets), "runs": runs, "seeds": [1]}
    return {"pipeline": {**LAUNCHED, "extract_launcher": "python", **lists}}


def test_the_report_reads_the_speed_on_the_first_dataset_and_the_rest_of_main_runs():
    visual = ["gei-no-span-detection", "fmit", "gei", "fmit-no-obj"]
    built = Pipeline.from_params(pipeline(visual, ("a", "b")))
    # a model's main run is the one named after it, wherever it is listed
    assert report_reads(built, MODELS, "a", "fmit") == (True, True, True)
    assert report_reads(built, MODELS, "b", "fmit", visual_use=False) == (False, True, False)
    assert report_reads(built, MODELS, "a", "gei") == (True, True, True)
    assert report_reads(built, MODELS, "a", "gei-no-span-detection") == (True, False, False)
    assert report_reads(built, MODELS, "b", "fmit-no-obj") == (False, False, False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_main_run_on_the_first_dataset_gets_its_speed_attention_and_visual_use(tmp_path, monkeypatch):
    write_workspace(tmp_path)
    train_run(tmp_path, "fmit")
    report = {"speed_batches": 1, "batch_size": 4}
    settings = {**params(), **pipeline(["fmit", "fmit-no-obj"]), "report": report}
    settings["models"]["fmit-no-obj"] = {**settings["models"]["fmit"], "model": "fmit"}
    monkeypatch.chdir(tmp_path)  # the stage's paths: relative to the workspace
    analysis = analyze_run(run_dir("d", "fmit", 1), settings)
    speed = analysis["speed"]
    assert speed["run"] == "fmit" and speed["parameters"] > 0 and speed["seconds"] > 0
    assert (speed["batches"], speed["tweets"]) == (1, SIZES["test"])
    assert analysis["attention"]["figure"].startswith("FMIT's word -> visual attention")
    example = analysis["attention"]["example"]
    assert example["run"] == "fmit" and example["dataset"] == "d" and example["entities"]
    assert example["names"][0] == "whole image" and len(example["boxes"]) == len(example["names"])
    assert all(len(e["weights"]) == len(example["boxes"]) for e in example["entities"])
    assert set(analysis["visual_use"]["conditions"]) == {"own", "blank", "deranged"}
    written = write_analysis(run_dir("d", "fmit", 1), analysis)
    assert [p.name for p in written] == [f"{name}.json" for name in ANALYSIS_FILES]
    assert json.loads(written[0].read_text()) == speed
