"""Edits of a saved checkpoint's weights, as the tests of what loads and predicts make them."""

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from mner.core.cache import file_sha256


def save_weights(checkpoint: Path, state: dict, keep_metadata: bool = True) -> None:
    """Replace ``checkpoint``'s weights by ``state`` as a save would: with the metadata that
    says which model they hold (unless ``keep_metadata`` is false) and their SHA-256
    recorded in its checkpoint.json."""
    weights = checkpoint / "model.safetensors"
    with safe_open(weights, framework="pt") as f:
        metadata = f.metadata() if keep_metadata else None
    save_file(state, weights, metadata=metadata)
    record = json.loads((checkpoint / "checkpoint.json").read_text())
    record["weights_sha256"] = file_sha256(weights)
    (checkpoint / "checkpoint.json").write_text(json.dumps(record))
