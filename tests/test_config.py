import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from mner.config import ConfigError, from_dict, load_params, section
from mner.data.images import ImagesConfig
from mner.data.prepared import PrepareConfig
from mner.evaluation import EvaluateConfig
from mner.features.detect import DetectConfig
from mner.features.ground import GroundConfig
from mner.features.phrases import ParseConfig
from mner.features.text import TextFeaturesConfig
from mner.features.visual import VisualConfig
from mner.models import MODELS, model_config, resolve_run
from mner.report import ReportConfig
from mner.train import TrainConfig
from tests.conftest import REPO

SECTIONS = {
    "prepare": PrepareConfig,
    "text_features": TextFeaturesConfig,
    "images": ImagesConfig,
    "detect": DetectConfig,
    "parse": ParseConfig,
    "ground": GroundConfig,
    "visual_features": VisualConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml", "configs/quickstart.yaml"])
def test_shipped_params_load(params_file):
    params = load_params(REPO / params_file)
    for name, cls in SECTIONS.items():
        assert isinstance(section(params, name, cls), cls)
    families = params["pipeline"]["multimodal_models"]
    runs = params["pipeline"]["models"] + [run for family in families.values() for run in family]
    assert set(runs) == set(params["models"])
    for run in runs:
        resolved = resolve_run(params["models"], run)
        assert resolved.model in MODELS and isinstance(resolved.config, MODELS[resolved.model][0])
    for family, family_runs in families.items():  # each family's runs are built on its base entry
        assert not family_runs or family_runs[0] == family
        assert all(resolve_run(params["models"], run).entries[-1] == family for run in family_runs)
    assert set(params) == {"pipeline", "models", *SECTIONS}


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/offline.yaml"])
def test_every_shipped_ablation_is_its_base_with_its_switches(params_file):
    models = load_params(REPO / params_file)["models"]
    ablations = [run for run, entry in models.items() if entry.get("model") in models]
    assert len(ablations) == 6
    for run in ablations:
        switches = {k: v for k, v in models[run].items() if k not in ("model", "train")}
        base = resolve_run(models, models[run]["model"])
        ablation = resolve_run(models, run)
        assert ablation.config == dataclasses.replace(base.config, **switches)
        assert ablation.model == base.model and ablation.train == base.train


def test_an_entry_inherits_from_its_base_entry_recursively():
    models = {
        "gei": {"d_m": 64, "dropout": 0.1, "train": {"lr": 2e-4, "epochs": 3}},
        "gei-small": {"model": "gei", "layers": 2, "train": {"lr": 5e-4}},
        "gei-small-grid": {"model": "gei-small", "image_region": True},
        "my-gei": {"model": "gei"},
    }
    run = resolve_run(models, "gei-small-grid")
    assert run.model == "gei" and run.entries == ("gei-small-grid", "gei-small", "gei")
    assert (run.config.d_m, run.config.dropout, run.config.layers, run.config.image_region) == (
        64,
        0.1,
        2,
        True,
    )
    assert run.train == {"lr": 5e-4, "epochs": 3}
    assert resolve_run({"my-gei": {"model": "gei", "layers": 1}}, "my-gei").entries == ("my-gei",)
    assert resolve_run(models, "gei").entries == ("gei",)
    with pytest.raises(
        ConfigError, match=r"models\.gei-small-grid over models\.gei-small over models\.gei: "
    ):
        resolve_run({**models, "gei-small-grid": {"model": "gei-small", "depth": 1}}, "gei-small-grid")
    with pytest.raises(ConfigError, match="its bases form a cycle: a -> b -> a"):
        resolve_run({"a": {"model": "b"}, "b": {"model": "a"}}, "a")


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
        ({"limit": 2.5}, r"p:s\.limit: 2\.5 is not int \| None"),
        ({"name": 3}, r"p:s\.name: expected str, got int 3"),
    ],
)
def test_bad_values_fail_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Example, values, "p:s")


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError, match="unknown model 'bert-crf'; known models: .*linear-crf"):
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
        resolve_run({"gei": {"train": "fast"}, "gei-x": {"model": "gei"}}, "gei-x")
    with pytest.raises(
        ConfigError, match=r"^params.yaml:models\.gei-x over models\.gei: unknown key\(s\) d; valid keys"
    ):
        resolve_run({"gei": {}, "gei-x": {"model": "gei", "d": 1}}, "gei-x")


def test_gei_reads_at_least_the_whole_image():
    assert model_config("gei", {"max_visual": 1}).max_visual == 1
    with pytest.raises(ConfigError, match=r"^gei: max_visual must be at least 1 \(the whole image\)$"):
        model_config("gei", {"max_visual": 0})


def test_autocast_is_off_on_the_cpu_whatever_amp_says():
    """amp: true in a params file written for a GPU must not put CPU extraction in float16."""
    import torch

    from mner.config import autocast

    for amp in (True, False):
        with autocast(torch.device("cpu"), amp):
            assert not torch.is_autocast_enabled("cpu")
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
