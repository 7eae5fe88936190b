"""Helpers for the equation tests: tiny models and batches with hand-set spans and
emissions (the hand-made batches themselves are :mod:`tests.models.batches`)."""

from __future__ import annotations

import torch
from torch import nn

from mner.data.labels import SPAN_TAGS, TWITTER_LABELS
from mner.models import InputDims, build_model
from tests.models.batches import batch

INPUTS = InputDims(text_layers=2, text_dim=12, visual_dim=10)
GEI_TINY = {"text_hidden": 16, "d_m": 8, "layers": 2, "heads": 2, "dropout": 0.0}
FMIT_TINY = {"d": 8, "layers": 2, "heads": 2, "ff": 16, "dropout": 0.0}
UMT_TINY = {"d": 8, "heads": 2, "cross_layers": 2, "dropout": 0.0}
TINY = {"gei": GEI_TINY, "fmit": FMIT_TINY, "umt": UMT_TINY}


def tiny(name: str, seed: int = 0, **overrides) -> nn.Module:
    """A tiny ``gei``, ``fmit`` or ``umt`` with every parameter (biases included) drawn at random,
    so that no zero-initialised term can hide a wrong equation."""
    torch.manual_seed(seed)
    model = build_model(name, {**TINY[name], **overrides}, INPUTS, len(TWITTER_LABELS))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    return model


def spanned_batch(**kwargs) -> dict:
    """The hand-made batch (spans 0-2 and 4 in tweet 0, 1 in tweet 1, none in tweet 2)
    with distinct visual features per cell."""
    return batch(**kwargs)


def span_emissions_for(tags: torch.Tensor, margin: float = 50.0) -> torch.Tensor:
    """Span tag emissions ``[B, T, 3]`` whose Viterbi path is ``tags`` ``[B, T]``."""
    return nn.functional.one_hot(tags, len(SPAN_TAGS)).float() * margin


def padded(paths: list[list[int]], like: torch.Tensor) -> torch.Tensor:
    """Decoded paths as a ``[B, T]`` tensor shaped like ``like``, zeros after each path."""
    out = torch.zeros_like(like)
    for b, path in enumerate(paths):
        out[b, : len(path)] = torch.tensor(path)
    return out


def multihead(attention: nn.MultiheadAttention, queries: torch.Tensor, keys: torch.Tensor) -> tuple:
    """``attention`` of one tweet's unpadded ``queries`` ``[Q, d]`` over its ``keys`` ``[K, d]``:
    the output ``[Q, d]`` and the head-averaged weights ``[Q, K]``."""
    out, weights = attention(queries[None], keys[None], keys[None])
    return out[0], weights[0]
