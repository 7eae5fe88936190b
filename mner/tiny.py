"""Tiny random models built from configs: for tests and the offline configuration, where
no pretrained weights can be downloaded. They are saved to a directory and loaded back
by path through the production loading code."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(
    out_dir: Path | str,
    words: Iterable[str],
    vocab_size: int = 2000,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """A cased 2-layer BERT with random weights and a WordPiece vocabulary of the most
    frequent ``words`` plus every character (alone and as ``##`` continuation)."""
    words = list(words)
    chars = sorted({c for w in words for c in w})
    frequent = [w for w, _ in Counter(words).most_common() if len(w) > 1][:vocab_size]
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + chars + [f"##{c}" for c in chars] + frequent))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(out_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


def build_tiny_detr(
    out_dir: Path | str, classes: Iterable[str] = ("person", "trophy", "dog"), seed: int = 0
) -> Path:
    """A DETR with a 2-stage ResNet backbone built from its config (no timm, no download)
    and a small image processor, saved to ``out_dir``."""
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    names = list(classes)
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    config = DetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=10,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    DetrForObjectDetection(config).save_pretrained(out_dir)
    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(out_dir)
    return out_dir
