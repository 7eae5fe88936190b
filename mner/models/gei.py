"""GEI: entity-level interaction over a heterogeneous graph (Zhao et al., 2022), over the
cached word features and the visual features of the whole image and its DETR objects.

- Entity Representation Extractor: the word features C go through Transformer-1 (then a
  linear map to the multimodal space, giving the token nodes) and Transformer-2 (whose
  output a CRF tags with untyped B/I/O: the span detection subtask). An entity node is the
  max-pool of its span's token nodes.
- Object Feature Encoder: ReLU(W_v V + b_v) of the |O| + 1 visual vectors (Eq. 6).
- Heterogeneous Graph Interacting Network, ``layers`` layers: intra-modal self-attention of
  tokens and of objects (Eq. 7); gated cross-attention entity -> object and object ->
  entity (Eq. 8-10); gated fusion of each object-aware entity into its own tokens only
  (Eq. 11-12); feed-forward; entity nodes re-pooled from the updated tokens.
- A CRF over the typed labels; loss ``lambda_sd * L_sd + lambda_mner * L_mner``.

Choices where the paper is silent (fields of :class:`GEIConfig` where they are real choices):

- The cached features are frozen (the paper fine-tunes BERT), so a linear map brings them
  to ``text_hidden`` before Transformer-1/2, each one standard Transformer encoder layer.
- ``d_m`` is not given in the paper; 512 as in FMIT. The feed-forward is 4 * d_m wide.
- Attention and feed-forward sublayers have residual connections and layer norm, as in the
  vanilla Transformer. Entity nodes take part in no self-attention (the graph has no
  entity-entity edges).
- Non-entity tokens are kept free of visual information, as the paper claims: the token
  self-attention of a layer reads, for tokens outside every span, a text-only stream that
  shares the layer's weights. (Plain token self-attention over six layers would carry the
  image from entity tokens into every token.) So the final representation of a token
  outside every span does not change when the image changes.
- Span detection reads its own Transformer-2 (``span_shared: false``, as the paper
  draws it) or Transformer-1's output (``span_shared: true``; no Transformer-2), so that,
  with the encoder frozen, the span loss shapes the token nodes, as it shapes the
  fine-tuned BERT under both Transformers in the paper.
- Scheduled sampling: in epoch e each training tweet builds its graph from its predicted
  spans with probability rising linearly from 0 at ``sampling_start`` to ``sampling_max``
  at ``sampling_end`` (paper: epochs 2 to 6, up to 90%), from its gold spans otherwise;
  evaluation always uses the predicted spans.

Ablations (the paper's names): ``entity_level_interaction: false`` (-entity-level
interaction: no entity nodes, objects interact directly with the entity-associated
tokens), ``span_detection: false`` (-span detection: no span subtask, every token interacts
with the objects) and ``image_region: true`` (+image region: the whole image and all 49
cells of its 7x7 grid instead of the objects; ``max_visual`` caps the objects only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mner.core.config import ConfigError, Count, Dropout, NonNegative, Share, Weight
from mner.data.labels import SPAN_TAGS, entities
from mner.models import InputDims, check_heads, register
from mner.models.crf import CRF, Decoding
from mner.models.layers import FeedForward, TextInput, cross_attention
from mner.tagger import VisualAttention


@dataclass(frozen=True)
class GEIConfig:
    text_hidden: Count = 768  # width of Transformer-1 and -2 (BERT's in the paper)
    d_m: Count = 512  # the multimodal space
    layers: Count = 6  # HGIN layers
    heads: Count = 8
    dropout: Dropout = 0.4
    lambda_sd: Weight = 0.5
    lambda_mner: Weight = 0.5
    sampling_start: NonNegative = 2  # scheduled sampling: first epoch with predicted spans
    sampling_end: NonNegative = 6  # epoch at which their share reaches sampling_max
    sampling_max: Share = 0.9
    entity_level_interaction: bool = True
    span_detection: bool = True
    span_shared: bool = False  # span detection over Transformer-1 (no Transformer-2)
    image_region: bool = False
    clue_cells: bool = False  # the clue's word vectors instead of the objects (a run over a clue set)
    max_visual: Count = 64  # visual vectors per tweet: the whole image and its first objects (not the grid's)
    shape_dim: NonNegative = 0  # word-shape embedding size (0: none; useful with uncased encoders)
    decode: Decoding = "constrained"  # keep to the BIO grammar (mner.models.crf; the span tags too) or free

    def __post_init__(self) -> None:
        check_heads("gei", self.heads, text_hidden=self.text_hidden, d_m=self.d_m)
        if self.entity_level_interaction and not self.span_detection:
            raise ConfigError(
                "gei: span_detection: false (-span detection) needs entity_level_interaction: false"
            )


class Gate(nn.Module):
    """``a * x + (1 - a) * y`` with ``a = sigmoid(W1 x + W2 y)`` (Eq. 9-10, 11-12)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.w1(x) + self.w2(y))
        return alpha * x + (1 - alpha) * y


class SelfAttention(nn.Module):
    """Multi-head self-attention with residual and layer norm (Eq. 7)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out, _ = self.attention(x, x, x, key_padding_mask=~mask, need_weights=False)
        return self.norm(x + self.dropout(out))


def max_pool(tokens: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
    """Entity nodes ``[B, E, d]``: the max over each span's tokens (``membership`` ``[B, E, T]``)."""
    masked = tokens[:, None].masked_fill(~membership[..., None], float("-inf"))  # [B, E, T, d]
    return masked.amax(dim=2).nan_to_num(0.0, neginf=0.0)


class HGINLayer(nn.Module):
    """One layer of the Heterogeneous Graph Interacting Network. The objects meet the
    entity nodes (:meth:`fuse_entities`) or, without entity-level interaction, the tokens
    of the graph (:meth:`fuse_tokens`): chosen once, from the config."""

    def __init__(self, config: GEIConfig) -> None:
        super().__init__()
        d, heads, dropout = config.d_m, config.heads, config.dropout
        self.token_attention = SelfAttention(d, heads, dropout)
        self.object_attention = SelfAttention(d, heads, dropout)
        self.to_objects = nn.MultiheadAttention(
            d, heads, dropout=dropout, batch_first=True
        )  # entity or token queries
        self.from_objects = nn.MultiheadAttention(
            d, heads, dropout=dropout, batch_first=True
        )  # object queries
        self.object_gate, self.token_gate = Gate(d), Gate(d)
        if config.entity_level_interaction:
            self.entity_gate = Gate(d)
        self.token_ff, self.object_ff = FeedForward(d, dropout), FeedForward(d, dropout)
        self.fuse = self.fuse_entities if config.entity_level_interaction else self.fuse_tokens

    def forward(self, graph: dict) -> tuple[dict, torch.Tensor | None]:
        """One layer over ``graph`` (tokens, text, objects and their masks, membership);
        returns the updated graph and the entity -> object attention ``[B, E, V]``."""
        text, in_span = graph["text"], graph["in_span"]  # in_span [B, T]
        d_tokens = self.token_attention(graph["tokens"], graph["token_mask"])  # [B, T, d]
        d_objects = self.object_attention(graph["objects"], graph["object_mask"])  # [B, V, d]
        fused, r_objects, attention = self.fuse(graph, d_tokens, d_objects)
        has_partner = in_span.any(dim=1)[:, None, None]  # [B, 1, 1]
        m_objects = torch.where(has_partner, self.object_gate(r_objects, d_objects), d_objects)
        m_tokens = torch.where(in_span[..., None], fused, d_tokens)  # only tokens in spans take the image
        new_tokens = self.token_ff(m_tokens)
        if text is not None:  # the text-only stream: same weights, no fusion
            text = self.token_ff(self.token_attention(text, graph["token_mask"]))
            new_tokens = torch.where(in_span[..., None], new_tokens, text)
        return {**graph, "tokens": new_tokens, "text": text, "objects": self.object_ff(m_objects)}, attention

    def fuse_entities(
        self, graph: dict, d_tokens: torch.Tensor, d_objects: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Entity nodes (pooled from the layer's input tokens) and objects attend to each
        other (Eq. 8-10); each token takes its entity's object-aware node (Eq. 11-12).
        Returns the fused tokens ``[B, T, d]``, the entity-aware objects ``[B, V, d]`` and
        the entity -> object attention ``[B, E, V]`` (None when the batch has no entity)."""
        membership = graph["membership"]  # [B, E, T]
        if membership.shape[1] == 0:  # no entity in the whole batch
            return d_tokens, torch.zeros_like(d_objects), None
        entities = max_pool(graph["tokens"], membership)  # [B, E, d]
        entity_mask = membership.any(dim=2)  # [B, E]
        r_entities, attention = cross_attention(self.to_objects, entities, d_objects, graph["object_mask"])
        m_entities = self.entity_gate(r_entities, entities)  # [B, E, d]
        r_objects, _ = cross_attention(self.from_objects, d_objects, entities, entity_mask)
        per_token = torch.einsum("bet,bed->btd", membership.float(), m_entities)  # its entity's node
        return self.token_gate(per_token, d_tokens), r_objects, attention

    def fuse_tokens(
        self, graph: dict, d_tokens: torch.Tensor, d_objects: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Without entity nodes: the objects meet the tokens of the graph (``in_span``: the
        entity-associated ones, or every token without span detection)."""
        r_tokens, _ = cross_attention(self.to_objects, d_tokens, d_objects, graph["object_mask"])
        fused = self.token_gate(r_tokens, d_tokens)
        r_objects, _ = cross_attention(self.from_objects, d_objects, d_tokens, graph["in_span"])
        return fused, r_objects, None


@register("gei", GEIConfig)
class GEI(nn.Module):
    attention_figure = "GEI's entity -> object attention (last layer) drawn over a test tweet's image"

    def __init__(self, config: GEIConfig, inputs: InputDims, num_labels: int) -> None:
        super().__init__()
        if not inputs.visual_dim:
            raise ConfigError("gei reads visual features: train it with the visual_features cache")
        self.config = config
        self.visual_kind = "clue" if config.clue_cells else "grid" if config.image_region else "objects"
        d, h = config.d_m, config.text_hidden
        self.words = TextInput(inputs.text_layers, inputs.text_dim, config.shape_dim)
        self.input = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(self.words.dim, h))
        self.transformer1 = nn.TransformerEncoderLayer(
            h, config.heads, 4 * h, config.dropout, batch_first=True
        )
        self.to_multimodal = nn.Linear(h, d)
        if config.span_detection:
            if not config.span_shared:
                self.transformer2 = nn.TransformerEncoderLayer(
                    h, config.heads, 4 * h, config.dropout, batch_first=True
                )
            self.span_out = nn.Linear(h, len(SPAN_TAGS))
            self.span_crf = CRF(len(SPAN_TAGS), constrained=config.decode == "constrained")
        self.objects = nn.Sequential(nn.Linear(inputs.visual_dim, d), nn.ReLU())
        self.layers = nn.ModuleList(HGINLayer(config) for _ in range(config.layers))
        self.out = nn.Linear(d, num_labels)
        self.crf = CRF(num_labels, constrained=config.decode == "constrained")
        self.sampling_share = 0.0

    def interaction_phase(self) -> list[nn.Module]:
        """The modules of the interaction phase: object encoder and HGIN layers."""
        return [self.objects, self.layers]

    def interaction_inputs(self, batch: dict) -> tuple:
        """The arguments of :meth:`interact` for ``batch`` (text encoding and spans done)."""
        tokens, span_emissions = self.encode(batch)
        return batch, tokens, self.graph_spans(batch, span_emissions)

    def set_epoch(self, epoch: int) -> None:
        """The share of predicted spans in the training graphs for this epoch."""
        c = self.config
        progress = (epoch - c.sampling_start) / max(1, c.sampling_end - c.sampling_start)
        self.sampling_share = c.sampling_max * min(1.0, max(0.0, progress))

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token nodes ``[B, T, d_m]`` and the span tag emissions ``[B, T, 3]``."""
        c = self.input(self.words(batch))  # [B, T, h]
        pad = ~batch["mask"]
        shared = self.transformer1(c, src_key_padding_mask=pad)
        tokens = self.to_multimodal(shared)  # [B, T, d]
        if not self.config.span_detection:
            return tokens, None
        span_input = shared if self.config.span_shared else self.transformer2(c, src_key_padding_mask=pad)
        return tokens, self.span_out(span_input)

    def graph_spans(self, batch: dict, span_emissions: torch.Tensor | None) -> torch.Tensor:
        """Untyped span tags ``[B, T]`` that build the graph: predicted ones (at evaluation,
        and for a ``sampling_share`` of the training tweets) or gold ones."""
        if span_emissions is None:
            return torch.zeros_like(batch["mask"], dtype=torch.long)
        with torch.no_grad():
            predicted = torch.zeros_like(batch["span_tags"])
            for b, tags in enumerate(self.span_crf.decode(span_emissions, batch["mask"])):
                predicted[b, : len(tags)] = torch.tensor(tags, device=predicted.device)
        if not self.training:
            return predicted
        use_predicted = torch.rand(len(predicted), device=predicted.device) < self.sampling_share  # [B]
        return torch.where(use_predicted[:, None], predicted, batch["span_tags"])

    def interact(
        self, batch: dict, tokens: torch.Tensor, span_tags: torch.Tensor
    ) -> tuple[torch.Tensor, list]:
        """The HGIN layers; returns the final token nodes ``[B, T, d]`` and the entity ->
        object attention of each layer (``[B, E, V]``, or None without entity nodes)."""
        membership = span_membership(span_tags, batch["mask"])  # [B, E, T]
        spans = self.config.span_detection  # -span detection: every token is in the graph
        graph = {
            "tokens": tokens,
            "text": tokens if spans else None,
            "token_mask": batch["mask"],
            "objects": self.objects(batch["visual"]),  # [B, V, d]
            "object_mask": batch["visual_mask"],
            "membership": membership,
            "in_span": membership.any(dim=1) if spans else batch["mask"],
        }
        attentions = []
        for layer in self.layers:
            graph, attention = layer(graph)
            attentions.append(attention)
        return graph["tokens"], attentions

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        tokens, span_emissions = self.encode(batch)
        final, _ = self.interact(batch, tokens, self.graph_spans(batch, span_emissions))
        losses = {"mner": self.crf.nll(self.out(final), batch["labels"], batch["mask"])}
        if span_emissions is not None:
            losses["sd"] = self.span_crf.nll(span_emissions, batch["span_tags"], batch["mask"])
        losses["loss"] = self.config.lambda_mner * losses["mner"] + self.config.lambda_sd * losses.get(
            "sd", 0.0
        )
        return losses

    def emissions(self, batch: dict) -> torch.Tensor:
        """Typed label scores ``[B, T, K]`` over the graph of the predicted spans (at
        evaluation) for the CRF."""
        tokens, span_emissions = self.encode(batch)
        final, _ = self.interact(batch, tokens, self.graph_spans(batch, span_emissions))
        return self.out(final)

    def decode(self, batch: dict) -> list[list[int]]:
        return self.crf.decode(self.emissions(batch), batch["mask"])

    @torch.no_grad()
    def attention(self, batch: dict, span_tags: torch.Tensor | None = None) -> VisualAttention | None:
        """For visualisation (the paper's Figure 4): the last layer's entity -> object
        attention ``[B, E, V]`` over the entity spans of each tweet (the predicted ones, or
        those of ``span_tags`` ``[B, T]``); None without entity nodes (the ablation, or no
        entity in the batch)."""
        tokens, span_emissions = self.encode(batch)
        if span_tags is None:
            span_tags = self.graph_spans(batch, span_emissions)
        _, attentions = self.interact(batch, tokens, span_tags)
        if attentions[-1] is None:
            return None
        spans = [tag_spans(tags[: int(n)]) for tags, n in zip(span_tags.tolist(), batch["mask"].sum(1))]
        return VisualAttention(attentions[-1], batch["visual_mask"], spans)


def tag_spans(tags: list[int]) -> list[tuple[int, int]]:
    """Word spans [start, end) of untyped span tag ids (chunked as conlleval does)."""
    labels = [SPAN_TAGS[t] if t == 0 else f"{SPAN_TAGS[t]}-E" for t in tags]
    return [(e.start, e.end) for e in entities(labels)]


def span_membership(span_tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, E, T]`` bool: token t belongs to entity e of its tweet (E: most spans in a tweet)."""
    spans = [tag_spans(tags[: int(n)]) for tags, n in zip(span_tags.tolist(), mask.sum(1))]
    membership = torch.zeros(len(spans), max(map(len, spans), default=0), mask.shape[1], dtype=torch.bool)
    for b, tweet_spans in enumerate(spans):
        for e, (start, end) in enumerate(tweet_spans):
            membership[b, e, start:end] = True
    return membership.to(mask.device)
