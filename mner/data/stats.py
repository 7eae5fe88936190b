"""Dataset statistics: the table a paper prints for its datasets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from mner.data.conll import ENTITY_TYPES, Sentence, is_orphan, is_type_switch
from mner.data.labels import Scheme, entities

COLUMNS = ("tweets", "tokens", *ENTITY_TYPES, "entities", "orphans", "type_switches")


def split_stats(sentences: Sequence[Sentence], scheme: Scheme = "conlleval") -> dict[str, int]:
    """Counts of one split: tweets, tokens, entities per type and in total (chunked by
    ``scheme``), orphan I- tags and type-switching I- tags."""
    counts = Counter({column: 0 for column in COLUMNS})
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
    splits: Mapping[str, Sequence[Sentence]], scheme: Scheme = "conlleval"
) -> dict[str, dict[str, int]]:
    """:func:`split_stats` of every split, plus a ``total`` row."""
    table = {name: split_stats(sentences, scheme) for name, sentences in splits.items()}
    table["total"] = dict(sum((Counter(row) for row in table.values()), Counter()))
    table["total"] = {column: table["total"].get(column, 0) for column in COLUMNS}
    return table
