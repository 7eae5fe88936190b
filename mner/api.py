"""The Python API: load a trained checkpoint once, then tag any number of posts.

    from mner.api import load

    tagger = load("runs/twitter2017/fmit/seed1")            # a run directory or its checkpoint/
    tagger("Kevin Durant joins the #Warriors", image="post.jpg")
    # [{'type': 'PER', 'text': 'Kevin Durant', 'start_char': 0, 'end_char': 12,
    #   'start': 0, 'end': 2, 'confidence': 0.97, ...}, ...]
    tagger.tag_many(["first post", {"text": "second post", "image": "b.jpg"}])

An entity has its type, its text (as written in the post), its character span ``[start_char,
end_char)`` and word span ``[start, end)``, and its confidence (the mean marginal probability
of its words' labels); a multimodal model adds the visual cells it attended to most. The post
goes through the same extractors as the pipeline, with the settings the checkpoint's features
were made with (:mod:`mner.posts`, which ``mner predict`` runs too). A run trained over a clue
set reads the post's ``caption`` (a text, or the texts of its clue set's sources in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mner.posts import Captioner, Post, PostPredictor, PostsError, post_from_record


class MNERTagger:
    """A checkpoint and its extractors, loaded once (see :func:`load`)."""

    def __init__(self, checkpoint: Path | str, device: str = "auto", captioner: Captioner | None = None):
        self.predictor = PostPredictor(checkpoint, device, captioner)

    @property
    def labels(self) -> list[str]:
        return list(self.predictor.labels)

    def __call__(
        self, text: str, image: Path | str | None = None, caption: str | Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The entities of one post."""
        return self.tag_many([{"text": text, "image": image, "caption": caption}])[0]["entities"]

    def tag_many(self, posts: Iterable[str | dict | Post]) -> list[dict[str, Any]]:
        """One record per post, in order, as ``mner predict`` prints them: ``id``, ``tokens``,
        ``labels``, ``entities`` (and the image and clue fields of the models that read them).
        A post is a text, a :class:`~mner.posts.Post`, or a dict with ``text`` (or
        ``tokens``) and optional ``image``, ``caption`` and ``id``."""
        return self.predictor.predict_all([as_post(post, str(i)) for i, post in enumerate(posts)])


def as_post(post: str | dict | Post, default_id: str) -> Post:
    """A :class:`~mner.posts.Post` from what :meth:`MNERTagger.tag_many` accepts: a dict is
    read as a line of ``mner predict --input`` (:func:`~mner.posts.post_from_record`), its
    image a path (relative to the current directory) or None."""
    if isinstance(post, Post):
        return post
    if isinstance(post, str):
        return Post.from_text(post, id=default_id)
    if isinstance(post, dict) and isinstance(post.get("image"), Path):
        post = {**post, "image": str(post["image"])}
    try:
        return post_from_record(post, Path("."), default_id)
    except PostsError as error:
        raise PostsError(f"post {default_id}: {error}") from None


def load(checkpoint: Path | str, device: str = "auto", captioner: Captioner | None = None) -> MNERTagger:
    """The tagger of ``checkpoint`` (a run directory or its ``checkpoint/``) on ``device``
    (``auto``: cuda when present); ``captioner`` captions the image of a post without a
    caption, for a run trained over a clue set."""
    return MNERTagger(checkpoint, device, captioner)
