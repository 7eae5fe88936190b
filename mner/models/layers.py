"""Small layers shared by the models."""

from __future__ import annotations

import torch
from torch import nn

from mner.data.labels import WORD_SHAPES


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


class TextInput(nn.Module):
    """The word input of every model: the scalar mix of the cached encoder layers, with an
    optional learned embedding of each word's shape (casing, @mention, #hashtag, URL)
    concatenated, for encoders that cannot see casing. ``batch -> [B, T, dim]``."""

    def __init__(self, num_layers: int, text_dim: int, shape_dim: int = 0) -> None:
        super().__init__()
        self.mix = ScalarMix(num_layers)
        self.shapes = nn.Embedding(len(WORD_SHAPES), shape_dim) if shape_dim else None
        self.dim = text_dim + shape_dim

    def forward(self, batch: dict) -> torch.Tensor:
        words = self.mix(batch["features"])  # [B, T, D]
        if self.shapes is None:
            return words
        return torch.cat([words, self.shapes(batch["shapes"])], dim=-1)  # [B, T, D + S]


class FeedForward(nn.Module):
    """``LN(x + W_2 GELU(W_1 x))`` with a 4x wide hidden layer: the Transformer's feed-forward
    sublayer with its residual and layer norm."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.norm, self.dropout = nn.LayerNorm(dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.net(x)))


def cross_attention(
    attention: nn.MultiheadAttention, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention(queries, keys, keys)`` and its head-averaged weights; a row whose keys
    are all masked (a tweet with no entity, or no image region) gets zeros instead of NaN."""
    if keys.shape[1] == 0:  # no keys in the whole batch
        return torch.zeros_like(queries), queries.new_zeros(*queries.shape[:2], 0)
    has_keys = key_mask.any(dim=1)  # [B]
    safe_mask = key_mask.clone()
    safe_mask[~has_keys, 0] = True
    out, weights = attention(queries, keys, keys, key_padding_mask=~safe_mask)
    keep = has_keys[:, None, None]
    return out * keep, weights * keep
