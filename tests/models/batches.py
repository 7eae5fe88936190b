"""Hand-made batches for the model tests."""

import torch

from mner.cached.dataset import collate
from mner.data.labels import TWITTER_LABELS, WORD_SHAPES, entity_tags

SENTENCES = [
    ["B-PER", "I-PER", "I-PER", "O", "B-LOC"],  # a 3-word entity: span tags B I I, boundary tags B O E
    ["O", "B-ORG", "O"],
    ["O", "O", "O", "O"],
]


def items(labels=SENTENCES, visual_counts=(3, 1, 2), seed=0, text_dim=12, visual_dim=10):
    """Dataset items with random text (2 layers) and visual features, zero positions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (tags, v) in enumerate(zip(labels, visual_counts)):
        n = len(tags)
        span_tags, boundary_tags = entity_tags(tags)
        out.append(
            {
                "index": i,
                "features": torch.randn(n, 2, text_dim, generator=g),
                "labels": torch.tensor([TWITTER_LABELS.index(t) for t in tags]),
                "shapes": torch.randint(0, len(WORD_SHAPES), (n,), generator=g),
                "span_tags": span_tags,
                "boundary_tags": boundary_tags,
                "visual": torch.randn(v, visual_dim, generator=g),
                "visual_positions": torch.zeros(v, 2, dtype=torch.long),
            }
        )
    return out


def batch(labels=SENTENCES, visual_counts=(3, 1, 2), seed=0, text_dim=12, visual_dim=10):
    """:func:`items`, collated."""
    return collate(items(labels, visual_counts, seed, text_dim, visual_dim))


def assert_it_learns(model, b, first: float, steps: int = 40) -> None:
    """A few Adam steps on ``b`` take the loss below 30% of ``first``, and the model then
    decodes the batch's gold labels."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(b)["loss"].backward()
        optimizer.step()
    assert model.loss(b)["loss"].item() < 0.3 * first
    model.eval()
    gold = [row[: int(n)].tolist() for row, n in zip(b["labels"], b["mask"].sum(1))]
    assert model.decode(b) == gold
