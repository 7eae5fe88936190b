"""text_features throughput against a bare forward pass of the same encoder on the same
batches, measured in one run.

The full path is `extract_text_features` (read the prepared tweets, tokenize, windows,
forward, gather and pool, float16, HDF5 write). The bare path is only
`model(input_ids, attention_mask, output_hidden_states=True)` on the identical padded
batches, built beforehand. Overhead = full time / bare time - 1 (target: at most 15%).

    python -m benchmarks.text_features_throughput --datasets twitter2017
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import base_parser, minilm_config
from mner.data.conll import SPLITS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.features.text import EncodeReport, WordEncoder, extract_text_features, load_encoder


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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
