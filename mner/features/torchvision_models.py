"""torchvision models by builder name, with weights by torchvision name (from TORCH_HOME,
downloaded there when online), from a local state-dict file (loaded without pickle
execution) or random (``""``, seeded: the same weights on every load, so that a stage
and ``mner predict`` compute the same features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_torchvision_model(name: str, weights: str, param: str, **kwargs: Any) -> tuple[nn.Module, Any]:
    """The model and the torchvision weights entry it was built with (None for a local
    file or random weights); ``param`` names the params key in error messages."""
    import torchvision  # here, not at the top: it imports torch._dynamo (seconds per process)

    local = Path(weights).is_file()
    entry = None if local or not weights else torchvision.models.get_model_weights(name)[weights]
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)  # random weights ("") are the same on every load
            model = torchvision.models.get_model(name, weights=entry, **kwargs)
    except (OSError, RuntimeError) as error:  # no network and nothing in TORCH_HOME
        raise RuntimeError(
            f"cannot load {name} weights {weights!r} ({error}); on an offline machine copy the weights "
            f"file into $TORCH_HOME/hub/checkpoints/ or set {param} to a local file"
        ) from error
    if local:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model, entry
