"""UMT: the unified multimodal Transformer (Yu et al., ACL 2020), over the cached word
features and the 7x7 grid of the image's ResNet-152 feature map, the baseline row of both
papers' tables.

- Words: C, the word vectors under a standard Transformer layer (the paper's layer on top
  of BERT for the main task).
- Multimodal interaction module, each part a cross-modal Transformer (CMT) layer, Eq. 1-4:
  multi-head attention from queries to keys, ``P~ = LN(Q + MH-CA(Q, K))``, then
  ``P = LN(P~ + FFN(P~))``:

  - image-aware word representations A, by the coupled CMT: the image regions (their own
    projection ``W_u' U``) attend to the words, and the words attend to those word-aware
    regions;
  - word-aware visual representations B: the words attend to the regions (``W_u U``);
  - the visual gate ``g = sigmoid(W_a A + W_b B + b)`` (one linear map of ``[A; B]``),
    which decides how much of its visual representation each word takes; ``H = [A; g * B]``.

- Auxiliary entity span detection (ESD): a text-only Transformer layer over the word
  vectors with a CRF over untyped span tags (O, B, I); its scores reach the final CRF
  through the conversion matrix ``W^c`` (span tag -> label: O to O, B to every B- type and
  I to every I- type, each by 1 / the number of types): the final emissions are
  ``alpha * W_o H + (1 - alpha) * W^c(ESD scores)``.
- Loss: ``nll(Y) + lambda * nll(Z)`` (the paper's lambda 0.5).

Choices where the paper is silent (settled as its public repository, jefferyYu/UMT, does;
this code is written from the paper):

- The conversion matrix is fixed (not learned), and ``alpha`` is 0.5, as there.
- One CMT layer in each of the three places (``cross_layers``), feed-forward 4d wide, GELU.
- Only the 49 grid regions are keys and queries of the interaction module; the whole-image
  vector that the cache holds beside them (the dataset's first visual cell) is not read.

Over frozen cached word features (the paper fine-tunes BERT): a linear map brings them to
d, and both Transformer layers (the main one and ESD's) read it, so that the ESD loss
still reaches the word vectors the interaction module reads, as it reaches the fine-tuned
BERT in the paper.

Ablations (the paper's Table 3 names): ``span_detection: false`` (w/o ESD module: no
auxiliary loss, no conversion) and ``visual_gate: false`` (w/o visual gate: ``H = [A; B]``).

Checked against the public code run unmodified, with BERT stubbed and the same weights:
emissions, span scores, loss and free decoding agree to 1e-6. Where the two still differ,
and which way this code goes:

- Span-detection targets (followed): each word's label with its type removed (``B-PER`` ->
  B, ``I-PER`` -> I, :func:`span_targets`), as the public code reads them (``label[0]``),
  not the conlleval chunks of ``batch["span_tags"]`` (:func:`mner.data.labels.entity_tags`,
  which GEI reads): an orphan ``I-X`` (after O or first) or an ``I-Y`` after another type is
  I here, where its chunk starts with B. ``W^c`` sends I to the I- labels, so only the
  label's own prefix keeps the span loss from pulling the final emissions away from the gold
  label on those words, whose gold stays ``I-X`` under ``prepare.bio: keep`` (the default).
  Twitter-2015 holds 186 / 53 / 135 such tags (train / valid / test: 175 / 52 / 129 orphans,
  11 / 1 / 6 type switches), Twitter-2017 none, and ``prepare.bio: repair`` leaves none; the
  stored losses' batch has none either, so none moved.
- No dropout inside the feed-forward, between ``GELU(W_1 x)`` and ``W_2``, of the CMT layers
  and the two text layers (followed): none in BERT's intermediate layer, the public code's,
  nor in Eq. 4. The dropouts kept are the public code's: the attention weights', and each
  sublayer's output before its residual, all at ``dropout``. Training only: no stored loss
  moved (their tiny models have dropout 0), and a checkpoint keeps its parameter names.
- Layer norm epsilon 1e-5, PyTorch's default (the public code's BERT layers: 1e-12): kept.
  Measured, 1e-12 moves a paper-sized model's emissions by 5e-5 at most (of 0.76) and the
  stored losses by 5e-6 relative: far below seed noise, not worth a second constant.
- Initialisation, PyTorch's defaults (the public code: normal(0, 0.02) weights and zero
  biases): kept. At d = 768 the default weights are about as large (std 0.026 in the
  attention, 0.021 in ``W_1``, 0.010 in ``W_2``, 0.013-0.021 elsewhere); the biases are
  uniform within 1 / sqrt(fan-in) (at most 0.036) where the public code's are 0, the
  attention biases 0 in both. A fixed 0.02 fits BERT's width only (at the tests' d = 16 it
  would shrink every layer 7 times), GEI and FMIT here start from the same defaults, and the
  stored losses pin them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mner.core.config import ConfigError, Count, Dropout, NonNegative, Share, Weight
from mner.data.labels import SPAN_TAGS
from mner.models import InputDims, check_heads, register
from mner.models.crf import CRF, Decoding
from mner.models.layers import TextInput, cross_attention
from mner.tagger import VisualAttention


@dataclass(frozen=True)
class UMTConfig:
    d: Count = 768  # BERT-base's width, the width of every layer
    heads: Count = 12
    cross_layers: Count = 1  # CMT layers in each of the three places
    dropout: Dropout = 0.1
    lambda_span: Weight = 0.5  # weight of the entity span detection loss
    alpha: Share = 0.5  # weight of the main scores against the converted span scores
    span_detection: bool = True  # false: w/o ESD module
    visual_gate: bool = True  # false: w/o visual gate
    clue_cells: bool = False  # the clue's word vectors instead of the grid (a run over a clue set)
    shape_dim: NonNegative = 0  # word-shape embedding size (0: none; useful with uncased encoders)
    decode: Decoding = "constrained"  # keep to the BIO grammar (mner.models.crf) or free

    def __post_init__(self) -> None:
        check_heads("umt", self.heads, d=self.d)


class FeedForward(nn.Module):
    """BERT's intermediate and output sublayers: ``LN(x + W_2 GELU(W_1 x))``, 4x wide, the
    dropout on ``W_2``'s output and none inside (:class:`mner.models.layers.FeedForward` has
    one there). ``[B, T, d] -> [B, T, d]``."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        # the Identity where the shared layer has its inner dropout: the same parameter names
        self.net = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Identity(), nn.Linear(4 * dim, dim))
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.net(x)))


class CrossModalLayer(nn.Module):
    """One CMT layer (Eq. 1-4): the queries attend to the keys; residual and layer norm,
    then the feed-forward with its residual and layer norm."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm, self.dropout = nn.LayerNorm(d), nn.Dropout(dropout)
        self.ff = FeedForward(d, dropout)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``[B, Q, d]`` and the head-averaged attention ``[B, Q, K]``."""
        attended, weights = cross_attention(self.attention, queries, keys, key_mask)
        return self.ff(self.norm(queries + self.dropout(attended))), weights


class CrossModalTransformer(nn.Module):
    """``layers`` CMT layers over the same keys."""

    def __init__(self, config: UMTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossModalLayer(config.d, config.heads, config.dropout) for _ in range(config.cross_layers)
        )

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``[B, Q, d]`` and the last layer's attention ``[B, Q, K]``."""
        for layer in self.layers:
            queries, weights = layer(queries, keys, key_mask)
        return queries, weights


def conversion_matrix(num_labels: int) -> torch.Tensor:
    """``W^c`` ``[3, K]`` from the span tags (O, B, I) to a BIO vocabulary (``O``, then
    ``B-T``, ``I-T`` per type): O to O, B and I to each type's B- and I- by 1 / types."""
    types = (num_labels - 1) // 2
    matrix = torch.zeros(len(SPAN_TAGS), num_labels)
    matrix[SPAN_TAGS.index("O"), 0] = 1.0
    matrix[SPAN_TAGS.index("B"), 1::2] = 1.0 / types
    matrix[SPAN_TAGS.index("I"), 2::2] = 1.0 / types
    return matrix


def span_targets(labels: torch.Tensor) -> torch.Tensor:
    """The span tags ``[B, T]`` of label ids ``[B, T]`` in a BIO vocabulary (``O``, then
    ``B-T``, ``I-T`` per type): each label's prefix, the span tag that ``W^c`` sends to it."""
    prefix = torch.where(labels % 2 == 1, SPAN_TAGS.index("B"), SPAN_TAGS.index("I"))
    return torch.where(labels == 0, SPAN_TAGS.index("O"), prefix)


@register("umt", UMTConfig)
class UMT(nn.Module):
    attention_figure = (
        "UMT's word -> image region attention (word-aware visual representation, averaged over "
        "each entity's words) over a test image's 7x7 grid"
    )

    def __init__(self, config: UMTConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__()
        if not inputs.visual_dim:
            raise ConfigError("umt reads visual features: train it with the visual_features cache")
        self.config = config
        self.visual_kind = "clue" if config.clue_cells else "grid"
        d = config.d
        self.words = TextInput(inputs.text_layers, inputs.text_dim, config.shape_dim)
        self.input = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.words.dim, d))

        def transformer_layer() -> nn.Module:
            """A post-norm layer, as BERT's: ``LN(h + FFN(h))`` over ``h = LN(x + MH-SA(x))``."""
            layer = nn.TransformerEncoderLayer(
                d, config.heads, 4 * d, config.dropout, activation="gelu", batch_first=True
            )
            layer.dropout = nn.Identity()  # the one inside the feed-forward: BERT has none
            return layer

        self.text = transformer_layer()
        self.regions = nn.Linear(inputs.visual_dim, d)  # W_u: the keys of the words (B)
        self.coupled_regions = nn.Linear(inputs.visual_dim, d)  # W_u': the regions of the coupled CMT (A)
        self.word_aware_visual = CrossModalTransformer(config)  # words -> regions: B
        self.word_aware_regions = CrossModalTransformer(config)  # regions -> words
        self.image_aware_words = CrossModalTransformer(config)  # words -> word-aware regions: A
        if config.visual_gate:
            self.gate = nn.Linear(2 * d, d)
        self.out = nn.Linear(2 * d, num_labels)
        self.crf = CRF(num_labels, constrained=config.decode == "constrained")
        if config.span_detection:
            self.span_text = transformer_layer()
            self.span_out = nn.Linear(d, len(SPAN_TAGS))
            self.span_crf = CRF(len(SPAN_TAGS))  # its likelihood only: the span tags are never decoded
            self.register_buffer("conversion", conversion_matrix(num_labels), persistent=False)

    def interaction_phase(self) -> list[nn.Module]:
        """The modules of the multimodal interaction module: the region projections, the
        three CMTs and the visual gate."""
        gate = [self.gate] if self.config.visual_gate else []
        return [
            self.regions,
            self.coupled_regions,
            self.word_aware_visual,
            self.word_aware_regions,
            self.image_aware_words,
            *gate,
        ]

    def interaction_inputs(self, batch: dict) -> tuple:
        """The arguments of :meth:`interact` for ``batch`` (the text encoded)."""
        return batch, self.encode(batch)[0]

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The word representations C ``[B, T, d]`` and the span tag scores ``[B, T, 3]``
        (None without span detection)."""
        x = self.input(self.words(batch))  # [B, T, d]
        pad = ~batch["mask"]
        words = self.text(x, src_key_padding_mask=pad)
        if not self.config.span_detection:
            return words, None
        return words, self.span_out(self.span_text(x, src_key_padding_mask=pad))

    def interact(self, batch: dict, words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``H = [A; g * B]`` ``[B, T, 2d]`` and the words' attention over the regions (the
        one behind B) ``[B, T, V]``, laid out as the batch's visual cells (0 on the whole
        image, which is not read)."""
        grid, grid_mask = batch["visual"][:, 1:], batch["visual_mask"][:, 1:]
        word_mask = batch["mask"]
        visual, weights = self.word_aware_visual(words, self.regions(grid), grid_mask)  # B
        regions, _ = self.word_aware_regions(self.coupled_regions(grid), words, word_mask)
        image_aware, _ = self.image_aware_words(words, regions, grid_mask)  # A
        if self.config.visual_gate:
            visual = torch.sigmoid(self.gate(torch.cat([image_aware, visual], dim=-1))) * visual
        return torch.cat([image_aware, visual], dim=-1), nn.functional.pad(weights, (1, 0))

    def scores(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The final emissions ``[B, T, K]`` and the span tag scores (None without ESD)."""
        words, span_scores = self.encode(batch)
        emissions = self.out(self.interact(batch, words)[0])
        if span_scores is None:
            return emissions, None
        alpha = self.config.alpha
        return alpha * emissions + (1 - alpha) * span_scores @ self.conversion, span_scores

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        emissions, span_scores = self.scores(batch)
        losses = {"mner": self.crf.nll(emissions, batch["labels"], batch["mask"])}
        losses["loss"] = losses["mner"]
        if span_scores is not None:
            targets = span_targets(batch["labels"])  # the labels' prefixes, not batch["span_tags"]
            losses["span"] = self.span_crf.nll(span_scores, targets, batch["mask"])
            losses["loss"] = losses["loss"] + self.config.lambda_span * losses["span"]
        return losses

    def emissions(self, batch: dict) -> torch.Tensor:
        return self.scores(batch)[0]

    def decode(self, batch: dict) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), batch["mask"])

    @torch.no_grad()
    def attention(self, batch: dict, span_tags: torch.Tensor | None = None) -> VisualAttention:
        """For visualisation: each word's attention over the grid regions ``[B, T, V]`` in
        the word-aware visual representation (the last CMT layer's, head-averaged), the
        whole-image cell at 0. (``span_tags`` is unused: UMT builds no graph from spans.)"""
        _, weights = self.interact(batch, self.encode(batch)[0])
        return VisualAttention(weights, batch["visual_mask"])
