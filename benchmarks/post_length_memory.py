"""Peak memory of one training step on one post of N words, per model at its default sizes:
why a post has at most ``MAX_WORDS`` words (mner/data/conll.py). The models' attention grows
with the square of the words (FMIT's relative lattice attention holds a vector per pair of
cells), so a long "tweet" that passes every extraction stage runs training out of memory.

Each figure is the peak resident set size of a fresh Python process (``VmHWM``, reset after
the model is built) during the loss and its backward pass on a batch of one post: BERT-base
word vectors (4 layers of 768), ResNet-152-sized visual vectors (2048), the whole image plus
16 visual cells (49 for UMT's grid), all labels O, random values (the cost does not depend on
them).

    python -m benchmarks.post_length_memory --words 50 280 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

MODELS = ("transformer-crf", "gei", "fmit", "umt")

# Run in a fresh process: argv is (model, words).
MEASURE = """
import json, sys
import numpy as np
import torch
from mner.cached.dataset import add_visual, collate, text_item
from mner.models import InputDims, build_model
from mner.tagger import visual_kind
def status_mb(key):
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024
name, words = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = build_model(name, {}, InputDims(4, 768, 2048), 9)
item = text_item(0, ["w"] * words, np.random.rand(words, 4, 768).astype(np.float16), ["O"] * words, {"O": 0})
kind = visual_kind(model)
if kind is not None:
    cells = 49 if kind.field == "grid" else 16
    at = np.stack([np.arange(cells) % words] * 2, axis=1)
    image, extra = np.random.rand(1, 2048), np.random.rand(cells, 2048)
    positions = at if kind.positions else None
    item = add_visual(item, image.astype(np.float16), extra.astype(np.float16), positions)
batch = collate([item])
before = status_mb("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS, so that VmHWM is the peak of what follows
loss = model.loss(batch)
(loss["loss"] if isinstance(loss, dict) else loss).backward()
print(json.dumps({"before_mb": before, "peak_mb": status_mb("VmHWM")}))
"""


def measure(model: str, words: int) -> dict | str:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, model, str(words)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        return f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, nargs="+", default=[50, 280, 1000])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    print("| model | words | RSS before the step (GiB) | peak during the step (GiB) |")
    print("|---|---|---|---|")
    for model in args.models:
        for words in args.words:
            result = measure(model, words)
            if isinstance(result, str):
                print(f"| {model} | {words} | {result} | |")
            else:
                before, peak = result["before_mb"] / 1024, result["peak_mb"] / 1024
                print(f"| {model} | {words} | {before:.2f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
