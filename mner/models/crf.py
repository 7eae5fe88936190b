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
