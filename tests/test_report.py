import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from mner import published
from mner.core.config import to_dict
from mner.core.workspace import image_report, run_dir
from mner.data.conll import Sentence, write_conll
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import write_prepared
from mner.models import InputDims, build_model, model_config, save_checkpoint
from mner.report import (
    ReportConfig,
    _figures,
    _markdown,
    aggregate,
    counterpart,
    describe_run,
    efficiency,
    evaluated_scheme,
    model_name,
    results_table,
    run_setups,
    speed_warning,
    write_report,
)
from mner.runs import Pipeline
from mner.settings.images import ImagesConfig
from mner.settings.visual import VisualConfig
from mner.sources import import_closure
from tests.conftest import REPO

RUNS = {"text": ["linear-crf"], "gei": ["gei"], "fmit": ["fmit"]}
LAUNCHED = {
    "cross_domain": [],
    "cross_domain_runs": [],
    "train_launcher": "python",
    "extract_launcher": "python",
}
FAMILIES = {"gei": RUNS["gei"], "fmit": RUNS["fmit"]}  # the visual runs by registered model
SETUP = "tiny-bert, layers -1 -2, first pooling, 32-d; d_m 8"
COUNTERPARTS = {"linear-crf": "BERT-CRF", "gei": "GEI", "fmit": "FMIT (l=3)"}  # of the runs' records


def text_provenance(model: str = "models/tiny-bert") -> dict:
    """A text cache's provenance as the text_features stage records it."""
    params = {"model": model, "revision": "main", "layers": [-1, -2], "pooling": "first"}
    return {"stage": "text_features", "params": params, "model": model, "hidden_size": 32}


def pipeline(seeds, root=Path("."), datasets=("twitter2015",)) -> Pipeline:
    runs = {"text": RUNS["text"], "visual": [*RUNS["gei"], *RUNS["fmit"]]}
    return Pipeline.from_params(
        {"pipeline": {**LAUNCHED, "datasets": list(datasets), "runs": runs, "seeds": seeds}}, root
    )


def metrics(f1: float) -> dict:
    return {"precision": f1, "recall": f1, "f1": f1, **{f"f1_{t}": f1 for t in ("PER", "LOC", "ORG", "MISC")}}


def record(seeds, batches=40) -> dict:
    runs = [run for family in RUNS.values() for run in family]
    results = {run: aggregate([metrics(0.5 + 0.01 * s) for s in seeds]) for run in runs}
    speed = [
        {"run": r, "parameters": 20000, "seconds": 0.02, "batches": batches, "tweets": 1000, "speedup": 1.0}
        for r in ("gei", "fmit")
    ]
    return {
        "settings": {"scheme": "conlleval", "bio": "keep", "images": {}},
        "seeds": list(seeds),
        "setup": {"twitter2015": dict.fromkeys(runs, SETUP)},
        "counterparts": {"twitter2015": COUNTERPARTS},
        "results": {"twitter2015": results},
        "cross_domain": {},
        "efficiency": speed,
        "blank_images": {},
        "case_study": {},
        "visual_use": {},
    }


ATTENTION = {"attention-gei": "GEI's entity -> object attention (last layer) drawn over a test tweet's image"}
FIGURES = [Path(f"reports/figures/{name}-twitter2015.png") for name in ("curves", "type-f1", "attention-gei")]


def markdown(seeds, batches=40, speed_batches=0) -> str:
    config = ReportConfig(speed_batches=speed_batches)
    return _markdown(
        pipeline(seeds), config, record(seeds, batches), FAMILIES, FIGURES, Path("reports"), ATTENTION
    )


def test_one_seed_prints_n_1_and_no_std():
    text = markdown([1])
    assert "ours: one seed (n = 1, seed 1), so no std" in text
    assert "±" not in text
    assert (
        f"| **gei** (ours, cf. GEI) | 51.00 | 51.00 | 51.00 | 51.00 | 51.00 | 51.00 | 51.00 | 1 | {SETUP} |"
        in text
    )


def test_several_seeds_print_mean_and_std_and_their_number():
    text = markdown([1, 2, 3])
    assert "ours: mean ± std over n = 3 seeds (1, 2, 3)" in text
    row = next(line for line in text.splitlines() if line.startswith("| **fmit** (ours"))
    assert row.count("52.00 ± 1.00") == 7 and row.endswith(f"| 3 | {SETUP} |")


def test_published_rows_keep_their_columns_and_say_so():
    text = markdown([1])
    assert "| model | PER | LOC | ORG | MISC | P | R | F1 | n | setup |" in text
    assert "FMIT (l=3) (published, FMIT T2) | 86.77 | 83.93" in text
    assert "| 67.15 | - | - |" in text  # CNN-BiLSTM-CRF: no n, no setup


def test_the_speed_table_warns_under_ten_timed_batches():
    assert "**Warning:**" not in markdown([1], batches=10)
    assert "(seed 1 checkpoints, 10 batches of 32 per run, this machine)" in markdown([1], batches=10)
    text = markdown([1], batches=3, speed_batches=3)
    assert "timed only 3 batches of the test set per run (`report.speed_batches` is 3)" in text
    rows = record([1], batches=2)["efficiency"]
    assert "the test set has only 2 batches of 32" in speed_warning(rows, ReportConfig())
    assert speed_warning(record([1], batches=12)["efficiency"], ReportConfig(speed_batches=12)) is None


def condition(f1: float, own: float, changed_tweets: float, changed_words: float) -> dict:
    return {
        **{k: f1 for k in ("precision", "recall", "f1")},
        "delta_f1": f1 - own,
        "entities": 12,
        "changed_tweets": changed_tweets,
        "changed_words": changed_words,
    }


def test_the_visual_use_section_has_a_row_per_run_and_condition():
    conditions = {
        "own": condition(0.5, 0.5, 0.0, 0.0),
        "blank": condition(0.45, 0.5, 0.2, 0.05),
        "deranged": condition(0.5, 0.5, 0.0, 0.0),
    }
    data = {**record([1]), "visual_use": {"twitter2015": {"fmit": {"conditions": conditions}}}}
    text = _markdown(pipeline([1]), ReportConfig(), data, FAMILIES, FIGURES, Path("reports"))
    section = text[text.index("## Visual use: Twitter-2015 (`mner visual-use`)") : text.index("## Figures")]
    assert "| fmit | own | 50.00 | 50.00 | 50.00 | +0.00 | 12 | 0.0% | 0.0% |" in section
    assert "| fmit | blank | 45.00 | 45.00 | 45.00 | -5.00 | 12 | 20.0% | 5.0% |" in section
    assert "| fmit | deranged | 50.00 | 50.00 | 50.00 | +0.00 | 12 | 0.0% | 0.0% |" in section
    assert "## Visual use" not in markdown([1])  # report.visual_use off: no section


def test_the_figures_section_names_the_png_files_for_offline_readers():
    text = markdown([1])
    section = text[text.index("## Figures") :]
    assert "PNG files in `reports/figures/`" in section and "`dvc plots show`" in section
    assert "- `curves-twitter2015.png`: dev F1 and training loss per epoch" in section
    assert "- `type-f1-twitter2015.png`: test F1 per entity type" in section
    assert "- `attention-gei-twitter2015.png`: GEI's entity -> object attention" in section
    assert "![curves-twitter2015](figures/curves-twitter2015.png)" in section


def test_model_names_local_directories_by_their_name(tmp_path):
    (tmp_path / "models/tiny-bert").mkdir(parents=True)
    assert model_name("models/tiny-bert", tmp_path) == "tiny-bert"
    assert model_name("/opt/weights/bert-large", tmp_path) == "bert-large"
    assert model_name("bert-base-cased", tmp_path) == "bert-base-cased"
    assert model_name("google-bert/bert-base-cased", tmp_path) == "google-bert/bert-base-cased"  # a hub id


ENCODER = "tiny-bert, layers -1 -2, first pooling, 32-d"


@pytest.mark.parametrize(
    ("name", "visual", "setup"),
    [
        ("linear-crf", False, ENCODER),
        ("transformer-crf", False, f"{ENCODER}; hidden 256, ff 1024, layers 2, heads 4"),
        ("gei", True, f"{ENCODER}; resnet152; text_hidden 768, d_m 512, layers 6, heads 8"),
        ("fmit", True, f"{ENCODER}; resnet152; d 512, ff 2048, layers 3, heads 8"),
    ],
)
def test_describe_run_names_the_encoder_and_the_models_widths(tmp_path, name, visual, setup):
    (tmp_path / "models/tiny-bert").mkdir(parents=True)
    checkpoint = {"config": to_dict(model_config(name, {})), "text_features": text_provenance()}
    if visual:
        checkpoint["visual_features"] = {"stage": "visual_features", "params": to_dict(VisualConfig())}
    assert describe_run(checkpoint, tmp_path) == setup


def test_run_setups_read_each_runs_first_seed_checkpoint(tmp_path):
    config = model_config("transformer-crf", {"hidden": 16, "layers": 1, "heads": 2, "ff": 32})
    model = build_model("transformer-crf", config, InputDims(2, 32), len(TWITTER_LABELS))
    out = tmp_path / run_dir("twitter2015", "transformer-crf", 2) / "checkpoint"
    save_checkpoint(
        out,
        "transformer-crf",
        model,
        InputDims(2, 32),
        TWITTER_LABELS,
        text_features=text_provenance("bert-base-cased"),
    )
    setups = run_setups(pipeline([2, 3], tmp_path), "twitter2015", ["transformer-crf"])
    widths = "hidden 16, ff 32, layers 1, heads 2"
    assert setups == {"transformer-crf": f"bert-base-cased, layers -1 -2, first pooling, 32-d; {widths}"}


def test_a_dataset_of_its_own_gets_its_types_and_no_published_rows():
    """A dataset that no paper reports: its own entity types as columns, no published row
    and no table cited in the headings; the Twitter sets keep the papers' rows."""
    mine = {"f1": 0.5, "precision": 0.6, "recall": 0.4, "f1_person": 0.7, "f1_product": 0.2}
    families = {"gei": RUNS["gei"]}
    runs = {"text": RUNS["text"], "visual": RUNS["gei"]}
    own = Pipeline.from_params({"pipeline": {**LAUNCHED, "datasets": ["shops"], "runs": runs, "seeds": [1]}})
    data = {
        **record([1]),
        "setup": {"shops": dict.fromkeys(["linear-crf", "gei"], SETUP)},
        "counterparts": {"shops": COUNTERPARTS},
        "results": {"shops": {run: aggregate([mine]) for run in ("linear-crf", "gei")}},
        "efficiency": [],
    }
    text = _markdown(own, ReportConfig(), data, families, FIGURES, Path("reports"))
    assert "## Main results: shops\n" in text and "### Ablations of GEI" not in text  # nothing beside gei
    assert "| model | person | product | P | R | F1 | n | setup |" in text
    assert f"| **gei** (ours) | 70.00 | 20.00 | 60.00 | 40.00 | 50.00 | 1 | {SETUP} |" in text
    assert "cf." not in text  # no published row here to compare with
    assert "published" not in text.split("## Efficiency")[0].split("## Main results")[1]
    twitter = markdown([1])
    assert "## Main results: Twitter-2015 (FMIT Table 2, GEI Table 1)" in twitter
    assert "### Ablations of GEI: Twitter-2015 (GEI Table 1)" in twitter  # the paper's ablations beside gei
    assert "| model | PER | LOC | ORG | MISC | P | R | F1 | n | setup |" in twitter


RENDERER_ONLY = (
    "mner/cached",
    "mner/evaluation.py",
    "mner/visual_use.py",
    "mner/posts.py",
    "mner/analysis.py",
)


def test_the_report_imports_no_model_running_code():
    """The renderer reads files: neither it nor what it imports runs a model (mner.analysis
    does, in the analyze stages), so a code edit there reruns no inference."""
    closure = {str(p) for p in import_closure(REPO / "stages/report.py", REPO)}
    assert not [p for p in closure if p.startswith(RENDERER_ONLY)]
    assert not [p for p in closure if p.startswith("mner/features/") and p != "mner/features/images.py"]
    assert not [p for p in closure if p.startswith("mner/models/") and p != "mner/models/__init__.py"]
    assert "import torch" not in (REPO / "mner/report.py").read_text()


def files_workspace(root: Path, speeds: dict[str, float], visual_use: dict | None = None) -> Pipeline:
    """A workspace with what the report reads of one seed of linear-crf, gei and fmit on
    twitter2015: the test set, each run's metrics, scores, predictions and checkpoint record
    (no weights: the report runs no model), and the visual runs' analysis files."""
    gold = [Sentence(f"t{i}", f"img{i}", ("Obama", "in", "Paris"), ("B-PER", "O", "B-LOC")) for i in range(3)]
    (root / "prepared/twitter2015").mkdir(parents=True)
    write_prepared(root / "prepared/twitter2015/test.jsonl", gold)
    for run, model in (("linear-crf", "linear-crf"), ("gei", "gei"), ("fmit", "fmit")):
        out = root / run_dir("twitter2015", run, 1)
        (out / "eval").mkdir(parents=True)
        (out / "checkpoint").mkdir()
        (out / "eval/metrics.json").write_text(json.dumps(metrics(0.5)))
        (out / "eval/scores.json").write_text(json.dumps({"scheme": "strict"}))
        found = [replace(s, labels=("B-PER", "O", "O") if run == "linear-crf" else s.labels) for s in gold]
        write_conll(out / "eval/predictions.txt", found)
        record = {"model": model, "config": {}, "inputs": {}, "labels": list(TWITTER_LABELS)}
        (out / "checkpoint/checkpoint.json").write_text(
            json.dumps({**record, "text_features": text_provenance()})
        )
        if run in speeds:
            analysis = {
                "speed": {"run": run, "parameters": 2000, "seconds": speeds[run], "batches": 1, "tweets": 3},
                "attention": {"figure": f"{run}'s figure from its analysis", "example": None},
                "visual_use": (visual_use or {}).get(run),
            }
            (out / "analysis").mkdir()
            for name, value in analysis.items():
                (out / "analysis" / f"{name}.json").write_text(json.dumps(value))
    runs = {"text": ["linear-crf"], "visual": ["gei", "fmit"]}
    return Pipeline.from_params(
        {"pipeline": {**LAUNCHED, "datasets": ["twitter2015"], "runs": runs, "seeds": [1]}}, root
    )


def test_the_report_renders_from_the_run_and_analysis_files(tmp_path, monkeypatch):
    used = {"conditions": {"own": condition(0.5, 0.5, 0.0, 0.0), "blank": condition(0.25, 0.5, 1.0, 0.5)}}
    built = files_workspace(tmp_path, {"gei": 0.04, "fmit": 0.01}, {"gei": used, "fmit": used})
    monkeypatch.setattr("mner.report._figures", lambda *args: [])  # drawn in tests/test_figures.py
    monkeypatch.setattr(
        "torch.nn.Module.__call__", lambda *args, **kwargs: pytest.fail("the report ran a model")
    )
    config = ReportConfig(baseline="linear-crf", speed_batches=1)
    settings = {"scheme": evaluated_scheme(built), "bio": "keep", "images": {}}
    record = write_report(built, config, settings, tmp_path / "reports")
    text = (tmp_path / "reports/results.md").read_text()
    assert settings["scheme"] == "strict" and "scheme `strict`" in text
    assert [(row["run"], row["speedup"]) for row in record["efficiency"]] == [("gei", 1.0), ("fmit", 4.0)]
    assert "| fmit | 2.0k | 4.00x (10.0 ms) |" in text  # read from fmit's analysis/speed.json
    assert record["visual_use"] == {"twitter2015": {"gei": used, "fmit": used}}
    assert "| gei | blank | 25.00 | 25.00 | 25.00 | -25.00 | 12 | 100.0% | 50.0% |" in text
    assert record["case_study"]["twitter2015"]["counts"]["gei"] == {"corrected": 3, "broken": 0}


def test_the_report_says_which_analysis_is_missing(tmp_path, monkeypatch):
    built = files_workspace(tmp_path, {"gei": 0.04})  # fmit not analyzed
    monkeypatch.setattr("mner.report._figures", lambda *args: [])
    with pytest.raises(FileNotFoundError, match="fmit/seed1/analysis/speed.json: missing; run the analyze"):
        write_report(built, ReportConfig(baseline="linear-crf"), {"scheme": "strict"}, tmp_path / "reports")
    (tmp_path / run_dir("twitter2015", "fmit", 1) / "analysis").mkdir()
    (tmp_path / run_dir("twitter2015", "fmit", 1) / "analysis/speed.json").write_text("null\n")
    with pytest.raises(ValueError, match="holds no speed"):
        write_report(built, ReportConfig(baseline="linear-crf"), {"scheme": "strict"}, tmp_path / "reports")


def test_the_runs_read_with_clue_sets_are_shown_beside_ita_more_and_pgim(tmp_path, monkeypatch):
    """A clue run's row follows its run read without clues, with the clue set in its setup."""
    used = {"conditions": {"own": condition(0.5, 0.5, 0.0, 0.0)}}
    built = files_workspace(tmp_path, {"gei": 0.04, "fmit": 0.01}, {"gei": used, "fmit": used})
    out = tmp_path / run_dir("twitter2015", "linear-crf+captions", 1)
    shutil.copytree(tmp_path / run_dir("twitter2015", "linear-crf", 1), out)
    (out / "eval/metrics.json").write_text(json.dumps(metrics(0.75)))
    clued = {**text_provenance(), "clues": {"name": "captions"}}
    record = json.loads((out / "checkpoint/checkpoint.json").read_text())
    (out / "checkpoint/checkpoint.json").write_text(json.dumps({**record, "text_features": clued}))
    built = replace(built, clues=("captions",), clue_runs=("linear-crf",))
    monkeypatch.setattr("mner.report._figures", lambda *args: [])
    config = ReportConfig(baseline="linear-crf", speed_batches=1)
    written = write_report(built, config, {"scheme": "strict", "bio": "keep", "images": {}}, tmp_path / "out")
    assert written["clue_results"]["twitter2015"]["linear-crf+captions"]["F1"] == [75.0, 0.0]
    text = (tmp_path / "out/results.md").read_text()
    section = text.split("### Images as text: Twitter-2015 (ITA, MoRe, PGIM)\n")[1].split("\n## ")[0]
    rows = [line.split(" | ")[0].removeprefix("| ") for line in section.splitlines() if line.startswith("| ")]
    assert rows[1:] == [
        "XLM-R-large CRF (text only) (published, ITA)",
        "ITA (published, ITA)",
        "MoRe (published, MoRe)",
        "PGIM (published, PGIM)",
        "**linear-crf** (ours)",  # BERT-CRF is not in this table
        "**linear-crf+captions** (ours)",
    ]
    assert "| PGIM (published, PGIM) | - | - | - | - | - | - | 79.33 | - | - |" in section
    assert section.rstrip().endswith(
        "tiny-bert, layers -1 -2, first pooling, 32-d; clue set captions (context) |"
    )


@pytest.mark.parametrize(
    ("model", "config", "row"),
    [
        ("fmit", {}, "FMIT (l=3)"),  # the paper's setting of every switch
        ("fmit", {"layers": 1, "d": 64}, "FMIT (l=1)"),  # the quickstart's narrow FMIT
        ("fmit", {"layers": 2}, None),  # no published row has 2 layers
        ("fmit", {"objects": False}, "w/o Obj"),
        ("fmit", {"objects": False, "layers": 1}, None),  # the paper ablates FMIT (l=3)
        ("fmit", {"clue_cells": True}, None),
        ("gei", {"span_shared": True}, "GEI"),
        ("gei", {"entity_level_interaction": False, "span_detection": False}, "-Span Detection"),
        ("linear-crf", {"shape_dim": 32}, "BERT-CRF"),
        ("transformer-crf", {}, None),
        ("umt", {"visual_gate": False}, None),
    ],
)
def test_a_run_is_compared_with_the_published_row_of_its_configuration(model, config, row):
    assert counterpart({"model": model, "config": to_dict(model_config(model, config))}) == row


def test_every_counterpart_is_a_published_row_and_a_clue_run_has_none():
    rows = {
        name
        for table in (*published.MAIN, *(table for _, table in published.ABLATIONS.values()))
        for name in table.rows
    }
    assert set(published.COUNTERPARTS) <= rows
    clued = {
        "model": "linear-crf",
        "config": {},
        "text_features": {**text_provenance(), "clues": {"name": "c"}},
    }
    assert (
        counterpart(clued) is None
        and counterpart({**clued, "text_features": text_provenance()}) == "BERT-CRF"
    )


def test_the_quickstart_fmit_is_compared_with_fmit_l1_from_its_checkpoint(tmp_path, monkeypatch):
    """A run named fmit with one layer: cf. FMIT (l=1) where that row is shown (main table,
    published speed and parameters), no cf. in FMIT Table 5's ablations (only l=3 there)."""
    built = files_workspace(tmp_path, {"gei": 0.04, "fmit": 0.01})
    path = tmp_path / run_dir("twitter2015", "fmit", 1) / "checkpoint/checkpoint.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "config": {"layers": 1}}))
    monkeypatch.setattr("mner.report._figures", lambda *args: [])
    config = ReportConfig(baseline="linear-crf", speed_batches=1, visual_use=False)
    written = write_report(built, config, {"scheme": "strict", "bio": "keep", "images": {}}, tmp_path / "out")
    assert written["counterparts"]["twitter2015"] == {
        "linear-crf": "BERT-CRF",
        "gei": "GEI",
        "fmit": "FMIT (l=1)",
    }
    text = (tmp_path / "out/results.md").read_text()
    main, ablations = text.split("## Main results")[1].split("### Ablations of FMIT")
    assert "| **fmit** (ours, cf. FMIT (l=1)) |" in main and "cf. FMIT (l=3)" not in text
    assert "| **fmit** (ours) |" in ablations.split("\n## ")[0]
    assert "| fmit | 2.0k | 4.00x (10.0 ms) | 27.73x | 12M |" in text  # FMIT (l=1)'s, was l=3's 10.17x


def test_published_rows_without_a_number_for_the_dataset_are_left_out():
    ours = {"gei": aggregate([metrics(0.5)])}
    on_2017 = results_table("twitter2017", ours, published.MAIN)
    assert "OCSGA" not in on_2017 and "Object-AGBAN" not in on_2017  # all `-` on Twitter-2017
    assert (
        "| UMGF (GEI's rerun) (published, GEI T1) | - | - | - | - | 85.33 | 84.32 | 84.82 | - | - |"
        in on_2017
    )
    assert "| OCSGA (published, GEI T1) |" in results_table("twitter2015", ours, published.MAIN)


def test_one_multimodal_run_gets_its_time_and_no_relative_speed(tmp_path):
    files_workspace(tmp_path, {"gei": 0.04, "fmit": 0.01})
    runs = {"text": ["linear-crf"], "visual": ["fmit"]}
    alone = Pipeline.from_params(
        {"pipeline": {**LAUNCHED, "datasets": ["twitter2015"], "runs": runs, "seeds": [1]}}, tmp_path
    )
    rows = efficiency(alone)
    assert [row["speedup"] for row in rows] == [None]
    data = {**record([1]), "efficiency": rows}
    text = _markdown(alone, ReportConfig(), data, {"fmit": ["fmit"]}, FIGURES, Path("reports"))
    assert "this machine); no relative speed: 1 multimodal run here, none to compare with;" in text
    assert "| fmit | 2.0k | 10.0 ms | 10.17x | 35M |" in text and "1.00x" not in text
    assert "this machine); speed relative to the slowest run here;" in markdown([1])  # two runs
    assert "| gei | 20.0k | 1.00x (20.0 ms) |" in markdown([1])


def test_the_per_type_bars_say_whether_they_have_error_bars():
    assert "- `type-f1-twitter2015.png`: test F1 per entity type of every run, one seed (n = 1), so no " in (
        markdown([1])
    )
    assert "of every run, the mean over n = 3 seeds with ± std error bars" in markdown([1, 2, 3])


def attention_analysis(root: Path, run: str) -> None:
    """An attention example with an entity in ``run``'s analysis (one that draws a figure)."""
    example = {
        "run": run,
        "text": "Obama in Paris",
        "image_id": "img0",
        "boxes": [[0, 0, 1, 1]],
        "names": ["image"],
    }
    example["entities"] = [{"text": "Obama", "type": "PER", "weights": [1.0]}]
    path = root / run_dir("twitter2015", run, 1) / "analysis/attention.json"
    path.write_text(json.dumps({"figure": f"{run}'s attention", "example": example}))


def with_blank_images(counts: dict, written=FIGURES) -> str:
    """results.md of :func:`record` with the image report's ``counts``."""
    data = {**record([1]), "blank_images": counts}
    return _markdown(pipeline([1]), ReportConfig(), data, FAMILIES, written, Path("reports"))


def test_an_all_blank_dataset_gets_no_attention_figure_and_a_line_why(tmp_path, monkeypatch):
    built = files_workspace(tmp_path, {"gei": 0.04, "fmit": 0.01})
    attention_analysis(tmp_path, "gei")
    drawn = []
    stub = SimpleNamespace(
        run_colours=lambda runs: dict.fromkeys(runs),
        training_curves=lambda *args: None,
        type_f1_bars=lambda *args: None,
        attention_over_image=lambda example, image, out: drawn.append(out.name),
    )
    args = (
        built,
        {"twitter2015": {}},
        FAMILIES,
        {"images": to_dict(ImagesConfig())},
        tmp_path / "figures",
        stub,
    )
    assert [p.name for p in _figures(*args)][-1] == "attention-gei-twitter2015.png" and drawn
    drawn.clear()
    assert "attention-gei-twitter2015.png" not in [p.name for p in _figures(*args, ["twitter2015"])]
    assert not drawn
    left_out = "No attention figure for Twitter-2015: every image there is blank (see Blank images)"
    assert left_out in with_blank_images(
        {"twitter2015": {"images": 40, "missing": 40, "empty": 0}}, FIGURES[:2]
    )
    assert "No attention figure" not in with_blank_images({"twitter2015": {"images": 40, "missing": 39}})
    # write_report gives _figures the datasets whose image report says every image is blank
    report = image_report(built.workspace("twitter2015").cache("visual"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"counts": {"test": {"images": 3, "missing": 3}}}))
    passed = []
    monkeypatch.setattr("mner.report._figures", lambda *args: passed.append(args[-1]) or [])
    config = ReportConfig(baseline="linear-crf", visual_use=False)
    write_report(built, config, {"scheme": "strict", "bio": "keep", "images": {}}, tmp_path / "out")
    assert passed == [["twitter2015"]]
