"""Tiny random models built from configs: for tests and the offline configuration, where
no pretrained weights can be downloaded. They are saved to a directory and loaded back
by path through the production loading code."""

from __future__ import annotations

import string
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


# Open-vocabulary detectors (Grounding DINO, OWL-ViT, OWLv2): tokenizers from small local
# vocabularies; the Grounding DINO backbone is a tiny Swin given as an explicit backbone_config.

GROUNDING_WORDS = ["person", "location", "organization", "miscellaneous", "the", "cat", "dog", "new", "york"]


# the vision tower of the tiny BLIP and OWL models: a ViT of 16 patches of 8 px
TINY_VIT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def wordpiece_vocab(words=GROUNDING_WORDS) -> dict[str, int]:
    """Special tokens, every printable ASCII character alone and as ``##`` continuation,
    and a few whole words: any ASCII text tokenizes without unknown tokens."""
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars), *words]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}


def build_tiny_grounding_dino(out_dir: Path | str, seed: int = 0) -> Path:
    """A Grounding DINO with a 4-stage Swin of width 8, a 1-layer BERT of width 32, one
    encoder and two decoder layers, 12 boxes, 64 text tokens and 96-128 px inputs (smaller
    inputs leave the last feature level 1 x 1, which its GroupNorm refuses)."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    vocab = wordpiece_vocab()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 128})
    backbone = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=12,
        max_text_len=64,
        encoder_n_points=2,
        decoder_n_points=2,
    )
    torch.manual_seed(seed)
    return _save(
        GroundingDinoForObjectDetection(config), GroundingDinoProcessor(image_processor, tokenizer), out_dir
    )


# Image captioning (the describe stage): a BLIP whose decoder writes words of a small vocabulary.

CAPTION_WORDS = ["a", "photo", "of", "the", "man", "woman", "dog", "on", "in", "street", "with", "red"]


def build_tiny_blip(out_dir: Path | str, seed: int = 0) -> Path:
    """A BLIP captioner with a 2-layer ViT of width 32 on 32 px inputs and a 2-layer text
    decoder of width 32 over a small WordPiece vocabulary (``[DEC]`` its start token). Its
    decoder never predicts the end or another special token, so each caption is words and
    as long as the generation allows."""
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    vocab = wordpiece_vocab([*CAPTION_WORDS, "[DEC]"])
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=32)
    ids = {"bos_token_id": vocab["[DEC]"], "pad_token_id": vocab["[PAD]"], "sep_token_id": vocab["[SEP]"]}
    config = BlipConfig(
        vision_config=TINY_VIT,
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "encoder_hidden_size": 32,
            "eos_token_id": ids["sep_token_id"],
            **ids,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():  # no token that decodes to nothing: [PAD], [UNK], [CLS], [SEP], [MASK], [DEC]
        model.text_decoder.cls.predictions.bias[tokenizer.all_special_ids] = -1e4
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    return _save(model, processor, out_dir)


def clip_tokenizer():
    """A CLIP BPE tokenizer over the 256 byte-level symbols (alone and word-final), with
    no merges: any text tokenizes, one token per byte."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(f"{s}</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=16)


def _owl_config(config_class, tokenizer):
    return config_class(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config=TINY_VIT,
        projection_dim=32,
    )


def build_tiny_owlvit(out_dir: Path | str, seed: int = 0) -> Path:
    """An OWL-ViT with 2-layer text and vision towers of width 32 on 32 px inputs (16 boxes)."""
    from transformers import OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    tokenizer = clip_tokenizer()
    side = {"height": 32, "width": 32}
    processor = OwlViTProcessor(OwlViTImageProcessor(size=side, crop_size=side), tokenizer)
    torch.manual_seed(seed)
    return _save(OwlViTForObjectDetection(_owl_config(OwlViTConfig, tokenizer)), processor, out_dir)


def build_tiny_owlv2(out_dir: Path | str, seed: int = 0) -> Path:
    """An OWLv2 with 2-layer text and vision towers of width 32 on 32 px inputs (16 boxes)."""
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer = clip_tokenizer()
    processor = Owlv2Processor(Owlv2ImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    torch.manual_seed(seed)
    return _save(Owlv2ForObjectDetection(_owl_config(Owlv2Config, tokenizer)), processor, out_dir)


def _save(model, processor, out_dir: Path | str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
