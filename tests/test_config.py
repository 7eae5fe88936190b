import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from mner.core.config import ConfigError, from_dict, load_params, section, to_dict
from mner.models import MODELS, model_config, resolve_run
from mner.params import SECTIONS, effective_params, restated_defaults
from mner.runs import Pipeline
from mner.settings.visual import VisualConfig
from mner.train import TrainConfig
from tests.conftest import REPO


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"])
def test_shipped_params_load(params_file):
    params = load_params(REPO / params_file)
    for name, cls in SECTIONS.items():
        assert isinstance(section(params, name, cls), cls)
    pipeline = Pipeline.from_params(params)
    assert set(pipeline.trained_runs) <= set(params["models"])
    for run in pipeline.trained_runs:
        resolved = resolve_run(params["models"], run)
        assert resolved.model in MODELS and isinstance(resolved.config, MODELS[resolved.model][0])
    assert set(params) == {
        "pipeline",
        "models",
        "clues",
        *SECTIONS,
    }  # every section, even empty: DVC tracks it
    assert set(pipeline.clues) <= set(params["clues"])
    assert set(pipeline.trained_runs) == set(params["models"])  # a run is one entry


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"])
def test_defaults_live_once_in_the_dataclasses(params_file):
    """A shipped params file states no setting at its default value."""
    assert restated_defaults(load_params(REPO / params_file)) == []


def test_a_restated_default_is_found_and_every_setting_printed(capsys):
    from mner.cli import main

    pipeline = load_params(REPO / "configs/quickstart.yaml")["pipeline"]
    params = {
        "pipeline": {**pipeline, "runs": {"text": ["linear-crf"], "visual": ["gei-grid"]}},
        "detect": {"threshold": 0.5, "max_objects": 3},
        "models": {"linear-crf": {"dropout": 0.1}, "gei-grid": {"model": "gei", "image_region": True}},
    }
    assert restated_defaults(params) == ["detect.threshold", "models.linear-crf.dropout"]
    settings = effective_params(params)
    assert settings["detect"]["max_objects"] == 3 and settings["detect"]["backend"] == "hf"
    assert settings["models"]["gei-grid"]["image_region"] and settings["models"]["gei-grid"]["d_m"] == 512
    assert settings["pipeline"]["runs"] == {"text": ["linear-crf"], "visual": ["gei-grid"]}
    assert main(["params", str(REPO / "params.yaml"), "--section", "visual_features"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == {"visual_features": {**to_dict(VisualConfig()), "grid": True}}


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_every_shipped_ablation_is_its_base_with_its_switches(params_file):
    """An ablation (or a variant, as FMIT over clue cells) merges its base entry (``<<: *gei``):
    the base's config and train overrides with its own switches."""
    text = (REPO / params_file).read_text()
    models = load_params(REPO / params_file)["models"]
    ablations = [run for run, entry in models.items() if entry.get("model", run) != run]
    assert len(ablations) == 7
    for run in ablations:
        base_name = models[run]["model"]
        assert f"  {run}:" in text and f"  {base_name}: &{base_name}\n" in text
        switches = {k: v for k, v in models[run].items() if models[base_name].get(k) != v and k != "model"}
        base, ablation = resolve_run(models, base_name), resolve_run(models, run)
        assert switches and ablation.config == dataclasses.replace(base.config, **switches)
        assert ablation.model == base.model and ablation.train == base.train


def test_an_entry_names_its_registered_model_and_merges_its_base_entry_in_yaml():
    models = yaml.safe_load(
        """
        gei: &gei {d_m: 64, dropout: 0.1, train: {lr: 2.0e-4, epochs: 3}}
        gei-small: &gei-small {<<: *gei, model: gei, layers: 2}
        gei-small-grid: {<<: *gei-small, image_region: true}
        my-gei: {model: gei, layers: 1}
        """
    )
    run = resolve_run(models, "gei-small-grid")
    assert (run.name, run.model) == ("gei-small-grid", "gei")
    assert (run.config.d_m, run.config.dropout, run.config.layers, run.config.image_region) == (
        64,
        0.1,
        2,
        True,
    )
    assert run.train == {"lr": 2e-4, "epochs": 3}
    assert resolve_run(models, "my-gei").config.d_m == model_config("gei", {}).d_m  # the model's default
    assert resolve_run({}, "fmit").config == model_config("fmit", {})
    with pytest.raises(ConfigError, match=r"models\.gei-small-grid: unknown key\(s\) depth"):
        resolve_run({**models, "gei-small-grid": {"model": "gei", "depth": 1}}, "gei-small-grid")
    with pytest.raises(
        ConfigError, match=r"models\.x\.model: unknown model 'gei-small'; valid: .*; to build on the entry "
    ):
        resolve_run({**models, "x": {"model": "gei-small"}}, "x")
    with pytest.raises(ConfigError) as refused:  # no entry of that name: nothing to merge
        resolve_run({"x": {"model": "nope"}}, "x")
    assert str(refused.value).endswith(
        "unknown model 'nope'; valid: fmit, gei, linear-crf, linear-softmax, transformer-crf, umt"
    )


@dataclass(frozen=True)
class Example:
    lr: float = 0.1
    layers: tuple[int, ...] = (-1,)
    pooling: Literal["first", "mean"] = "first"
    limit: int | None = None
    name: str = "x"


def test_values_are_converted():
    config = from_dict(Example, {"lr": 1, "layers": [-1, -2], "limit": None, "pooling": "mean"}, "p:s")
    assert config == Example(lr=1.0, layers=(-1, -2), pooling="mean")
    assert isinstance(config.lr, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lrr": 0.1}, r"p:s: unknown key\(s\) lrr; valid keys: lr, layers, pooling, limit, name"),
        ({"lr": "fast"}, r"p:s\.lr: expected float, got str 'fast'"),
        ({"lr": True}, r"p:s\.lr: expected float, got bool True"),
        ({"layers": [-1, "a"]}, r"p:s\.layers\[1\]: expected int, got str 'a'"),
        ({"layers": -1}, r"p:s\.layers: expected a list"),
        ({"pooling": "max"}, r"p:s\.pooling: 'max' is not one of 'first', 'mean'"),
        ({"limit": 2.5}, r"p:s\.limit: 2\.5 is not int or null"),
        ({"name": 3}, r"p:s\.name: expected str, got int 3"),
    ],
)
def test_bad_values_fail_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Example, values, "p:s")


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError, match="unknown model 'bert-crf'; valid: .*linear-crf"):
        model_config("bert-crf", {})
    with pytest.raises(ConfigError, match=r"models\.transformer-crf: unknown key\(s\) depth"):
        model_config("transformer-crf", {"depth": 2})


def test_a_run_overrides_the_train_section():
    from mner.train import train_config

    params = {"train": {"lr": 1e-3, "epochs": 5}, "models": {"fmit": {"layers": 1, "train": {"lr": 2e-4}}}}
    fmit = resolve_run(params["models"], "fmit")
    assert train_config(params, fmit) == TrainConfig(lr=2e-4, epochs=5)
    assert fmit.config.layers == 1
    assert train_config(params, resolve_run(params["models"], "gei")) == TrainConfig(lr=1e-3, epochs=5)
    params["models"]["fmit"]["train"] = {"lr": "slow"}
    with pytest.raises(ConfigError, match=r"params.yaml:models\.fmit\.train\.lr: expected float"):
        train_config(params, resolve_run(params["models"], "fmit"))


def test_bad_models_entries_fail_naming_the_entry():
    with pytest.raises(ConfigError, match=r"^params.yaml:models\.gei: expected a mapping, got 3$"):
        resolve_run({"gei": 3}, "gei")
    with pytest.raises(
        ConfigError, match=r"^params.yaml:models\.gei\.train: expected a mapping, got 'fast'$"
    ):
        resolve_run({"gei": {"train": "fast"}}, "gei")
    with pytest.raises(ConfigError, match=r"^params.yaml:models\.gei-x: unknown key\(s\) d; valid keys"):
        resolve_run({"gei": {}, "gei-x": {"model": "gei", "d": 1}}, "gei-x")


def test_gei_reads_at_least_the_whole_image():
    assert model_config("gei", {"max_visual": 1}).max_visual == 1
    with pytest.raises(
        ConfigError, match=r"models\.gei\.max_visual: 0 is out of range; allowed: at least 1$"
    ):
        model_config("gei", {"max_visual": 0})


def test_autocast_is_off_on_the_cpu_whatever_amp_says():
    """amp: true in a params file written for a GPU must not put CPU extraction in float16."""
    import torch

    from mner.core.config import autocast

    for amp in (True, False):
        with autocast(torch.device("cpu"), amp):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
