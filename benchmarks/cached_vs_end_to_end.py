"""One epoch of `linear-crf` over the cached features against one epoch of fine-tuning the
same encoder end to end with the same head (the papers' way), in one run, on the same
data and hardware; the one-off encoding cost is reported beside them.

Both runs see the same Twitter-2017 training tweets in the same batches (batch size 32),
with AdamW, and the head is the same module (`LinearCRF`: scalar mix over the same four
layers, first-subword pooling, linear, CRF).

    python -m benchmarks.cached_vs_end_to_end [--limit N]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import base_parser, minilm_config
from mner.cached.dataset import CachedTextDataset, collate
from mner.core.cache import CacheReader
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import PrepareConfig, prepare, read_prepared
from mner.features.text import EncodeReport, WordEncoder, extract_text_features, load_encoder
from mner.models import InputDims, build_model


class EndToEnd(nn.Module):
    """The encoder, trainable, under the cached pipeline's head."""

    def __init__(self, encoder: WordEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head, self.word_encoder = encoder.model, head, encoder

    def loss(self, tweets, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pieces, input_ids, attention = self.word_encoder.model_inputs(tweets, EncodeReport())
        hidden = self.word_encoder.forward(input_ids, attention)  # [rows, T, L, D], with gradients
        features = torch.zeros(len(tweets), mask.shape[1], *hidden.shape[2:])
        for b, piece in enumerate(pieces):
            words = self.word_encoder.word_vectors(hidden, piece)  # [n_words, L, D]
            features[b, : len(words)] = words
        return self.head.loss({"features": features, "labels": labels, "mask": mask})["loss"]


def cached_epoch(data, inputs: InputDims) -> float:
    torch.manual_seed(0)
    head = build_model("linear-crf", {}, inputs, len(TWITTER_LABELS))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    start = time.perf_counter()
    for batch in DataLoader(data, batch_size=32, shuffle=False, collate_fn=collate):
        optimizer.zero_grad()
        head.loss(batch)["loss"].backward()
        optimizer.step()
    return time.perf_counter() - start


def end_to_end_epoch(sentences, inputs: InputDims, config) -> float:
    torch.manual_seed(0)
    encoder = WordEncoder(*load_encoder(config), config)
    model = EndToEnd(encoder, build_model("linear-crf", {}, inputs, len(TWITTER_LABELS))).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    start = time.perf_counter()
    for b in range(0, len(sentences), 32):
        batch = sentences[b : b + 32]
        longest = max(len(s.tokens) for s in batch)
        labels = torch.tensor(
            [[TWITTER_LABELS.index(x) for x in s.labels] + [0] * (longest - len(s.labels)) for s in batch]
        )
        mask = torch.arange(longest)[None, :] < torch.tensor([len(s.tokens) for s in batch])[:, None]
        optimizer.zero_grad()
        model.loss([(s.id, s.tokens) for s in batch], labels, mask).backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--limit", type=int, default=None, help="first N training tweets only")
    args = parser.parse_args()
    config = minilm_config(pooling="first", device="cpu")
    dataset = args.datasets[0]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        prepare(
            PrepareConfig(data_dir=str(Path(__file__).resolve().parents[1] / "data"), limit=args.limit),
            dataset,
            prepared,
        )
        encoding = extract_text_features(config, prepared, Path(tmp) / "text.h5").seconds
        cache = CacheReader(Path(tmp) / "text.h5")
        sentences = read_prepared(prepared / "train.jsonl")
        inputs = InputDims(*cache.row_shape("train", "words"))
        cached = cached_epoch(CachedTextDataset(cache, "train", sentences, TWITTER_LABELS), inputs)
        e2e = end_to_end_epoch(sentences, inputs, config)
    print(f"{dataset} train, {len(sentences)} tweets, batch 32, {torch.get_num_threads()} CPU threads")
    print(
        f"cached linear-crf epoch: {cached:.2f} s; end-to-end fine-tuning epoch: {e2e:.2f} s; "
        f"ratio {e2e / cached:.1f}x"
    )
    print(f"one-off encoding of all three splits (train, valid, test): {encoding:.1f} s")


if __name__ == "__main__":
    main()
