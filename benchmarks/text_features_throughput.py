"""text_features throughput against a bare forward pass of the same encoder on the same
batches, measured in one run.

The full path is `extract_text_features` (read the prepared tweets, tokenize, windows,
forward, gather and pool, float16, HDF5 write). The bare path is only
`model(input_ids, attention_mask, output_hidden_states=True)` on the identical padded
batches, built beforehand. Overhead = full time / bare time - 1 (target: at most 15%).

    python -m benchmarks.text_features_throughput --datasets twitter2017

With ``--clues``, the full path is also timed reading each tweet with each clue set of the
repository's params.yaml (the context and the clue cells of a clue set's text cache), the
same encoder settings as the models benchmark (mean pooling, every layer):

    python -m benchmarks.text_features_throughput --datasets twitter2017 --clues captions knowledge both
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import REPO, base_parser, minilm_config
from mner.clues import read_clue_set
from mner.core.config import load_params
from mner.data.conll import SPLITS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.features.text import EncodeReport, WordEncoder, extract_text_features, load_encoder
from mner.settings.clues import clue_set


def bare_forward_seconds(encoder: WordEncoder, prepared: Path, batch_size: int) -> float:
    """Seconds of model forward passes alone over the batches extraction makes."""
    batches = []
    for split in SPLITS:
        sentences = read_prepared(prepared / f"{split}.jsonl")
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].tokens))
        for b in range(0, len(order), batch_size):
            tweets = [(sentences[i].id, sentences[i].tokens) for i in order[b : b + batch_size]]
            batches.append(encoder.model_inputs(tweets, EncodeReport())[1:3])
    start = time.perf_counter()
    with torch.inference_mode():
        for input_ids, mask in batches:
            encoder.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clues", nargs="+", default=[], help="also time reading with these clue sets")
    args = parser.parse_args()
    if args.clues:
        clue_throughput(args.datasets, args.clues, args.repeats)
        return
    config = minilm_config(pooling="first")
    encoder = WordEncoder(*load_encoder(config), config)
    torch.set_num_threads(torch.get_num_threads())
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared"
            prepare(
                PrepareConfig(data_dir=str(Path(__file__).resolve().parents[1] / "data")), dataset, prepared
            )
            tweets = sum(len(read_prepared(prepared / f"{s}.jsonl")) for s in SPLITS)
            bare_forward_seconds(encoder, prepared, config.batch_size)  # warm-up
            for _ in range(args.repeats):
                full = extract_text_features(config, prepared, Path(tmp) / "text.h5").seconds
                bare = bare_forward_seconds(encoder, prepared, config.batch_size)
                print(
                    f"{dataset}: {tweets} tweets on {encoder.device}; "
                    f"text_features {tweets / full:.1f} tweets/s "
                    f"({full:.1f} s), bare forward {tweets / bare:.1f} tweets/s ({bare:.1f} s); "
                    f"overhead {100 * (full / bare - 1):.1f}%",
                    flush=True,
                )


def clue_throughput(datasets: list[str], clue_sets: list[str], repeats: int) -> None:
    """Tweets per second of the whole text_features path, plain and with each clue set."""
    config = minilm_config(pooling="mean", layers=tuple(range(7)))
    params = load_params(REPO / "params.yaml")
    for dataset in datasets:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared"
            prepare(PrepareConfig(data_dir=str(REPO / "data")), dataset, prepared)
            sentences = {split: read_prepared(prepared / f"{split}.jsonl") for split in SPLITS}
            tweets = sum(len(items) for items in sentences.values())
            for _ in range(repeats):
                for name in [None, *clue_sets]:
                    clues = (
                        read_clue_set(name, clue_set(params, name), dataset, sentences, REPO)
                        if name
                        else None
                    )
                    report = extract_text_features(config, prepared, Path(tmp) / "text.h5", clues=clues)
                    print(
                        f"{dataset} {name or 'no clues'}: {tweets} tweets, {tweets / report.seconds:.1f} "
                        f"tweets/s ({report.seconds:.1f} s); clues read {report.clues}, "
                        f"cut {report.clues_truncated}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
