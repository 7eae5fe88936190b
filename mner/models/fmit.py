"""FMIT: the flat multimodal interaction Transformer (Lu et al., 2022), over the cached
word features and the visual features of the whole image and its grounded objects.

- Flat lattice ``[CLS], x_1..x_n, [SEP], v_1..v_m``: words and visual vectors go through
  their own ReLU projection and the shared output layer W_0 (Eq. 1-2) into d dimensions.
  Each cell has a head and a tail position: a word its own index in the lattice; an object
  grounded from a noun phrase the indices of the phrase's first and last word; the whole
  image and the objects of the four general words the first and last word of the tweet.
- Relative position encoding: the four head/tail distances of two cells (Eq. 3-6), their
  sinusoidal encodings (Eq. 7-8) and ``R_ij = ReLU(W_r [P_hh; P_ht; P_th; P_tt])`` (Eq. 9).
  As in FLAT (Li et al., 2020), W_r's four d x d blocks are applied to the sinusoid table
  of the distances present, then gathered per cell pair and summed: the ``[N, N, 4d]``
  concatenation is never built.
- Attention with the Transformer-XL terms (Eq. 10-12): content, content-position and the
  u, v biases, per head; the content-position terms are computed as
  ``(W_kR^T (q_i + v)) . R_ij`` so that no per-head ``[N, N, d_head]`` key tensor is
  built either. Then feed-forward and layer norm as in the vanilla Transformer.
- A CRF over the word cells' outputs (Eq. 13); entity boundary detection (EBD, Eq. 14):
  a flat text-only Transformer of the same structure over the ``[CLS], words, [SEP]``
  cells with a CRF over the boundary tags; loss ``nll(Y) + lambda * nll(Z)`` (Eq. 15).

Choices where the paper is silent (fields of :class:`FMITConfig` where they are real choices):

- The cached features stand for BERT's word vectors; ``[CLS]`` and ``[SEP]`` (whose
  vectors are not cached) are learned cells. Their positions are 0 and n + 1.
- One W_r for all layers (Eq. 9 has one; FLAT computes the encoding once per forward).
  The EBD Transformer has its own layers and W_r and shares the word projection
  (``ebd_shared: false``), or is the lattice Transformer itself run over the text-only
  lattice (``ebd_shared: true``), so that, with the encoder frozen, the EBD loss still
  reaches the layers the NER tags are read from, as it reaches the fine-tuned BERT in the
  paper.
- The feed-forward is ``ff`` wide (default 4d, the vanilla Transformer's ratio), ReLU.
- Boundary tags Z (``mner.data.labels.BOUNDARY_TAGS``): an entity's first word is B, its
  last word E, every other word O; a one-word entity is B (its head, the word that
  starts it).
- At most ``max_visual`` visual cells per tweet (the whole image and the first grounded
  objects, in the ground cache's order); w/o Obj takes the whole image and all 49 grid
  blocks whatever ``max_visual`` is.

Ablations (the paper's names): ``objects: false`` (w/o Obj: the 7x7 grid blocks of the
image instead of the grounded objects, positioned as the whole image), ``relative: false``
(w/o Rel: vanilla self-attention with sinusoidal absolute positions of the cells' order
in the lattice; no head/tail scheme) and ``ebd: false`` (w/o EBD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mner.core.config import ConfigError, Count, Dropout, NonNegative, Weight
from mner.data.labels import BOUNDARY_TAGS
from mner.models import InputDims, register
from mner.models.crf import CRF, Decoding
from mner.models.layers import TextInput
from mner.tagger import VisualAttention


@dataclass(frozen=True)
class FMITConfig:
    d: Count = 512  # width of the lattice cells
    layers: Count = 3  # the paper's l: 1, 3, 6 or 12
    heads: Count = 8
    ff: Count = 2048
    dropout: Dropout = 0.2
    lambda_ebd: Weight = 0.25
    max_visual: Count = 32  # visual cells per tweet (whole image included); not for the grid
    objects: bool = True  # false: w/o Obj (7x7 grid blocks)
    clue_cells: bool = False  # the clue's word vectors instead of the image's cells (a run over a clue set)
    relative: bool = True  # false: w/o Rel (absolute positions, vanilla attention)
    ebd: bool = True  # false: w/o EBD
    ebd_shared: bool = False  # EBD through the lattice Transformer's own layers (docs/studies.md: not better)
    shape_dim: NonNegative = 0  # word-shape embedding size (0: none; useful with uncased encoders)
    # keep to the BIO grammar (mner.models.crf) or free; EBD's boundary tags (B at a head, E at a
    # tail, O between) need more than a first-order grammar and always decode free
    decode: Decoding = "constrained"

    def __post_init__(self) -> None:
        if self.d % self.heads or self.d % 2:
            raise ConfigError(f"fmit: d ({self.d}) must be even and a multiple of heads ({self.heads})")


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Eq. 7-8: ``[...] -> [..., dim]``, sin on even and cos on odd dimensions."""
    frequencies = torch.exp(
        torch.arange(0, dim, 2, device=positions.device) * (-math.log(10000.0) / dim)
    )  # [dim / 2]
    angles = positions.float()[..., None] * frequencies
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class RelativePositions(nn.Module):
    """``R [B, N, N, d]`` of Eq. 9 from the cells' heads and tails ``[B, N]``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.w_r = nn.Linear(4 * d, d)

    def forward(self, heads: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        reach = int(torch.cat([heads, tails]).abs().max()) if heads.numel() else 0
        table = sinusoid(torch.arange(-reach, reach + 1, device=heads.device), self.d)  # [K, d]
        blocks = self.w_r.weight.view(self.d, 4, self.d)  # W_r = [W_hh, W_ht, W_th, W_tt]
        projected = torch.einsum("kc,dqc->qkd", table, blocks)  # [4, K, d]: each distance, each kind
        total = self.w_r.bias
        pairs = ((heads, heads), (heads, tails), (tails, heads), (tails, tails))  # hh, ht, th, tt
        for kind, (a, b) in enumerate(pairs):
            distance = a[:, :, None] - b[:, None, :] + reach  # [B, N, N], index into the table
            total = total + projected[kind][distance]
        return torch.relu(total)


class LatticeAttention(nn.Module):
    """Multi-head scaled dot-product attention over the lattice (w/o Rel); returns the
    output and the head-averaged attention weights ``[B, N, N]``."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d // heads
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.out = nn.Linear(d, d)  # W_t
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, cells, _ = x.shape
        q, k, v = (f(x).view(batch, cells, self.heads, self.d_head) for f in (self.q, self.k, self.v))
        scores = self.scores(q, k, positions) / math.sqrt(self.d_head)  # [B, H, N, N]
        weights = torch.softmax(scores.masked_fill(~mask[:, None, None, :], float("-inf")), dim=-1)
        attended = torch.einsum("bhij,bjhd->bihd", self.dropout(weights), v).reshape(batch, cells, -1)
        return self.out(attended), weights.mean(dim=1)

    def scores(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Unscaled scores ``[B, H, N, N]`` of the per-head queries and keys ``[B, N, H, d_head]``
        (no position term here)."""
        return torch.einsum("bihd,bjhd->bhij", q, k)


class RelativeLatticeAttention(LatticeAttention):
    """Lattice attention with the Transformer-XL terms of Eq. 10 over the relative
    position encoding ``R [B, N, N, d]``."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__(d, heads, dropout)
        self.k_r = nn.Parameter(torch.empty(heads, self.d_head, d))  # W_kR per head
        nn.init.xavier_uniform_(self.k_r.view(d, d))
        self.u = nn.Parameter(torch.zeros(heads, self.d_head))
        self.v_bias = nn.Parameter(torch.zeros(heads, self.d_head))

    def scores(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bihd,bjhd->bhij", q + self.u, k)  # content and u terms
        q_r = torch.einsum("bihd,hdc->bihc", q + self.v_bias, self.k_r)  # [B, N, H, d]
        return scores + torch.einsum("bihc,bijc->bhij", q_r, positions)  # position and v terms


class LatticeLayer(nn.Module):
    def __init__(self, config: FMITConfig) -> None:
        super().__init__()
        d = config.d
        attention = RelativeLatticeAttention if config.relative else LatticeAttention
        self.attention = attention(d, config.heads, config.dropout)
        self.ff = nn.Sequential(
            nn.Linear(d, config.ff), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.ff, d)
        )
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, mask, positions) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(x, mask, positions)
        x = self.norm1(x + self.dropout(attended))
        return self.norm2(x + self.dropout(self.ff(x))), weights


def flat_transformer(config: FMITConfig) -> nn.Module:
    """``layers`` lattice layers with the position encoding the config names."""
    return (RelativeFlatTransformer if config.relative else AbsoluteFlatTransformer)(config)


class RelativeFlatTransformer(nn.Module):
    """Lattice layers over the relative position encoding (one W_r for all layers)."""

    def __init__(self, config: FMITConfig) -> None:
        super().__init__()
        self.relative = RelativePositions(config.d)
        self.layers = nn.ModuleList(LatticeLayer(config) for _ in range(config.layers))

    def forward(self, lattice: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell outputs ``[B, N, d]`` and the last layer's attention ``[B, N, N]``."""
        positions = self.relative(lattice["heads"], lattice["tails"])  # [B, N, N, d]
        return run_layers(self.layers, lattice["cells"], lattice["mask"], positions)


class AbsoluteFlatTransformer(nn.Module):
    """Lattice layers over the cells with sinusoidal absolute positions added (w/o Rel)."""

    def __init__(self, config: FMITConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(LatticeLayer(config) for _ in range(config.layers))

    def forward(self, lattice: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell outputs ``[B, N, d]`` and the last layer's attention ``[B, N, N]``."""
        x = lattice["cells"]
        return run_layers(self.layers, x + sinusoid(lattice["order"], x.shape[-1]), lattice["mask"], None)


def run_layers(
    layers: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    for layer in layers:
        x, weights = layer(x, mask, positions)
    return x, weights


@register("fmit", FMITConfig)
class FMIT(nn.Module):
    attention_figure = "FMIT's word -> visual attention (averaged over each entity's words) over a test image"

    def __init__(self, config: FMITConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__()
        if not inputs.visual_dim:
            raise ConfigError("fmit reads visual features: train it with the visual_features cache")
        self.config = config
        self.visual_kind = "clue" if config.clue_cells else "grounded" if config.objects else "grid"
        d = config.d
        self.words = TextInput(inputs.text_layers, inputs.text_dim, config.shape_dim)
        self.word_in = nn.Sequential(nn.Linear(self.words.dim, d), nn.ReLU())  # W_1
        self.visual_in = nn.Sequential(nn.Linear(inputs.visual_dim, d), nn.ReLU())  # W_2
        self.shared_out = nn.Linear(d, d)  # W_0
        self.cls, self.sep = nn.Parameter(torch.randn(d) * 0.02), nn.Parameter(torch.randn(d) * 0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.transformer = flat_transformer(config)
        self.out = nn.Linear(d, num_labels)
        self.crf = CRF(num_labels, constrained=config.decode == "constrained")
        if config.ebd:
            if not config.ebd_shared:
                self.ebd_transformer = flat_transformer(config)
            self.ebd_out = nn.Linear(d, len(BOUNDARY_TAGS))
            self.ebd_crf = CRF(len(BOUNDARY_TAGS))

    def interaction_phase(self) -> list[nn.Module]:
        """The modules of the interaction phase: the cell projections and the lattice
        Transformer (the EBD Transformer is a training-time auxiliary over the words)."""
        return [self.word_in, self.visual_in, self.shared_out, self.transformer]

    def interaction_inputs(self, batch: dict) -> tuple:
        """The arguments of :meth:`interact` for ``batch``."""
        return (batch,)

    def lattice(self, batch: dict, visual: bool = True) -> dict:
        """The flat lattice of each tweet, laid out ``[CLS], T word cells, [SEP], V visual
        cells`` (padding inside each block): ``cells [B, N, d]``, ``mask [B, N]``,
        ``heads`` and ``tails [B, N]`` and ``order [B, N]`` (the cell's index in its
        tweet's unpadded sequence, for absolute positions)."""
        words = self.shared_out(self.word_in(self.dropout(self.words(batch))))  # [B, T, d]
        word_mask = batch["mask"]
        batch_size, longest = word_mask.shape
        n = word_mask.sum(dim=1)  # [B]
        index = torch.arange(1, longest + 1, device=n.device).expand(batch_size, -1)  # word i at i
        ones = torch.ones(batch_size, 1, dtype=torch.bool, device=n.device)
        parts = {
            "cells": [self.cls.expand(batch_size, 1, -1), words, self.sep.expand(batch_size, 1, -1)],
            "mask": [ones, word_mask, ones],
            "heads": [torch.zeros_like(n)[:, None], index, (n + 1)[:, None]],
            "order": [torch.zeros_like(n)[:, None], index, (n + 1)[:, None]],
        }
        parts["tails"] = list(parts["heads"])
        if visual:
            objects = self.shared_out(self.visual_in(self.dropout(batch["visual"])))  # [B, V, d]
            positions = batch["visual_positions"] + 1  # word indices in the lattice
            count = batch["visual"].shape[1]
            parts["cells"].append(objects)
            parts["mask"].append(batch["visual_mask"])
            parts["heads"].append(positions[..., 0])
            parts["tails"].append(positions[..., 1])
            parts["order"].append(n[:, None] + 2 + torch.arange(count, device=n.device))
        return {name: torch.cat(values, dim=1) for name, values in parts.items()}

    def interact(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Word cell outputs ``[B, T, d]`` and the last layer's attention from the word
        cells to the visual cells ``[B, T, V]``."""
        out, weights = self.transformer(self.lattice(batch))
        longest = batch["mask"].shape[1]
        return out[:, 1 : longest + 1], weights[:, 1 : longest + 1, longest + 2 :]

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        words, _ = self.interact(batch)
        losses = {"mner": self.crf.nll(self.out(words), batch["labels"], batch["mask"])}
        losses["loss"] = losses["mner"]
        if self.config.ebd:
            encoder = self.transformer if self.config.ebd_shared else self.ebd_transformer
            text, _ = encoder(self.lattice(batch, visual=False))
            boundaries = self.ebd_out(text[:, 1 : batch["mask"].shape[1] + 1])
            losses["ebd"] = self.ebd_crf.nll(boundaries, batch["boundary_tags"], batch["mask"])
            losses["loss"] = losses["loss"] + self.config.lambda_ebd * losses["ebd"]
        return losses

    def emissions(self, batch: dict) -> torch.Tensor:
        """Label scores of the word cells ``[B, T, K]`` for the CRF."""
        return self.out(self.interact(batch)[0])

    def decode(self, batch: dict) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), batch["mask"])

    @torch.no_grad()
    def attention(self, batch: dict, span_tags: torch.Tensor | None = None) -> VisualAttention:
        """For visualisation: the last layer's head-averaged attention from each word cell
        to each visual cell ``[B, T, V]`` (whole image first). (``span_tags`` is unused:
        FMIT builds no graph from spans.)"""
        _, weights = self.interact(batch)
        return VisualAttention(weights, batch["visual_mask"])
