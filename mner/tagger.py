"""What the trainer, evaluation, the report and ``mner predict`` ask of a model: the typed
contract of the registered models (``tests/models/test_every_model.py`` checks each one).

Every model is a :class:`Tagger`. A multimodal one is also a :class:`VisualTagger`: it
names the visual cells it reads and can show its attention over them. A model with a CRF
output layer is a :class:`CRFTagger` (its label marginals come from the CRF), and one with
a schedule of its own over the epochs (GEI's scheduled sampling) a :class:`ScheduledTagger`.
Capabilities are asked of a model here and nowhere else.

The visual cells a multimodal model reads beside the whole image are one of
:data:`VISUAL_KINDS`, each a :class:`VisualKind` record: which cache fields it reads, the
upstream cache its cells come from, and how they are counted and described. The ``clue``
kind reads text as an image: the word vectors of the tweet's clue (its image's caption),
read alone by the frozen text encoder, after their mean as the "whole image"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mner.core.config import Registry
from mner.core.workspace import CLUE_MEAN, CLUE_WORDS


@dataclass(frozen=True)
class VisualKind:
    """One kind of visual cells a multimodal model reads beside the whole image."""

    name: str  # a VisualTagger's visual_kind
    field: str  # the field of its cells' vectors in its cache
    # the upstream cache its cells are the boxes of, named as in a checkpoint's caches and in the
    # visual cache's provenance (objects, grounding); None: the cells of the whole image's grid
    source: str | None
    stage: str | None  # the stage that writes source
    positions: bool  # each cell has its phrase's head/tail word positions (the grounding cache's)
    capped: bool  # only the first max_visual - 1 cells are read
    cell: str  # a cell's "kind" in mner.features.visual.describe_cells
    blank: str  # visual-use: what the blank image brings beside its whole-image vector
    deranged: str  # visual-use: what another tweet lends
    cache: str = "visual"  # the model input cache of its vectors (mner.core.workspace.MODEL_INPUTS)
    whole: str = "image"  # the field of the vector read before the cells (the whole image's)


VISUAL_KINDS = Registry("visual kind")  # an unknown name fails with the valid ones
for kind in (
    VisualKind(
        name="objects",
        field="objects",
        source="objects",
        stage="detect",
        positions=False,
        capped=True,
        cell="object",
        blank="no detected objects",
        deranged="its whole image and detected objects",
    ),
    VisualKind(
        name="grounded",
        field="grounded",
        source="grounding",
        stage="ground",
        positions=True,
        capped=True,
        cell="grounded",
        blank="no grounded objects",
        deranged=(
            "its whole image; the tweet keeps its own grounded cells (number, word positions), "
            "filled in turn with the other tweet's grounded vectors (its whole image when it has none)"
        ),
    ),
    VisualKind(
        name="grid",
        field="grid",
        source=None,
        stage=None,
        positions=False,
        capped=False,
        cell="grid",
        blank="the blank image's grid",
        deranged="its whole image and grid",
    ),
    VisualKind(  # the word vectors of the tweet's clue texts (a caption), each text read alone
        name="clue",
        field=CLUE_WORDS,
        source=None,
        stage=None,
        positions=False,
        capped=False,
        cell="clue word",
        blank="an empty clue",
        deranged="its clue's words",
        cache="cells",
        whole=CLUE_MEAN,
    ),
):
    VISUAL_KINDS.register(kind.name)(kind)


@runtime_checkable
class Tagger(Protocol):
    config: Any  # the model's config dataclass

    def loss(self, batch: dict) -> dict[str, torch.Tensor]:
        """The named losses of a batch, ``loss`` (the one to minimise) among them."""
        ...

    def emissions(self, batch: dict) -> torch.Tensor:
        """Label scores of every word ``[B, T, K]``."""
        ...

    def decode(self, batch: dict) -> list[list[int]]:
        """The label ids of every tweet's words."""
        ...


@dataclass(frozen=True)
class VisualAttention:
    """A multimodal model's attention over the visual cells of each tweet of a batch, as
    ``mner predict`` and the report read it: one row of ``weights`` per word (FMIT's word
    -> visual attention) or per entity span of the tweet's graph (GEI's entity -> object
    attention; ``spans`` then holds each tweet's spans, in row order)."""

    weights: torch.Tensor  # [B, R, V]: rows are words, or entity spans
    visual_mask: torch.Tensor  # [B, V] the real visual cells
    spans: list[list[tuple[int, int]]] | None = None  # per tweet, the span [start, end) of each row

    def of_entity(self, tweet: int, start: int, end: int) -> torch.Tensor | None:
        """The weights ``[V]`` of the entity over words ``start:end`` of ``tweet``: the mean
        of its words' rows, or its span's row (None when no row is that span)."""
        if self.spans is None:
            return self.weights[tweet, start:end].mean(dim=0)
        if (start, end) not in self.spans[tweet]:
            return None
        return self.weights[tweet, self.spans[tweet].index((start, end))]


@runtime_checkable
class VisualTagger(Tagger, Protocol):
    visual_kind: str  # the name of the VisualKind of the cells it reads beside the whole image

    def interaction_phase(self) -> list[nn.Module]:
        """The modules of its interaction phase (FMIT's Table 3 counts their parameters)."""
        ...

    def attention(self, batch: dict, span_tags: torch.Tensor | None = None) -> VisualAttention | None:
        """Its attention from the words or entity spans to the visual cells (None when the
        model or the batch has no such rows: GEI without entity nodes)."""
        ...


@runtime_checkable
class CRFTagger(Tagger, Protocol):
    crf: nn.Module  # mner.models.crf.CRF: decoding and label marginals


@runtime_checkable
class ScheduledTagger(Tagger, Protocol):
    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch."""
        ...


def visual_kind(model: Tagger) -> VisualKind | None:
    """The kind of visual cells ``model`` reads, or None for a text-only model."""
    return VISUAL_KINDS[model.visual_kind] if isinstance(model, VisualTagger) else None
