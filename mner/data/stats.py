"""Dataset statistics: the table a paper prints for its datasets, with a column per entity
type of the data (PER, LOC, ORG, MISC first where present, then the others by name)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from mner.data.conll import Sentence, is_orphan, is_type_switch
from mner.data.labels import Scheme, entities, label_types


def stats_columns(types: Sequence[str]) -> tuple[str, ...]:
    """The columns of a stats table whose data has the entity ``types``."""
    return ("tweets", "tokens", *types, "entities", "orphans", "type_switches")


def table_columns(table: Mapping[str, Mapping[str, int]]) -> tuple[str, ...]:
    """The columns of a table made by :func:`dataset_stats` (those of its ``total`` row)."""
    return tuple(table["total"])


def sentence_types(sentences: Sequence[Sentence]) -> tuple[str, ...]:
    """The entity types in the labels of ``sentences``, in the conventional order."""
    return label_types(s.labels for s in sentences)


def split_stats(
    sentences: Sequence[Sentence], scheme: Scheme = "conlleval", types: Sequence[str] | None = None
) -> dict[str, int]:
    """Counts of one split: tweets, tokens, entities per type and in total (chunked by
    ``scheme``), orphan I- tags and type-switching I- tags. The per-type columns are
    ``types``, by default those of the split's labels."""
    types = sentence_types(sentences) if types is None else types
    counts = Counter({column: 0 for column in stats_columns(types)})
    counts["tweets"] = len(sentences)
    for sentence in sentences:
        counts["tokens"] += len(sentence.tokens)
        found = entities(sentence.labels, scheme)
        counts.update(e.type for e in found)
        counts["entities"] += len(found)
        for prev, label in zip(("O", *sentence.labels), sentence.labels):
            counts["orphans"] += is_orphan(prev, label)
            counts["type_switches"] += is_type_switch(prev, label)
    return dict(counts)


def dataset_stats(
    splits: Mapping[str, Sequence[Sentence]],
    scheme: Scheme = "conlleval",
    types: Sequence[str] | None = None,
) -> dict[str, dict[str, int]]:
    """:func:`split_stats` of every split, plus a ``total`` row; every row has a column per
    entity type in ``types``, by default those of any split's labels."""
    if types is None:
        types = sentence_types([s for sentences in splits.values() for s in sentences])
    columns = stats_columns(types)
    table = {name: split_stats(sentences, scheme, types) for name, sentences in splits.items()}
    total = sum((Counter(row) for row in table.values()), Counter())
    table["total"] = {column: total.get(column, 0) for column in columns}
    return table
