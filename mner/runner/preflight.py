"""Checks that a feature stage runs before it loads any model: that its model files are on
disk or can be downloaded, so that an offline machine gets one short message naming the
params key and what to do, not a connection traceback a minute in.

Each feature module has a ``check_ready`` built on these checks; a stage script runs it
with :func:`or_exit`. This module imports no other ``mner`` module."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
OFFLINE_ROUTE = (
    "To run the whole pipeline without downloads: `mner offline-workspace DIR` (tiny random models) "
    "or `mner quickstart DIR` (a real MiniLM encoder)."
)


class PreflightError(FileNotFoundError):
    """What a stage needs is not on disk and cannot be fetched; ``str()`` says what to do."""


def or_exit(check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``; a PreflightError exits with its message (status 1, no traceback)."""
    try:
        return check(*args)
    except PreflightError as error:
        raise SystemExit(f"error: {error}") from None


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a server answers a HEAD request for ``url`` within ``timeout`` seconds, name
    lookup included (any HTTP status counts: the server is there)."""
    answered = threading.Event()

    def head() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
        except urllib.error.HTTPError:
            pass
        except (OSError, ValueError):
            return
        answered.set()

    threading.Thread(target=head, daemon=True).start()  # daemon: a hung name lookup is left behind
    return answered.wait(timeout)


def check_hf_model(key: str, model: str, revision: str) -> None:
    """``model`` (params ``key``) is a local model directory, in the Hugging Face cache at
    ``revision`` (config and weights), or the hub can be reached to download it."""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(model).is_dir():
        if not (Path(model) / "config.json").is_file():
            raise PreflightError(
                f"{key}: the directory {model} has no config.json; it should hold a model saved with "
                "save_pretrained or downloaded with `hf download ... --local-dir`."
            )
        return
    cache = constants.HF_HUB_CACHE

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(model, filename, cache, revision), str)

    if cached("config.json") and any(cached(name) for name in WEIGHT_FILES):
        return
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    elif reachable(constants.ENDPOINT):
        return
    else:
        why = f"{constants.ENDPOINT} cannot be reached"
    local = f"models/{model.rstrip('/').split('/')[-1]}"
    raise PreflightError(
        f"{key}: {model!r} (revision {revision}) is neither a local directory nor in the Hugging Face "
        f"cache ({cache}), and {why}. Where there is internet, download it with "
        f"`hf download {model} --revision {revision} --local-dir {local}`, copy {local} here and set "
        f"{key}: {local}. {OFFLINE_ROUTE}"
    )


def check_torchvision_weights(key: str, builder: str, weights: str) -> None:
    """``weights`` (params ``key``) of torchvision model ``builder`` can be loaded: ``""``
    (random), a local file, or a torchvision weights name whose file is in the torch hub
    cache or can be downloaded."""
    if not weights or Path(weights).is_file():
        return
    import torch
    import torchvision

    try:
        names = torchvision.models.get_model_weights(builder)
    except ValueError as error:
        raise PreflightError(f"{key}: no weights {weights!r} for {builder!r}: {error}") from None
    if weights not in names.__members__:
        raise PreflightError(
            f"{key}: {weights!r} is neither a file nor a torchvision weights name of {builder} "
            f'(valid: {", ".join(names.__members__)}, or "" for random weights)'
        )
    url = names[weights].url
    file = url.rsplit("/", 1)[-1]
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if (checkpoints / file).is_file() or reachable(url):
        return
    raise PreflightError(
        f"{key}: {weights} of {builder} needs {file}, which is not in {checkpoints} ($TORCH_HOME/hub/"
        f"checkpoints), and {url} cannot be reached. Where there is internet, download {url} and copy "
        f'{file} into $TORCH_HOME/hub/checkpoints here, or set {key} to a local state-dict file ("" for '
        f"random weights). {OFFLINE_ROUTE}"
    )
