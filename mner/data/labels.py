"""The labels of the data and what is read from them: the BIO label grammar and a
dataset's label vocabulary, BIO entity chunking under the two scoring schemes, the untyped
span and boundary tags of the auxiliary tasks, and the word shapes (the casing and Twitter
markers an uncased encoder cannot see).

A label is ``O``, ``B-<type>`` or ``I-<type>``, where a type is a name of letters, digits,
``_``, ``-`` and ``.``: any dataset brings its own types. A dataset's vocabulary
(:func:`label_vocabulary`) orders its types as CoNLL does, PER, LOC, ORG, MISC first where
present, then any other type by name; for Twitter-2015/2017 it is :data:`TWITTER_LABELS`.

Two chunking schemes:

- ``conlleval``: as conlleval.pl and seqeval's default mode. Any ``I-X`` that does not
  continue an entity of type X (after ``O``, at the start, or after another type) starts
  a new entity.
- ``strict``: IOB2-strict (seqeval ``mode="strict", scheme=IOB2``). An entity is ``B-X``
  followed by ``I-X`` tags; an ``I-`` tag that does not continue one belongs to no entity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    import torch

SCHEMES = ("conlleval", "strict")
Scheme = Literal["conlleval", "strict"]

CONLL_TYPES = ("PER", "LOC", "ORG", "MISC")  # CoNLL's order, and Twitter-2015/2017's types
BIO_LABEL = re.compile(r"O|([BI])-([\w.-]+)")
LABEL_GRAMMAR = "O, B-<type> or I-<type>, with a type of letters, digits, '_', '-' and '.'"


def type_order(entity_type: str) -> tuple[int, str]:
    """Sort key of an entity type: CoNLL's PER, LOC, ORG, MISC first, any other by name."""
    known = CONLL_TYPES.index(entity_type) if entity_type in CONLL_TYPES else len(CONLL_TYPES)
    return known, entity_type


def ordered_types(types: Iterable[str]) -> tuple[str, ...]:
    """The distinct ``types`` in :func:`type_order`."""
    return tuple(sorted(set(types), key=type_order))


def bio_labels(types: Iterable[str]) -> tuple[str, ...]:
    """``O``, then ``B-T`` and ``I-T`` of each type in :func:`type_order`."""
    return ("O", *(f"{prefix}-{t}" for t in ordered_types(types) for prefix in "BI"))


def label_types(label_sequences: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The entity types that occur in B- or I- labels of the sequences, in :func:`type_order`;
    a label outside the BIO grammar raises ValueError."""
    types = set()
    for labels in label_sequences:
        for label in labels:
            match = BIO_LABEL.fullmatch(label)
            if match is None:
                raise ValueError(f"malformed label {label!r}: expected {LABEL_GRAMMAR}")
            if match[2] is not None:
                types.add(match[2])
    return ordered_types(types)


def label_vocabulary(label_sequences: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """A dataset's labels, given the label sequences of all its splits: ``O``, then ``B-T``
    and ``I-T`` of each type that occurs, PER, LOC, ORG, MISC first, then the others by name
    (the order of a model's outputs)."""
    return bio_labels(label_types(label_sequences))


def is_bio_vocabulary(labels: Sequence[str]) -> bool:
    """Whether ``labels`` is a vocabulary as :func:`bio_labels` lays it out (the layout that
    constrained decoding reads): ``O``, then ``B-T`` and ``I-T`` of each type in order."""
    try:
        return tuple(labels) == bio_labels(label_types([labels]))
    except ValueError:
        return False


TWITTER_LABELS = bio_labels(CONLL_TYPES)  # the vocabulary of Twitter-2015 and Twitter-2017


class Entity(NamedTuple):
    """An entity of one sentence: its type and word span [start, end)."""

    type: str
    start: int
    end: int


def entities(labels: Sequence[str], scheme: Scheme = "conlleval") -> list[Entity]:
    """The entities that a BIO label sequence encodes under ``scheme``."""
    if scheme == "conlleval":
        return _conlleval_entities(labels)
    if scheme == "strict":
        return _strict_entities(labels)
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def _conlleval_entities(labels: Sequence[str]) -> list[Entity]:
    found, start, kind = [], None, None
    for i, label in enumerate([*labels, "O"]):
        prefix, tag = label[:1], label[2:]
        if start is not None and (prefix != "I" or tag != kind):
            found.append(Entity(kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, tag
    return found


def _strict_entities(labels: Sequence[str]) -> list[Entity]:
    found = []
    for start, label in enumerate(labels):
        if label.startswith("B-"):
            end = start + 1
            while end < len(labels) and labels[end] == f"I-{label[2:]}":
                end += 1
            found.append(Entity(label[2:], start, end))
    return found


WORD_SHAPES = (
    "pad",
    "lower",
    "title",
    "upper",
    "mixed",
    "digits",
    "punct",
    "mention",
    "hashtag",
    "url",
    "other",
)


def word_shape(token: str) -> int:
    """Index in :data:`WORD_SHAPES` of the token's surface form: the casing and Twitter
    markers that an uncased encoder cannot see."""
    if token.startswith(("http://", "https://", "www.")):
        return WORD_SHAPES.index("url")
    if len(token) > 1 and token[0] in "@#":
        return WORD_SHAPES.index("mention" if token[0] == "@" else "hashtag")
    letters = [c for c in token if c.isalpha()]
    if not letters:
        return WORD_SHAPES.index("digits" if any(c.isdigit() for c in token) else "punct")
    if all(c.islower() for c in letters):
        return WORD_SHAPES.index("lower")
    if all(c.isupper() for c in letters):
        return WORD_SHAPES.index("upper")
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return WORD_SHAPES.index("title")
    return WORD_SHAPES.index("mixed") if any(c.isupper() for c in letters) else WORD_SHAPES.index("other")


SPAN_TAGS = ("O", "B", "I")  # untyped BIO of the entity spans (GEI's span detection)
BOUNDARY_TAGS = ("O", "B", "E")  # entity heads and tails (FMIT's boundary detection)


def entity_tags(labels: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Untyped span tags and boundary tags ``[T]`` of the entities that ``labels`` encode
    (chunked as conlleval does). A boundary tag marks an entity's first word B and its
    last word E; a one-word entity is B (its head), as the head is the word that starts it."""
    import torch  # here: scoring and preparing data need no torch

    spans = torch.zeros(len(labels), dtype=torch.long)
    boundaries = torch.zeros(len(labels), dtype=torch.long)
    for entity in entities(labels):
        spans[entity.start] = SPAN_TAGS.index("B")
        spans[entity.start + 1 : entity.end] = SPAN_TAGS.index("I")
        boundaries[entity.start] = BOUNDARY_TAGS.index("B")
        if entity.end - 1 > entity.start:
            boundaries[entity.end - 1] = BOUNDARY_TAGS.index("E")
    return spans, boundaries
