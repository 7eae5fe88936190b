"""Text-only baselines over the cached encoder features.

- ``linear-softmax``: a softmax classifier per word (the papers' BERT row, frozen here).
- ``linear-crf``: a linear layer and a CRF (the papers' BERT-CRF row).
- ``transformer-crf``: the trainable text encoder of the fusion models (Transformer
  layers over the projected word features) and a CRF, with no image: the baseline that
  GEI and FMIT must beat.

A batch is a dict with ``features`` ``[B, T, L, D]``, ``mask`` ``[B, T]`` (bool, padding
on the right) and, for the loss, ``labels`` ``[B, T]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mner.core.config import Count, Dropout, NonNegative
from mner.models import InputDims, check_heads, register
from mner.models.crf import CRF, Decoding, softmax_decode
from mner.models.layers import TextInput


@dataclass(frozen=True)
class LinearConfig:
    dropout: Dropout = 0.1
    shape_dim: NonNegative = 0  # word-shape embedding size (0: none; useful with uncased encoders)
    decode: Decoding = "constrained"  # keep to the BIO grammar (mner.models.crf) or free


@register("linear-softmax", LinearConfig)
class LinearSoftmax(nn.Module):
    def __init__(self, config: LinearConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__()
        self.config = config
        self.words = TextInput(inputs.text_layers, inputs.text_dim, config.shape_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(self.words.dim, num_labels)

    def emissions(self, batch: dict) -> torch.Tensor:
        return self.out(self.dropout(self.words(batch)))  # [B, T, K]

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.emissions(batch)
        mask = batch["mask"]
        return {"loss": nn.functional.cross_entropy(logits[mask], batch["labels"][mask])}

    def decode(self, batch: dict) -> list[list[int]]:
        return softmax_decode(self.emissions(batch), batch["mask"], self.config.decode == "constrained")


@register("linear-crf", LinearConfig)
class LinearCRF(LinearSoftmax):
    def __init__(self, config: LinearConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__(config, inputs, num_labels)
        self.crf = CRF(num_labels, constrained=config.decode == "constrained")

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self.crf.nll(self.emissions(batch), batch["labels"], batch["mask"])}

    def decode(self, batch: dict) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), batch["mask"])


@dataclass(frozen=True)
class TransformerCRFConfig:
    hidden: Count = 256
    layers: Count = 2
    heads: Count = 4
    ff: Count = 1024
    dropout: Dropout = 0.1
    shape_dim: NonNegative = 0  # word-shape embedding size (0: none; useful with uncased encoders)
    decode: Decoding = "constrained"  # keep to the BIO grammar (mner.models.crf) or free

    def __post_init__(self) -> None:
        check_heads("transformer-crf", self.heads, hidden=self.hidden)


@register("transformer-crf", TransformerCRFConfig)
class TransformerCRF(nn.Module):
    def __init__(self, config: TransformerCRFConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__()
        self.config = config
        self.words = TextInput(inputs.text_layers, inputs.text_dim, config.shape_dim)
        self.project = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.words.dim, config.hidden))
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, config.ff, config.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out = nn.Linear(config.hidden, num_labels)
        self.crf = CRF(num_labels, constrained=config.decode == "constrained")

    def emissions(self, batch: dict) -> torch.Tensor:
        x = self.project(self.words(batch))  # [B, T, H]
        x = self.encoder(x, src_key_padding_mask=~batch["mask"])  # [B, T, H]
        return self.out(x)  # [B, T, K]

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self.crf.nll(self.emissions(batch), batch["labels"], batch["mask"])}

    def decode(self, batch: dict) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), batch["mask"])
