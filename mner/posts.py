"""Running a trained checkpoint on new posts (``mner predict``).

A post is its words and, optionally, an image and its clue: the texts a checkpoint trained
over a clue set reads beside the tweet (a caption of the image, knowledge about the post; in
the order of the clue set's sources), given, or written by the describe model from the image
(``captioner``). The predictor runs the feature extractors
of the pipeline with the params the checkpoint's features were made with (its recorded
provenance; only the device and the number of loader workers change), builds the model's
batch as the cached datasets do, and returns per post its predicted labels and entities:
type, word span ``[start, end)``, character span ``[start_char, end_char)`` in the post's
text (None for a post given as tokens), text, confidence and, for GEI and FMIT, the visual
cells (whole image, objects, grounded objects or grid cells) the entity attended to most.

A post's text is split into words as the checkpoint's training data writes them: the
checkpoint records whether its dataset splits a hashtag's ``#`` and a mention's ``@`` from
the word (Twitter-2015 and -2017 do: ``#`` ``NBA``), so the entity of ``#NBA`` is ``NBA``.

The confidence of an entity is the mean over its words of the probability of the
predicted label of that word: the CRF marginal ``p(y_t = k | x)`` (a softmax of the
emissions for ``linear-softmax``). A post without an image, or whose image file is
missing or broken, gets the blank image, as in the pipeline.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import regex
import torch

from mner.cached.dataset import add_visual, collate, text_item, visual_limit
from mner.cached.inference import move
from mner.core.workspace import run_workspace
from mner.data.conll import MAX_WORDS, SIGILS, WORDS_RULE
from mner.data.labels import entities
from mner.features.ground import Grounding, tweet_queries
from mner.features.images import LoadedImage, blank_image, load_image
from mner.features.phrases import ParseReport, parse_split
from mner.features.text import EncodeReport, WordEncoder, load_encoder
from mner.features.visual import Cropper, VisualEncoder, describe_cells, grid_boxes, tweets_per_step
from mner.models import REMEDY, CheckpointError, InputDims, check_size, load_checkpoint, recorded
from mner.models.crf import softmax_marginals
from mner.settings.detect import DETECTORS, DetectConfig, object_label
from mner.settings.ground import GROUNDERS, GroundConfig, query_texts
from mner.settings.images import ImagesConfig
from mner.settings.parse import PARSERS, ParseConfig
from mner.settings.text import TextFeaturesConfig, model_files
from mner.settings.visual import VisualConfig
from mner.tagger import CRFTagger, VisualKind, visual_kind

# URLs, @mentions, #hashtags, dotted abbreviations (U.S.), words and numbers with inner
# punctuation (don't, 9.30), then any other grapheme cluster alone (a flag, an emoji ZWJ
# sequence, a letter with its accents), control characters dropped: close to the datasets'
# tokens. regex's \w takes combining marks, so no accent is split from its letter.
TOKEN = regex.compile(
    r"https?://\S+|www\.\S+|[@#]\w+|(?:[^\W\d_]\.){2,}|\w+(?:[.,'’&-]\w+)*|(?![\s\p{Cc}])\X"
)
POSTS_PER_STEP = 32  # posts whose images are in memory and go through the model together
TOP_CELLS = 3  # visual cells reported per entity
POST_KEYS = ("id", "text", "tokens", "image", "caption")
Region = tuple[np.ndarray, list, np.ndarray]  # boxes [k, 4], labels [k], head/tail positions [k, 2]
# the configs recorded in the visual cache's provenance for each upstream cache of a VisualKind
UPSTREAM_CONFIGS = {
    "objects": {"objects": DetectConfig},
    "grounding": {"grounding": GroundConfig, "phrases": ParseConfig},
}


class PostsError(ValueError):
    """A post that cannot be read; ``str()`` names its file and line when it has them."""


def tokenize(text: str, sigils: str = "joined") -> list[str]:
    """The words of a post's text after NFC normalisation (see :data:`TOKEN`); give
    ``tokens`` for exact control. ``sigils``: ``"split"`` makes ``#NBA`` and ``@user`` two
    words each, as the Twitter datasets write them (:func:`mner.data.conll.sigil_convention`)."""
    return [word for word, _, _ in word_spans(unicodedata.normalize("NFC", text), sigils)]


def word_spans(text: str, sigils: str = "joined") -> list[tuple[str, int, int]]:
    """Each word of ``text`` (already NFC) with its character span ``[start, end)``."""
    spans = []
    for match in TOKEN.finditer(text):
        word, start = match.group(), match.start()
        if sigils == "split" and len(word) > 1 and word[0] in SIGILS and word[1] not in SIGILS:
            spans.append((word[0], start, start + 1))
            word, start = word[1:], start + 1
        spans.append((word, start, start + len(word)))
    return spans


@dataclass(frozen=True)
class Post:
    tokens: tuple[str, ...]
    image: Path | None = None  # None: the blank image
    id: str = "post"
    clue: tuple[str, ...] = ()  # its clue texts (a caption, knowledge), for a checkpoint that reads clues
    text: str | None = None  # the text its tokens were split from (NFC), for character offsets
    spans: tuple[tuple[int, int], ...] = ()  # each token's characters [start, end) in text

    def __post_init__(self) -> None:
        if not self.tokens:
            raise PostsError("the post has no words")
        if len(self.tokens) > MAX_WORDS:
            raise PostsError(f"the post has {len(self.tokens)} words, more than {MAX_WORDS} ({WORDS_RULE})")
        for token in self.tokens:
            if not isinstance(token, str) or not token or any(c.isspace() for c in token):
                raise PostsError(f"every token must be a non-empty string without spaces, got {token!r}")
        if not all(isinstance(text, str) for text in self.clue):
            raise PostsError(f'"caption" must be a string or a list of strings, got {list(self.clue)!r:.80}')

    @classmethod
    def from_text(
        cls,
        text: str,
        image: Path | str | None = None,
        id: str = "post",
        clue: Sequence[str] = (),
        sigils: str = "joined",
    ) -> Post:
        """The post of ``text``, its words split as :func:`tokenize` splits them."""
        text = unicodedata.normalize("NFC", text)
        spans = word_spans(text, sigils)
        words = tuple(word for word, _, _ in spans)
        image = Path(image) if image else None
        return cls(words, image, id, tuple(clue), text, tuple((start, end) for _, start, end in spans))

    def split_as(self, sigils: str) -> Post:
        """This post with its text's words split by convention ``sigils`` (a post given as
        tokens is kept as given)."""
        if self.text is None:
            return self
        return Post.from_text(self.text, self.image, self.id, self.clue, sigils)

    def characters(self, start: int, end: int) -> tuple[int, int] | None:
        """The character span of words ``[start, end)`` in :attr:`text` (None without a text)."""
        return (self.spans[start][0], self.spans[end - 1][1]) if self.spans else None


def read_posts(path: Path | str) -> list[Post]:
    """Posts of a JSON lines file, one object a line: ``{"text": ...}`` or ``{"tokens":
    [...]}``, with optional ``"image"`` (a path, relative to the file's directory) and
    ``"id"`` (default: the line number) and ``"caption"`` (its clue: a text, or the texts of
    the clue set's sources in order). Blank lines are skipped; a bad line raises
    :class:`PostsError` naming ``file:line``."""
    path, posts = Path(path), []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise PostsError(
                    f"{path}:{number}: not UTF-8 text ({error.reason} at byte {error.start})"
                ) from None
            if not line.strip():
                continue
            try:
                posts.append(post_from_record(json.loads(line), path.parent, str(number)))
            except json.JSONDecodeError as error:
                raise PostsError(f"{path}:{number}: not JSON ({error.msg})") from None
            except (ValueError, RecursionError) as error:  # an int of thousands of digits, deep nesting
                what = "nested too deep" if isinstance(error, RecursionError) else str(error)
                raise PostsError(f"{path}:{number}: {what}") from None
    return posts


def post_from_record(record: Any, base: Path, default_id: str) -> Post:
    """A :class:`Post` from one parsed JSON line (image paths relative to ``base``)."""
    if not isinstance(record, dict):
        raise PostsError(f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(POST_KEYS))
    if unknown:
        raise PostsError(f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(POST_KEYS)}")
    if ("text" in record) == ("tokens" in record):
        raise PostsError('give either "text" or "tokens"')
    text, tokens, image = record.get("text"), record.get("tokens"), record.get("image")
    if "text" in record and not isinstance(text, str):
        raise PostsError(f'"text" must be a string, got {text!r}')
    if "tokens" in record and not isinstance(tokens, list):
        raise PostsError(f'"tokens" must be a list of strings, got {tokens!r}')
    if image is not None and (not isinstance(image, str) or not image):
        raise PostsError(f'"image" must be a path or null, got {image!r}')
    post_id = record.get("id", default_id)
    if not isinstance(post_id, str | int) or isinstance(post_id, bool):
        raise PostsError(f'"id" must be a string or an integer, got {post_id!r}')
    caption = record.get("caption")
    if caption is not None and not isinstance(caption, str | list):
        raise PostsError(f'"caption" must be a string or a list of strings, got {caption!r:.80}')
    clue = (caption,) if isinstance(caption, str) else tuple(caption or ())
    image = base / image if image else None
    if text is not None:
        return Post.from_text(text, image, str(post_id), clue)
    return Post(tuple(tokens), image, str(post_id), clue)


def checkpoint_dir(path: Path | str) -> Path:
    """The directory holding ``checkpoint.json``: ``path`` itself or, for a run
    directory (``runs/<dataset>/<model>/seed<k>``), its ``checkpoint/``."""
    path = Path(path)
    for candidate in (path, path / "checkpoint"):
        if (candidate / "checkpoint.json").is_file():
            return candidate
    raise FileNotFoundError(f"{path}: no checkpoint.json there nor in {path / 'checkpoint'}")


def visual_configs(
    record: Mapping[str, Any], kind: VisualKind, where: str, device: str, root: Path | None = None
) -> dict[str, Any]:
    """The image and visual configs that made the visual features of a checkpoint whose
    model reads ``kind``, and those of the upstream cache of ``kind`` (:data:`UPSTREAM_CONFIGS`),
    from its recorded provenance."""
    visual, dataset = record["visual_features"], record.get("dataset", "<dataset>")
    needed = {"params": ("visual_features", VisualConfig), "images": ("visual_features", ImagesConfig)}
    upstream = UPSTREAM_CONFIGS[kind.source] if kind.source else {}
    needed |= {key: (kind.stage, cls) for key, cls in upstream.items()}
    configs = {}
    for key, (stage, cls) in needed.items():
        if not visual.get(key):
            raise PostsError(
                f"{where}: the provenance of the visual features this model was trained on records "
                f"no {key!r} params (made by an older version); rerun dvc repro {stage}@{dataset} "
                "(visual_features and train follow) to make a checkpoint that records them"
            )
        configs[key] = recorded(cls, visual[key], f"{where}:visual_features.{key}", device, root)
    return configs


Captioner = Callable[[Sequence[LoadedImage]], list[str]]  # images to captions (mner.features.describe)


class PostPredictor:
    """A checkpoint and the extractors of its features, loaded once; ``captioner`` writes the
    clue of a post that has none from its image (for a checkpoint that reads clues)."""

    def __init__(
        self, checkpoint: Path | str, device: str = "auto", captioner: Captioner | None = None
    ) -> None:
        self.checkpoint = checkpoint_dir(checkpoint)
        where = str(self.checkpoint / "checkpoint.json")
        self.model, self.record = load_checkpoint(self.checkpoint)
        self.labels = self.record["labels"]
        self.kind = visual_kind(self.model)
        text_features = self.record.get("text_features")
        if not isinstance(text_features, Mapping) or "params" not in text_features:
            raise CheckpointError(f"{where}: records no text_features params to encode posts with; {REMEDY}")
        try:  # a relative model path is a directory of the checkpoint's workspace
            root = run_workspace(self.checkpoint.parent).root
        except ValueError:  # a checkpoint kept outside a workspace
            root = None
        text = recorded(TextFeaturesConfig, text_features["params"], where, device, root)
        trained_on = text_features.get("model_sha256")
        if trained_on is not None and not Path(text.model).is_dir():
            found = f"in its workspace {root}" if root else "(the checkpoint is outside a workspace)"
            raise CheckpointError(
                f"{where}: its text encoder, the directory {text.model}, is not there {found}; predict "
                "from the checkpoint in its workspace, or put the encoder at that path"
            )
        if trained_on is not None and model_files(text.model).get("model_sha256") != trained_on:
            raise CheckpointError(
                f"{where}: the text encoder at {text.model} is not the one this model was trained on "
                "(its files' SHA-256 differ from the one the text features recorded); restore that "
                "encoder, or rerun text_features and train"
            )
        self.words = WordEncoder(*load_encoder(text), text)
        trained = InputDims(**self.record["inputs"])  # checked by load_checkpoint
        found = (len(text.layers), self.words.hidden_size)
        check_size(where, "text", found, (trained.text_layers, trained.text_dim))
        self.model.to(self.words.device)
        self.clues = text_features.get("clues")  # the clue set its text features read, if any
        self.sigils = self.record.get("sigils", "joined")  # how its training data wrote #tags and @users
        self.captioner = captioner
        reads_images = self.kind is not None and self.kind.cache == "visual"
        self.configs = visual_configs(self.record, self.kind, where, device, root) if reads_images else {}
        self.limit = visual_limit(self.model) if self.kind else None
        if self.kind and not reads_images:  # clue cells: the encoder's word vectors
            check_size(where, "clue cells", (self.words.hidden_size,), (trained.visual_dim,))
        if reads_images:
            self.visual = VisualEncoder(self.configs["params"])
            check_size(where, "visual", (self.visual.dim,), (trained.visual_dim,))
            if self.kind.source == "objects":
                self.detector = DETECTORS[self.configs["objects"].backend](self.configs["objects"])
            if self.kind.source == "grounding":
                self.parser = PARSERS[self.configs["phrases"].backend](self.configs["phrases"])
                self.grounder = GROUNDERS[self.configs["grounding"].backend](self.configs["grounding"])

    def predict_all(self, posts: Sequence[Post]) -> list[dict]:
        """:meth:`predict` of every post, :data:`POSTS_PER_STEP` posts at a time (a post that
        fails stops it: :meth:`stream` goes on past it)."""
        return [
            record
            for start in range(0, len(posts), POSTS_PER_STEP)
            for record in self.predict(posts[start : start + POSTS_PER_STEP])
        ]

    def stream(self, posts: Sequence[Post]) -> Iterator[dict]:
        """:meth:`predict` of every post, :data:`POSTS_PER_STEP` posts at a time. A step
        that fails is predicted again post by post, so that one bad post (an image no
        extractor can read, features that overflow the model) costs only its own record:
        ``{"id": ..., "error": ...}`` in its place."""
        for start in range(0, len(posts), POSTS_PER_STEP):
            step = posts[start : start + POSTS_PER_STEP]
            try:
                yield from self.predict(step)
            except Exception:
                for post in step:
                    try:
                        yield from self.predict([post])
                    except Exception as error:
                        yield {"id": post.id, "error": f"{type(error).__name__}: {error}"}

    @torch.inference_mode()
    def predict(self, posts: Sequence[Post]) -> list[dict]:
        """Per post: its tokens, predicted labels and entities (see the module docstring)."""
        posts = self.with_clues([post.split_as(self.sigils) for post in posts])
        items, cells, images = self.items(posts)
        batch = move(collate(items), self.words.device)
        emissions = self.model.emissions(batch)  # [B, T, K]
        if isinstance(self.model, CRFTagger):
            probs = self.model.crf.marginals(emissions, batch["mask"])
        else:
            probs = softmax_marginals(emissions, batch["mask"], self.model.config.decode == "constrained")
        self.check_finite(posts, batch["mask"], emissions, probs)
        probs = probs.cpu().numpy()  # [B, T, K]
        attended = self.attended(batch, cells) if self.kind else None
        out = []
        for b, (post, ids) in enumerate(zip(posts, self.model.decode(batch))):
            labels = [self.labels[i] for i in ids]
            found = []
            for entity in entities(labels):
                words = np.arange(entity.start, entity.end)
                characters = post.characters(entity.start, entity.end)
                found.append(
                    {
                        "type": entity.type,
                        "start": entity.start,
                        "end": entity.end,
                        "start_char": characters[0] if characters else None,
                        "end_char": characters[1] if characters else None,
                        "text": post.text[slice(*characters)]
                        if characters
                        else " ".join(post.tokens[entity.start : entity.end]),
                        "confidence": round(float(probs[b, words, np.asarray(ids)[words]].mean()), 4),
                    }
                )
                if attended:
                    found[-1]["attended"] = attended(b, entity.start, entity.end)
            out.append(self.describe(post, labels, found, images[b] if images else None))
        return out

    def check_finite(
        self, posts: Sequence[Post], mask: torch.Tensor, emissions: torch.Tensor, probs: torch.Tensor
    ) -> None:
        """Refuse NaN or Inf in the words' emissions or probabilities (all ``[B, T, K]``)."""
        finite = (emissions.isfinite().all(-1) & probs.isfinite().all(-1)) | ~mask  # [B, T]
        bad = (~finite.all(1)).nonzero().flatten().tolist()
        if bad:
            raise CheckpointError(
                f"{self.checkpoint}: the model's emissions for post {posts[bad[0]].id!r} are not finite "
                f"(NaN or Inf): its weights overflow on that post's features; {REMEDY}"
            )

    def describe(self, post: Post, labels: list[str], found: list[dict], image: LoadedImage | None) -> dict:
        """The JSON record of one post."""
        record = {"id": post.id, "tokens": list(post.tokens), "labels": labels}
        record["image"] = str(post.image) if post.image else None
        if image is not None:  # the model read an image: the post's or the blank one
            record["blank_image"] = post.image is None or image.problem is not None
            record["image_problem"] = image.problem
        if self.clues:
            record["clue"] = list(post.clue)
        return {**record, "entities": found}

    def with_clues(self, posts: Sequence[Post]) -> list[Post]:
        """The posts with their clues: a checkpoint that reads none refuses a post that has
        one; a post without one gets the captioner's caption of its image when there is a
        captioner (none: an empty clue, read as the tweet alone)."""
        given = [post for post in posts if post.clue]
        if given and not self.clues:
            raise PostsError(
                f"post {given[0].id!r}: this checkpoint was trained without clues ({self.checkpoint}); "
                "give a caption only to a run trained over a clue set (runs/<dataset>/<run>+<clues>)"
            )
        missing = [post for post in posts if not post.clue]
        if not (self.clues and self.captioner and missing):
            return list(posts)
        captions = iter(self.captioner([self.load_image(post) for post in missing]))
        return [post if post.clue else replace(post, clue=(next(captions),)) for post in posts]

    def items(self, posts: Sequence[Post]) -> tuple[list[dict], list[list[dict]], list[LoadedImage]]:
        """The model's items (as the cached datasets build them; posts with their clues:
        :meth:`with_clues`), and for the visual models the description of each visual vector
        and the loaded images."""
        vectors = self.text_features(posts)
        items = [text_item(i, post.tokens, v) for i, (post, v) in enumerate(zip(posts, vectors))]
        if not self.kind:
            return items, [], []
        if self.kind.cache == "cells":
            return items, self.clue_cells(posts, items), []
        images = [self.load_image(post) for post in posts]
        cells = []
        for item, (image, extra, positions, described) in zip(items, self.visual_features(posts, images)):
            add_visual(item, image, extra, positions, self.limit)
            cells.append(described)
        return items, cells, images

    def text_features(self, posts: Sequence[Post]) -> list[np.ndarray]:
        """Word vectors ``[T, L, D]`` float16 of each post, as the text cache stores them (read
        with its clue when the checkpoint's text features were)."""
        size, report, out = self.words.config.batch_size, EncodeReport(), []
        for start in range(0, len(posts), size):
            step = posts[start : start + size]
            clues = [p.clue for p in step] if self.clues else None
            out += self.words.encode([(p.id, p.tokens) for p in step], report, clues)
        return out

    def clue_cells(self, posts: Sequence[Post], items: list[dict]) -> list[list[dict]]:
        """Adds each post's clue cells to its item (as a clue set's text cache holds them);
        the description of each cell: the whole clue, then its words."""
        cells = self.words.clue_cells([(p.id, p.tokens) for p in posts], [p.clue for p in posts])
        described = []
        for item, post, (whole, words) in zip(items, posts, cells):
            add_visual(item, whole, words, None, self.limit)
            clue_words = [word for text in post.clue for word in text.split()][: self.limit]
            described.append(
                [{"kind": "clue", "box": None, "label": " ".join(post.clue)}]
                + [{"kind": self.kind.cell, "box": None, "label": word} for word in clue_words]
            )
        return described

    def load_image(self, post: Post) -> LoadedImage:
        config: ImagesConfig = self.configs.get("images") or ImagesConfig()
        if post.image is None:
            return LoadedImage(blank_image(config.blank_size))
        return load_image(post.image, config.max_side, config.blank_size, config.max_pixels)

    def visual_features(self, posts: Sequence[Post], images: Sequence[LoadedImage]) -> list[tuple]:
        """Per post, :meth:`visual_item` of its encoded image and regions."""
        regions = self.regions(posts, images)
        crop = Cropper(lambda i: regions[i][0], self.visual.config)
        encoded, step = [], tweets_per_step(self.visual.config)
        for start in range(0, len(posts), step):
            chunk = range(start, min(start + step, len(posts)))
            encoded += self.visual.encode([crop(i, images[i])[2:] for i in chunk])  # (crops, boxes) each
        return [self.visual_item(r, e) for r, e in zip(regions, encoded)]

    def visual_item(self, region: Region, encoded: tuple) -> tuple:
        """One post's whole-image vector ``[1, C]``, the kind's vectors ``[k, C]`` (float16,
        as cached), their head/tail positions (grounded only) and a description of each
        visual cell, from its region (boxes, labels, positions) and encoded image, boxes
        and grid."""
        (boxes, labels, positions), (image, boxed, grid) = region, encoded
        if self.kind.source is None:  # the cells of the whole image's grid
            boxed, boxes, labels = grid, grid_boxes(round(len(grid) ** 0.5)), [None] * len(grid)
        image, boxed = (t.cpu().numpy().astype(np.float16) for t in (image, boxed))
        described = describe_cells(self.kind, boxes, labels, self.limit)
        return image, boxed, positions if self.kind.positions else None, described

    def regions(self, posts: Sequence[Post], images: Sequence[LoadedImage]) -> list[Region]:
        """Per post, the boxes ``[k, 4]`` (normalised xyxy) to crop, each one's label (the
        detector's class or the grounded query) and head/tail word positions ``[k, 2]``, as
        the stage of the model's upstream cache finds them: the detected objects, the grounded
        objects, or none (the grid)."""
        if self.kind.source is None:
            return [(np.zeros((0, 4), np.float32), [], np.zeros((0, 2), np.int64)) for _ in posts]
        return {"objects": self.detected, "grounding": self.grounded}[self.kind.source](posts, images)

    def detected(self, posts: Sequence[Post], images: Sequence[LoadedImage]) -> list[Region]:
        """The detected objects of each post, as the ``detect`` stage finds them."""
        size, found = self.configs["objects"].batch_size, []
        for start in range(0, len(posts), size):
            found += self.detector([image.image for image in images[start : start + size]])
        classes = self.detector.classes
        return [
            (
                d.boxes.reshape(-1, 4),
                [object_label(classes, c) for c in d.classes.tolist()],
                np.zeros((len(d.boxes), 2)),
            )
            for d in found
        ]

    def grounded(self, posts: Sequence[Post], images: Sequence[LoadedImage]) -> list[Region]:
        """The grounded objects of each post, as the ``parse`` and ``ground`` stages find them."""
        parse, ground = self.configs["phrases"], self.configs["grounding"]
        spans = parse_split(self.parser, [(p.id, p.tokens) for p in posts], parse, "posts", ParseReport())
        queries = [
            tweet_queries(p.tokens, np.asarray(s, dtype=np.int64).reshape(-1, 2), ground)
            for p, s in zip(posts, spans)
        ]
        found: list[Grounding] = []
        for start in range(0, len(posts), ground.batch_size):
            chunk = range(start, min(start + ground.batch_size, len(posts)))
            found += self.grounder.ground([images[i].image for i in chunk], [queries[i].texts for i in chunk])
        positions = [q.positions[g.query].reshape(-1, 2) for q, g in zip(queries, found)]
        labels = [
            query_texts(p.tokens, g.query, q.n_phrases, at, ground.general_words)
            for p, q, g, at in zip(posts, queries, found, positions)
        ]
        return [(g.boxes.reshape(-1, 4), names, at) for g, names, at in zip(found, labels, positions)]

    def attended(self, batch: dict, cells: list[list[dict]]):
        """A function ``(post, start, end) -> the top visual cells of that entity``: for
        FMIT the mean of its words' attention rows, for GEI the attention of its entity
        node (none when no predicted span is the entity's span)."""
        attention = self.model.attention(batch)

        def of_entity(b: int, start: int, end: int) -> list[dict]:
            weights = attention.of_entity(b, start, end) if attention else None
            return [] if weights is None else top_cells(weights, attention.visual_mask[b], cells[b])

        return of_entity


def top_cells(weights: torch.Tensor, valid: torch.Tensor, cells: list[dict]) -> list[dict]:
    """The :data:`TOP_CELLS` valid cells with the largest ``weights`` ``[V]``, described."""
    k = min(TOP_CELLS, int(valid.sum()))
    values, index = weights.float().masked_fill(~valid, -1.0).topk(k)
    return [
        {"index": i, **cells[i], "box": cells[i]["box"] and [round(v, 4) for v in cells[i]["box"]]}
        | {"weight": round(w, 4)}
        for w, i in zip(values.tolist(), index.tolist())
    ]
