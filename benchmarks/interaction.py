"""The interaction phase of FMIT (l = 1, 3, 6) and GEI (6 layers) at the papers' sizes:
parameter counts beside FMIT's Table 3, and inference speed measured in one run on the
same batches (FMIT's speedup is GEI's time over its own, as Table 3 relates models).

The batches are the Twitter-2017 test tweets (their real lengths and gold entity spans,
which build GEI's graph), 32 a batch, with BERT-base-sized word vectors (768) and
ResNet-152-sized visual vectors (2048): the whole image plus ``--objects`` objects per
tweet for both models. Values and weights are random (the cost does not depend on them);
the models run in eval mode without gradients, GEI's text encoding outside the timing.

    python -m benchmarks.interaction --objects 8 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics

import torch

from benchmarks.common import prepared_dataset
from mner.analysis import time_interaction
from mner.cached.dataset import collate
from mner.data.labels import TWITTER_LABELS, entity_tags
from mner.data.prepared import read_prepared
from mner.models import InputDims, build_model, interaction_parameters

PAPER_PARAMETERS = {"fmit-l1": "12M", "fmit-l3": "35M", "fmit-l6": "69M"}
INPUTS = InputDims(text_layers=1, text_dim=768, visual_dim=2048)


def batches(objects: int, batch_size: int = 32) -> list[dict]:
    sentences = read_prepared(prepared_dataset("twitter2017") / "test.jsonl")
    generator = torch.Generator().manual_seed(0)
    items = []
    for i, sentence in enumerate(sentences):
        n = len(sentence.tokens)
        span_tags, boundary_tags = entity_tags(sentence.labels)
        items.append(
            {
                "index": i,
                "features": torch.randn(n, 1, 768, generator=generator),
                "labels": torch.tensor([TWITTER_LABELS.index(label) for label in sentence.labels]),
                "shapes": torch.zeros(n, dtype=torch.long),
                "span_tags": span_tags,
                "boundary_tags": boundary_tags,
                "visual": torch.randn(1 + objects, 2048, generator=generator),
                "visual_positions": torch.tensor([[0, n - 1]] * (1 + objects)),
            }
        )
    return [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    built = {"gei": build_model("gei", {}, INPUTS, len(TWITTER_LABELS))}
    for layers in (1, 3, 6):
        built[f"fmit-l{layers}"] = build_model("fmit", {"layers": layers}, INPUTS, len(TWITTER_LABELS))
    return {name: model.eval() for name, model in built.items()}


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=8, help="objects per tweet besides the whole image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = batches(args.objects)
    built = models()
    inputs = {name: [model.interaction_inputs(b) for b in data] for name, model in built.items()}
    inputs["gei"] = [(b, tokens, b["span_tags"]) for b, tokens, _ in inputs["gei"]]  # the gold spans
    seconds: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.repeats):  # interleaved, so that drifts in machine speed hit all models alike
        for name, model in built.items():
            seconds[name].append(time_interaction(model, inputs[name]))
    tweets = sum(len(b["index"]) for b in data)
    print(f"{tweets} tweets in {len(data)} batches, 1 + {args.objects} visual vectors per tweet, CPU")
    print(f"{'model':8} {'parameters':>10} {'paper':>6} {'EBD (train)':>11} {'s/pass':>8} {'speedup':>8}")
    gei_time = statistics.median(seconds["gei"])
    for name, model in built.items():
        count = interaction_parameters(model)
        ebd = getattr(model, "ebd_transformer", None)
        ebd_count = f"{sum(p.numel() for p in ebd.parameters()) / 1e6:.1f}M" if ebd else "-"
        median = statistics.median(seconds[name])
        print(
            f"{name:8} {count / 1e6:9.1f}M {PAPER_PARAMETERS.get(name, '-'):>6} {ebd_count:>11} "
            f"{median:8.2f} {gei_time / median:7.2f}x"
        )


if __name__ == "__main__":
    main()
