"""Entity-level scoring: the one scorer used by `mner score`, training and evaluation.

The entities are chunked by :func:`mner.data.labels.entities` under one of its two
schemes (``conlleval`` or ``strict``). Per-type scores cover every type of the gold or
predicted entities, PER, LOC, ORG, MISC first, then any other type by name.

Precision, recall and F1 are fractions in [0, 1]; 0 where a denominator is 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mner.data.conll import Sentence, read_conll, read_conll_columns
from mner.data.labels import Scheme, entities, ordered_types


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1 with the counts they come from."""

    precision: float
    recall: float
    f1: float
    gold: int
    predicted: int
    correct: int

    @classmethod
    def from_counts(cls, correct: int, predicted: int, gold: int) -> PRF:
        p = correct / predicted if predicted else 0.0
        r = correct / gold if gold else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f1, gold, predicted, correct)


@dataclass(frozen=True)
class Scores:
    """Micro-averaged scores over all entities and per entity type."""

    scheme: str
    overall: PRF
    per_type: dict[str, PRF]

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict[str, float]:
        """The headline figures, flat (for ``dvc metrics``): P, R, F1 and F1 per type."""
        o = self.overall
        per_type = {f"f1_{name}": prf.f1 for name, prf in self.per_type.items()}
        return {"precision": o.precision, "recall": o.recall, "f1": o.f1, **per_type}


def score(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: Scheme = "conlleval"
) -> Scores:
    """Entity-level micro P/R/F1 of predicted against gold label sequences."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    gold_entities, pred_entities = set(), set()
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold labels but {len(p)} predicted")
        gold_entities.update((i, *e) for e in entities(g, scheme))
        pred_entities.update((i, *e) for e in entities(p, scheme))
    correct = gold_entities & pred_entities
    counts = {
        name: Counter(e[1] for e in group)
        for name, group in (("gold", gold_entities), ("pred", pred_entities), ("correct", correct))
    }
    types = ordered_types(counts["gold"].keys() | counts["pred"].keys())
    per_type = {t: PRF.from_counts(counts["correct"][t], counts["pred"][t], counts["gold"][t]) for t in types}
    overall = PRF.from_counts(len(correct), len(pred_entities), len(gold_entities))
    return Scores(scheme, overall, per_type)


def score_files(
    gold_path: Path | str, pred_path: Path | str | None = None, scheme: Scheme = "conlleval"
) -> Scores:
    """Score two files in the dataset format, or, without ``pred_path``, one file whose
    token lines end in gold and predicted label columns."""
    if pred_path is None:
        gold, pred = read_conll_columns(gold_path)
    else:
        gold, pred = read_conll(gold_path), read_conll(pred_path)
        check_aligned(gold, pred, str(gold_path), str(pred_path))
    return score([s.labels for s in gold], [s.labels for s in pred], scheme)


def check_aligned(gold: Sequence[Sentence], pred: Sequence[Sentence], gold_name: str, pred_name: str) -> None:
    """Raise ValueError naming the first tweet where the two files disagree on the count
    of tweets, the image id or the tokens."""
    for g, p in zip(gold, pred):
        where = f"{gold_name}:{g.line} and {pred_name}:{p.line}"
        if g.image_id != p.image_id:
            raise ValueError(f"{where}: image ids differ ({g.image_id!r} vs {p.image_id!r})")
        if len(g.tokens) != len(p.tokens):
            raise ValueError(
                f"{where}: tweet IMGID:{g.image_id} has {len(g.tokens)} tokens vs {len(p.tokens)}"
            )
        for k, (a, b) in enumerate(zip(g.tokens, p.tokens)):
            if a != b:
                raise ValueError(
                    f"{gold_name}:{g.line + 1 + k}: token {k} of IMGID:{g.image_id} is {a!r} "
                    f"but {b!r} at {pred_name}:{p.line + 1 + k}"
                )
    if len(gold) != len(pred):
        raise ValueError(f"{gold_name} has {len(gold)} tweets but {pred_name} has {len(pred)}")


def format_scores(scores: Scores) -> str:
    """Precision, recall and F1 in percent, overall and per type, as a text table."""
    rows = {"overall": scores.overall, **scores.per_type}
    table = {
        name: {
            "precision": 100 * s.precision,
            "recall": 100 * s.recall,
            "f1": 100 * s.f1,
            "gold": s.gold,
            "predicted": s.predicted,
            "correct": s.correct,
        }
        for name, s in rows.items()
    }
    columns = ("precision", "recall", "f1", "gold", "predicted", "correct")
    return f"scheme: {scores.scheme}\n" + format_table(table, columns)


def format_table(table: Mapping[str, Mapping[str, int | float | str]], columns: Sequence[str]) -> str:
    """A plain aligned text table: one row per key of ``table``."""
    header = ["", *columns]
    rows = [[name, *(_cell(row[c]) for c in columns)] for name, row in table.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        [cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths))]
        for r in [header, *rows]
    ]
    return "\n".join("  ".join(line).rstrip() for line in lines)


def _cell(value: int | float | str) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
