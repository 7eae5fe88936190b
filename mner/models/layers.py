"""Small layers shared by the models."""

from __future__ import annotations

import torch
from torch import nn


class ScalarMix(nn.Module):
    """A learned softmax-weighted sum of the cached encoder layers, times a learned scale
    (Peters et al., 2018): ``[B, T, L, D] -> [B, T, D]``."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.weights, dim=0)
        return self.gamma * torch.einsum("btld,l->btd", layers, weights)  # [B, T, D]
