"""Does a run trained over a clue set use its clue? (``mner clue-use``)

The checkpoint of a run read with a clue set (``runs/<dataset>/<run>+<clues>/seed<k>``: its
text features read each tweet with its clue after it, and a model with ``clue_cells: true``
also attends to the clue's words) is scored on the test split three ways, as ``mner
visual-use`` does with images:

- ``own``: each tweet with its own clue (the clue set's files, checked against the SHA-256
  its text features recorded), as the pipeline read it;
- ``none``: every tweet with an empty clue, which reads a tweet exactly as with no clue set;
- ``deranged``: each tweet with another tweet's clue (a fixed derangement).

The tweets are encoded again by the checkpoint's text encoder (the predictor of ``mner
predict``), so ``own`` matches the cached evaluation up to float16 rounding. A clue that
helps only as text of the domain scores the same with another tweet's; one that carries the
tweet's image scores lower with it. Tweets that share an image share its caption, so a few
deranged tweets may get a clue identical to their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mner.clues import read_clue_set
from mner.core.config import from_dict
from mner.core.workspace import run_workspace
from mner.data.conll import Sentence
from mner.data.labels import Scheme
from mner.data.prepared import prepared_sentences
from mner.posts import Post, PostPredictor
from mner.settings.clues import ClueSource
from mner.visual_use import ConditionScores, compare, conditions_table, derangement

CONDITIONS = ("own", "none", "deranged")


@dataclass(frozen=True)
class ClueUse:
    """The scores of a run in each of :data:`CONDITIONS` (all shares in [0, 1])."""

    run: str
    model: str  # the run's name, e.g. transformer-crf
    clues: str  # the clue set it was trained over
    cells: bool  # whether its model also reads the clue's words as visual cells
    split: str
    scheme: str
    tweets: int
    with_clue: int  # tweets of the split whose clue is not empty
    conditions: dict[str, ConditionScores]

    def to_dict(self) -> dict:
        return asdict(self)


def clue_use(
    run: Path | str,
    device: str = "auto",
    scheme: Scheme = "conlleval",
    split: str = "test",
    seed: int = 0,
    clue_root: Path | str | None = None,
) -> ClueUse:
    """The :class:`ClueUse` of the checkpoint of ``run`` (a run directory) on ``split`` of its
    workspace's dataset, its clue files under ``clue_root`` (default: the workspace); a
    checkpoint trained without a clue set is refused."""
    workspace = run_workspace(run)
    predictor = PostPredictor(run, device)
    checkpoint = predictor.checkpoint
    recorded = predictor.clues
    if not recorded:
        raise ValueError(
            f"{checkpoint}: trained without a clue set; give the run of one read with clues "
            "(runs/<dataset>/<run>+<clues>/seed<k>)"
        )
    gold = prepared_sentences(workspace.prepared / f"{split}.jsonl")
    sources = tuple(
        from_dict(ClueSource, source, f"{checkpoint}/checkpoint.json:text_features.clues")
        for source in recorded["sources"]
    )
    root = workspace.root if clue_root is None else clue_root
    read = read_clue_set(recorded["name"], sources, workspace.dataset, {split: gold}, root)
    if read.record["sha256"] != recorded["sha256"]:
        raise ValueError(
            f"{checkpoint}: the files of clue set {recorded['name']!r} changed since its text features "
            "were read (their SHA-256 differ from those recorded): rerun its text_features_clues and train"
        )
    own = [read.texts[sentence.id] for sentence in gold]
    clues = {"own": own, "none": [()] * len(gold), "deranged": [own[j] for j in derangement(len(gold), seed)]}
    predicted = {name: predict(predictor, gold, texts) for name, texts in clues.items()}
    record = predictor.record
    return ClueUse(
        str(run),
        str(record.get("run", record["model"])),
        recorded["name"],
        bool(record["config"].get("clue_cells")),
        split,
        scheme,
        len(gold),
        sum(bool(texts) for texts in own),
        compare([s.labels for s in gold], predicted, scheme),
    )


def predict(
    predictor: PostPredictor, sentences: Sequence[Sentence], clues: Sequence[tuple[str, ...]]
) -> list[list[str]]:
    """The labels ``predictor`` gives each sentence read with its clue of ``clues``."""
    posts = [Post(s.tokens, None, s.id, clue) for s, clue in zip(sentences, clues)]
    return [record["labels"] for record in predictor.predict_all(posts)]


def format_clue_use(result: ClueUse) -> str:
    """The conditions as a text table (percent), with what each one is."""
    route = "context and clue cells" if result.cells else "context"
    head = (
        f"{result.run}: {result.model} over clue set {result.clues} ({route}), {result.split} split, "
        f"{result.tweets} tweets ({result.with_clue} with a clue), {result.scheme} scheme; percent, "
        "dF1 and changed against own"
    )
    notes = [
        "own: each tweet with its own clue (as the pipeline read it)",
        "none: every tweet with an empty clue (read as the tweet alone)",
        "deranged: each tweet with another tweet's clue (a fixed derangement, seed 0)",
    ]
    return "\n".join([head, conditions_table(result.conditions), *notes])
