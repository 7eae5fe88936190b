"""A linear-chain CRF over emission scores (pytorch-crf underneath)."""

from __future__ import annotations

import torch
from torch import nn
from torchcrf import CRF as _TorchCRF


class CRF(nn.Module):
    """``nll`` and ``decode`` take emissions ``[B, T, K]`` and a bool mask ``[B, T]`` whose
    padding is on the right (every sequence has at least one real step)."""

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.crf = _TorchCRF(num_tags, batch_first=True)

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags`` ``[B, T]``, averaged over the batch."""
        return -self.crf(emissions, tags, mask=mask, reduction="mean")

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Viterbi tag sequences, one list per sequence of its real length."""
        return self.crf.decode(emissions, mask=mask)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``p(y_t = k | x)`` ``[B, T, K]`` by forward-backward (0 on padding)."""
        crf, mask = self.crf, mask.bool()
        steps = emissions.shape[1]
        alpha = [crf.start_transitions + emissions[:, 0]]  # [B, K] each
        for t in range(1, steps):
            step = torch.logsumexp(alpha[-1][:, :, None] + crf.transitions, dim=1) + emissions[:, t]
            alpha.append(torch.where(mask[:, t, None], step, alpha[-1]))
        beta = [crf.end_transitions.expand_as(alpha[-1])]  # from the end, carried over the padding
        for t in range(steps - 1, 0, -1):
            step = torch.logsumexp(crf.transitions + (emissions[:, t] + beta[0])[:, None, :], dim=2)
            beta.insert(0, torch.where(mask[:, t, None], step, beta[0]))
        scores = torch.stack(alpha, dim=1) + torch.stack(beta, dim=1)  # [B, T, K]
        return torch.softmax(scores, dim=-1) * mask[..., None]
