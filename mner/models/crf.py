"""A linear-chain CRF over emission scores (pytorch-crf's parameters and likelihood), with
its own Viterbi and forward-backward so that decoding can keep to the BIO grammar.

Constrained decoding (a model's ``decode: constrained``, the default) adds a penalty of
:data:`DISALLOWED` to every start and every transition that the BIO grammar rules out (an
``I-`` tag that does not follow the ``B-`` or ``I-`` of its type), in Viterbi and in the
marginals, as AllenNLP's ``allowed_transitions`` does; training's likelihood stays free.
The vocabulary layout is that of :func:`mner.data.labels.bio_labels`: ``O``, then ``B-T``
and ``I-T`` of each type, which GEI's untyped span tags (``O B I``) share. The softmax
baseline decodes the same chain with no learned transitions (:func:`softmax_decode`).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torchcrf import CRF as _TorchCRF

Decoding = Literal["constrained", "free"]  # a model config's ``decode``
DISALLOWED = -1e4  # the score added to a step the grammar rules out


def bio_penalties(num_tags: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalties ``[K]`` on the first tag and ``[K, K]`` on moving from tag i to tag j of a
    BIO vocabulary (``O``, then ``B-T``, ``I-T`` per type: the ``I-`` tags at the even
    indices from 2): 0 where allowed, :data:`DISALLOWED` on an ``I-`` tag that follows
    anything but the ``B-`` or ``I-`` of its type."""
    if num_tags < 1 or num_tags % 2 == 0:
        raise ValueError(f"a BIO vocabulary has O and a B-/I- pair per type, not {num_tags} tags")
    start = torch.zeros(num_tags)
    moves = torch.zeros(num_tags, num_tags)
    for inside in range(2, num_tags, 2):
        start[inside] = DISALLOWED
        moves[:, inside] = DISALLOWED
        moves[inside - 1 : inside + 1, inside] = 0.0  # after its own B- or I-
    return start, moves


def viterbi(
    scores: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, moves: torch.Tensor, end: torch.Tensor
) -> list[list[int]]:
    """The best tag sequence of each row of ``scores`` ``[B, T, K]`` under the chain's
    ``start`` ``[K]``, ``moves`` ``[K, K]`` and ``end`` ``[K]`` scores; ``mask`` ``[B, T]``
    with the padding on the right. Ties go to the lowest tag, as in pytorch-crf."""
    mask = mask.bool()
    best = start + scores[:, 0]  # [B, K]
    history = []
    for t in range(1, scores.shape[1]):
        step, came_from = (best[:, :, None] + moves).max(dim=1)  # [B, K]
        best = torch.where(mask[:, t, None], step + scores[:, t], best)
        history.append(came_from)
    best = best + end
    paths = []
    for b, length in enumerate(mask.sum(1).tolist()):
        tag = int(best[b].argmax())
        path = [tag]
        for came_from in reversed(history[: length - 1]):
            tag = int(came_from[b, tag])
            path.append(tag)
        paths.append(path[::-1])
    return paths


def chain_marginals(
    scores: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, moves: torch.Tensor, end: torch.Tensor
) -> torch.Tensor:
    """``p(y_t = k | x)`` ``[B, T, K]`` of the chain by forward-backward (0 on padding)."""
    mask = mask.bool()
    steps = scores.shape[1]
    alpha = [start + scores[:, 0]]  # [B, K] each
    for t in range(1, steps):
        step = torch.logsumexp(alpha[-1][:, :, None] + moves, dim=1) + scores[:, t]
        alpha.append(torch.where(mask[:, t, None], step, alpha[-1]))
    beta = [end.expand_as(alpha[-1])]  # from the end, carried over the padding
    for t in range(steps - 1, 0, -1):
        step = torch.logsumexp(moves + (scores[:, t] + beta[0])[:, None, :], dim=2)
        beta.insert(0, torch.where(mask[:, t, None], step, beta[0]))
    total = torch.stack(alpha, dim=1) + torch.stack(beta, dim=1)  # [B, T, K]
    return torch.softmax(total, dim=-1) * mask[..., None]


class CRF(nn.Module):
    """``nll``, ``decode`` and ``marginals`` take emissions ``[B, T, K]`` and a bool mask
    ``[B, T]`` whose padding is on the right (every sequence has at least one real step).
    ``constrained``: decode and marginals keep to the BIO grammar (:func:`bio_penalties`);
    the penalties are buffers outside the state dict, so a checkpoint decodes either way."""

    def __init__(self, num_tags: int, constrained: bool = False) -> None:
        super().__init__()
        self.crf = _TorchCRF(num_tags, batch_first=True)
        free = (torch.zeros(num_tags), torch.zeros(num_tags, num_tags))
        start, moves = bio_penalties(num_tags) if constrained else free
        self.register_buffer("start_penalty", start, persistent=False)
        self.register_buffer("move_penalty", moves, persistent=False)

    def chain(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The start, transition and end scores that decoding uses."""
        crf = self.crf
        start, moves = crf.start_transitions + self.start_penalty, crf.transitions + self.move_penalty
        return start, moves, crf.end_transitions

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags`` ``[B, T]``, averaged over the batch."""
        return -self.crf(emissions, tags, mask=mask, reduction="mean")

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi tag sequences, one list per sequence of its real length."""
        return viterbi(emissions, mask, *self.chain())

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``p(y_t = k | x)`` ``[B, T, K]`` by forward-backward (0 on padding)."""
        return chain_marginals(emissions, mask, *self.chain())


def softmax_chain(num_tags: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chain of a softmax tagger under the BIO grammar: no learned transitions, only
    the penalties."""
    start, moves = bio_penalties(num_tags)
    return start.to(device), moves.to(device), torch.zeros(num_tags, device=device)


def softmax_decode(emissions: torch.Tensor, mask: torch.Tensor, constrained: bool) -> list[list[int]]:
    """Each word's most likely label, or with ``constrained`` the most likely valid BIO
    sequence of the words' log-softmax scores."""
    if not constrained:
        best = emissions.argmax(-1)  # [B, T]
        return [row[:n].tolist() for row, n in zip(best, mask.sum(1).tolist())]
    scores = emissions.log_softmax(-1)
    return viterbi(scores, mask, *softmax_chain(scores.shape[-1], scores.device))


def softmax_marginals(emissions: torch.Tensor, mask: torch.Tensor, constrained: bool) -> torch.Tensor:
    """``p(y_t = k | x)`` ``[B, T, K]``: each word's softmax, or with ``constrained`` the
    marginals of the valid BIO sequences under the words' softmax scores."""
    if not constrained:
        return emissions.softmax(-1) * mask[..., None]
    scores = emissions.log_softmax(-1)
    return chain_marginals(scores, mask, *softmax_chain(scores.shape[-1], scores.device))
