"""Params values out of range are refused at load, naming the key, the value and what is
allowed (each of these ran to a silent wrong result or a traceback before), and a stage
shows such an error as one line with exit status 2."""

import copy
import re
import shutil
import subprocess
import sys
import time

import networkx as nx
import pytest
from dvc.repo import Repo

from mner.core.config import ConfigError, load_params
from mner.core.workspace import params_check
from mner.offline import copy_pipeline
from mner.params import check_params, effective_params
from tests.conftest import REPO

OFFLINE = load_params(REPO / "configs/offline.yaml")
CASES = [  # keys, value, what the message says
    (["train", "max_grad_norm"], -1, "above 0"),
    (["train", "max_grad_norm"], 0, "above 0"),
    (["train", "warmup"], 5, "at least 0 and at most 1"),
    (["train", "patience"], -1, "at least 0"),
    (["train", "lr"], -0.1, "above 0"),
    (["train", "lr"], float("nan"), "not a finite number"),
    (["train", "epochs"], 0, "at least 1"),
    (["train", "batch_size"], 0, "at least 1"),
    (["train", "eval_batch_size"], 0, "at least 1"),
    (["train", "num_workers"], -2, "at least 0"),
    (["train", "device"], "gpu", "not a device"),
    (["evaluate", "batch_size"], 0, "at least 1"),
    (["prepare", "limit"], -5, "at least 1"),
    (["detect", "max_objects"], -1, "at least 0"),
    (["detect", "threshold"], 1.5, "at most 1"),
    (["images", "max_pixels"], -1, "at least 1"),
    (["images", "max_side"], 0, "at least 1"),
    (["images", "blank_size"], 0, "at least 1"),
    (["text_features", "layers"], [], "a list of at least 1 items"),
    (["text_features", "layers"], [-1, -2, -1], "lists -1 more than once; list each once"),
    (["text_features", "window"], 2, "at least 8"),
    (["visual_features", "image_size"], 8, "at least 32"),
    (["ground", "text_threshold"], -0.5, "at least 0"),
    (["models", "gei", "dropout"], 1.5, "below 1"),
    (["models", "fmit", "lambda_ebd"], -1, "at least 0"),
    (["pipeline", "seeds"], [], "a list of at least 1 items"),
    (["pipeline", "datasets"], [], "a list of at least 1 items"),
]


def with_value(keys, value):
    params = copy.deepcopy(OFFLINE)
    node = params
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return params


@pytest.mark.parametrize(("keys", "value", "allowed"), CASES, ids=lambda case: str(case))
def test_a_value_out_of_range_is_refused_naming_key_value_and_range(keys, value, allowed):
    with pytest.raises(ConfigError) as refused:
        effective_params(with_value(keys, value))
    message = str(refused.value)
    assert message.startswith(f"params.yaml:{'.'.join(keys)}: ") and allowed in message
    assert str(value).lower() in message.lower() or value == []


@pytest.mark.parametrize(
    ("run", "width", "message"),
    [
        ("gei", "d_m", "gei: d_m (33) must be a multiple of heads (2)"),
        ("gei", "text_hidden", "gei: text_hidden (33) must be a multiple of heads (2)"),
        ("transformer-crf", "hidden", "transformer-crf: hidden (33) must be a multiple of heads (2)"),
        ("umt", "d", "umt: d (33) must be a multiple of heads (2)"),
        ("fmit", "d", "fmit: d (33) must be even and a multiple of heads (2)"),
    ],
)
def test_a_width_its_heads_do_not_divide_is_refused_before_training(run, width, message):
    """Found by the pre-flight, not as torch's assertion when training builds the model."""
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        check_params(with_value(["models", run, width], 33))


def test_the_shipped_values_are_in_range():
    for params_file in ("params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"):
        check_params(load_params(REPO / params_file))


def test_a_stage_shows_an_input_error_as_one_line_with_status_2(tmp_path):
    workspace = copy_pipeline(tmp_path / "ws", REPO, "configs/offline.yaml")
    text = (workspace / "params.yaml").read_text().replace("  limit: 40", "  limit: -5")
    (workspace / "params.yaml").write_text(text)
    command = [sys.executable, "-m", "stages.prepare", "--dataset", "twitter2017"]
    result = subprocess.run(command, cwd=workspace, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: params.yaml:prepare.limit: -5 is out of range; allowed: at least 1"
    ]
    assert not (workspace / "prepared").exists()


def test_the_pre_flight_stage_checks_every_value_in_one_line(tmp_path):
    """``stages.check_params``, the first stage of ``dvc repro``: a value no stage before
    training reads (a model's dropout, a run's train override) stops it in one line, and a
    valid file gives the same mark whatever its values, so the stages after it rerun only
    for their own inputs."""
    workspace = copy_pipeline(tmp_path / "ws", REPO, "configs/offline.yaml")
    original = (workspace / "params.yaml").read_text()
    command = [sys.executable, "-m", "stages.check_params"]
    marks = []
    for old, new, message in (
        (
            "  fmit: &fmit\n    d: 16\n",
            "  fmit: &fmit\n    d: 16\n    dropout: 1.5\n",
            "models.fmit.dropout: 1.5",
        ),
        (
            "  umt:\n    d: 16\n",
            "  umt:\n    d: 16\n    train:\n      lr: -1\n",
            "models.umt.train.lr: -1.0 is out of range; allowed: above 0",
        ),
        ("  fmit: &fmit\n    d: 16\n", "  fmit: &fmit\n    d: 8\n", None),
        ("  fmit: &fmit\n    d: 16\n", "  fmit: &fmit\n    d: 16\n", None),
    ):
        assert old in original
        (workspace / "params.yaml").write_text(original.replace(old, new))
        (workspace / params_check()).unlink(missing_ok=True)
        result = subprocess.run(command, cwd=workspace, capture_output=True, text=True)
        if message is None:
            assert result.returncode == 0, result.stderr
            marks.append((workspace / params_check()).read_bytes())
            continue
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: params.yaml:") and message in line
        assert not (workspace / params_check()).exists()
    assert marks[0] == marks[1]


def test_every_stage_of_dvc_yaml_comes_after_the_pre_flight(tmp_path):
    """``prepare`` depends on the pre-flight's mark, and every other stage on prepare's
    outputs, so ``dvc repro`` of any target runs the pre-flight first."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / "configs/offline.yaml", tmp_path / "params.yaml")
    Repo.init(str(tmp_path), no_scm=True)
    index = Repo(str(tmp_path)).index
    (gate,) = [stage for stage in index.stages if stage.name == "check_params"]
    assert [str(out.def_path) for out in gate.outs] == [str(params_check())]
    after = nx.ancestors(index.graph, gate)  # DVC's edges point from a stage to what it depends on
    assert len(index.stages) > 60 and after == set(index.stages) - {gate}


def test_a_params_file_that_is_not_utf8_yaml_is_refused_naming_it(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("train:\n  device: caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"latin1.yaml: not UTF-8 text \(invalid continuation byte at byte 20\)"
    ):
        load_params(tmp_path / "latin1.yaml")
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \("):
        load_params(tmp_path / "broken.yaml")


def test_a_dataset_or_seed_listed_twice_is_refused():
    """A duplicate dataset silently merged its stages and the report dropped one."""
    for key, value in (("datasets", ["twitter2015", "twitter2015"]), ("seeds", [1, 1])):
        with pytest.raises(ConfigError, match=rf"params.yaml:pipeline.{key}: listed more than once: "):
            effective_params(with_value(["pipeline", key], value))


def test_a_key_stated_twice_is_refused_naming_file_line_and_key(tmp_path):
    """PyYAML kept the last value silently (`mner params` showed lr 0.02) while DVC refused the
    file; a key an alias merges in (``<<: *fmit``) and the mapping states again is an override."""
    path = tmp_path / "params.yaml"
    path.write_text("prepare: {}\ntrain: {lr: 0.005, lr: 0.02}\n")
    message = f"{path}:2: key 'lr' is stated twice in one mapping (first at line 2); YAML would keep"
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}"):
        load_params(path)
    path.write_text("train:\n  lr: 0.005\n  epochs: 3\ntrain:\n  lr: 0.02\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:4: key 'train' is stated twice .*line 1\)"
    ):
        load_params(path)
    path.write_text("models:\n  fmit: &fmit {d: 16, heads: 2}\n  fmit-small:\n    <<: *fmit\n    d: 8\n")
    assert load_params(path)["models"]["fmit-small"] == {"d": 8, "heads": 2}


def test_a_yaml_alias_bomb_is_refused_naming_the_file(tmp_path):
    """A billion laughs in an unused ``models`` entry loads in an instant (its aliases share one
    node) and passed the pre-flight, then hung ``dvc status``, which expands every alias; a
    node within itself and a value nested thousands deep are refused as well."""
    lines = ["models:", "  l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["  bomb: {model: linear-crf, lol: [*l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8]}", ""]
    shipped = (REPO / "configs/offline.yaml").read_text()
    assert shipped.count("\nmodels:\n") == 1
    path = tmp_path / "params.yaml"
    path.write_text(shipped.replace("\nmodels:\n", "\n" + "\n".join(lines)))
    start = time.perf_counter()
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:\d+: the value here holds more than 100,000 "
    ):
        load_params(path)
    assert time.perf_counter() - start < 5
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(str(path))}:1: a YAML alias here names a value it is in"
    ):
        load_params(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: its YAML is nested too deeply"):
        load_params(path)
    path.write_text("a: &a [1, 2]\nb: [*a, *a]\n")  # an alias of a small value is fine
    assert load_params(path) == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


@pytest.mark.parametrize("name", ["a/b", "", ".", "..", "-x", "a b", "data\\set", "x\n"])
def test_a_dataset_name_that_is_not_a_plain_name_is_refused(name):
    """``a/b`` trained and evaluated into runs/a/b/... which `mner runs` never listed; an empty
    name passed the pre-flight and DVC said `unexpected error`."""
    datasets = ["twitter2017", name]
    message = f"params.yaml:pipeline.datasets[1]: {name!r} is not a plain name, as data/<dataset> and runs/"
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}"):
        check_params(with_value(["pipeline", "datasets"], datasets))


@pytest.mark.parametrize("where", [["runs", "text"], ["runs", "visual"], ["clue_runs"]])
@pytest.mark.parametrize("name", ["a/b", "", "..", "x+captions", "gei run"])
def test_a_run_name_that_is_not_a_plain_name_is_refused(where, name):
    """A run's name is a directory under runs/<dataset>/ and part of its train stage's name;
    ``<run>+<clue set>`` names a run read with a clue set."""
    runs = [] if where == ["clue_runs"] else list(OFFLINE["pipeline"]["runs"][where[1]])
    message = f"params.yaml:pipeline.{'.'.join(where)}[{len(runs)}]: {name!r} is not a plain name, as runs/"
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}.*; rename the run$"):
        check_params(with_value(["pipeline", *where], [*runs, name]))


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64])
def test_a_seed_numpy_cannot_take_is_refused_by_the_pre_flight(seed):
    """Found before the trainer, which failed in np.random.seed after making its run directory."""
    message = (
        f"params.yaml:pipeline.seeds[1]: {seed} is out of range; allowed: at least 0 and at most 4294967295"
    )
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
        check_params(with_value(["pipeline", "seeds"], [1, seed]))
    check_params(with_value(["pipeline", "seeds"], [0, 2**32 - 1]))


def test_a_baseline_the_pipeline_does_not_train_as_a_text_run_is_refused_by_the_pre_flight():
    """The report read the baseline's predictions after all the training, and failed."""
    for baseline, text in (("nothere", None), ("fmit", None), ("transformer-crf", ["linear-crf"])):
        params = with_value(["report", "baseline"], baseline)
        if text is not None:  # the default baseline, left out of pipeline.runs.text
            params = with_value(["pipeline", "runs", "text"], text)
            params["pipeline"]["clue_runs"] = ["fmit-clue-cells"]
        valid = ", ".join(text or OFFLINE["pipeline"]["runs"]["text"])
        message = (
            f"params.yaml:report.baseline: {baseline!r} is not one of pipeline.runs.text ({valid}); "
            "set report.baseline to one of them, or add it to pipeline.runs.text"
        )
        with pytest.raises(ConfigError, match=rf"^{re.escape(message)}$"):
            check_params(params)
