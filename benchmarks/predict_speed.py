"""Posts per second of ``mner predict`` (the predictor of :mod:`mner.api`) on a run's
checkpoint, and where the time goes: loading, the text encoder, the image side (images,
detector or grounder, ResNet; clue cells for a clue-cells model), and the model (emissions,
marginals, decoding), over the first N test tweets of its dataset given as text, in steps of
the predictor's batch, on the CPU; the peak resident memory of the process.

    python -m benchmarks.predict_speed --posts 500 \\
        --run benchmarks/work/runs/twitter2017/transformer-crf/seed1
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from mner.core.workspace import run_workspace
from mner.data.prepared import read_prepared
from mner.posts import POSTS_PER_STEP, Post, PostPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="a run directory with its checkpoint/")
    parser.add_argument("--posts", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    predictor = PostPredictor(args.run, device="cpu")
    loaded = time.perf_counter() - start
    sentences = read_prepared(run_workspace(args.run).prepared / "test.jsonl")[: args.posts]
    posts = [Post.from_text(" ".join(s.tokens), id=s.id) for s in sentences]
    seconds = {"text encoder": 0.0, "image side": 0.0, "model": 0.0}
    with torch.inference_mode():
        for begin in range(0, len(posts), POSTS_PER_STEP):
            step = predictor.with_clues(
                [p.split_as(predictor.sigils) for p in posts[begin : begin + POSTS_PER_STEP]]
            )
            t0 = time.perf_counter()
            predictor.text_features(step)
            t1 = time.perf_counter()
            predictor.items(step)  # the text encoder again, then the image side
            t2 = time.perf_counter()
            predictor.predict(step)  # all of it again
            t3 = time.perf_counter()
            seconds["text encoder"] += t1 - t0
            seconds["image side"] += (t2 - t1) - (t1 - t0)
            seconds["model"] += (t3 - t2) - (t2 - t1)
    total = sum(seconds.values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.run}: {len(posts)} posts, {len(posts) / total:.1f} posts/s, {torch.get_num_threads()} threads"
        f" (load {loaded:.1f} s, peak {peak:.0f} MiB); "
        + ", ".join(f"{name} {100 * s / total:.0f}% ({s:.1f} s)" for name, s in seconds.items())
    )


if __name__ == "__main__":
    main()
