"""The report's figures (PNG, matplotlib without a display)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

TYPES = ("PER", "LOC", "ORG", "MISC")


def read_curve(path: Path) -> tuple[list[int], list[float]]:
    """Steps and values of a DVCLive metric file (``step`` and the metric's column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    name = next(k for k in rows[0] if k not in ("step", "timestamp")) if rows else ""
    return [int(r["step"]) + 1 for r in rows], [float(r[name]) for r in rows]


def training_curves(curves: dict[str, list[Path]], out: Path, title: str) -> None:
    """Dev F1 and training loss per epoch; ``curves`` maps a run to its seeds' metric
    directories (DVCLive ``plots/metrics``); seeds of a run share a colour."""
    figure, (f1_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for colour, (run, directories) in enumerate(curves.items()):
        for k, directory in enumerate(directories):
            label = run if k == 0 else None
            for axis, metric in ((f1_axis, "dev_f1"), (loss_axis, "train_loss")):
                if (directory / f"{metric}.tsv").is_file():
                    axis.plot(*read_curve(directory / f"{metric}.tsv"), color=f"C{colour % 10}", label=label)
    f1_axis.set(xlabel="epoch", ylabel="dev F1", title=title)
    loss_axis.set(xlabel="epoch", ylabel="training loss")
    f1_axis.legend(fontsize=7)
    _save(figure, out)


def type_f1_bars(results: dict[str, dict[str, list[float]]], out: Path, title: str) -> None:
    """Per-type F1 (mean, std error bars) of each run, grouped by type."""
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(results) + 3), 4))
    width = 0.8 / max(1, len(results))
    for k, (run, cells) in enumerate(results.items()):
        x = [t + k * width for t in range(len(TYPES))]
        means = [cells.get(t, [0, 0])[0] for t in TYPES]
        errors = [cells.get(t, [0, 0])[1] for t in TYPES]
        axis.bar(x, means, width, yerr=errors, label=run, capsize=2)
    axis.set_xticks([t + 0.4 - width / 2 for t in range(len(TYPES))], TYPES)
    axis.set(ylabel="F1 (%)", title=title, ylim=(0, 100))
    axis.legend(fontsize=7, ncol=2)
    _save(figure, out)


def attention_over_image(example: dict, image: Image.Image, out: Path, labelled: int = 3) -> None:
    """One panel per entity: the image with every visual cell's box, drawn thicker and
    more opaque the more attention the entity gives it; the ``labelled`` cells it attends
    to most are named with their weight."""
    panels = example["entities"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.8), squeeze=False)
    for axis, entity in zip(axes[0], panels):
        axis.imshow(image, extent=(0, 1, 1, 0))  # normalised coordinates, as the boxes
        weights = entity["weights"]
        top = max(weights) or 1.0
        ranked = sorted(range(len(weights)), key=lambda k: -weights[k])[:labelled]
        for k, ((x0, y0, x1, y1), weight) in enumerate(zip(example["boxes"], weights)):
            strength = weight / top
            box = Rectangle(
                (x0, y0),
                x1 - x0,
                y1 - y0,
                fill=False,
                color="red",
                linewidth=0.5 + 3 * strength,
                alpha=0.2 + 0.8 * strength,
            )
            axis.add_patch(box)
            if k in ranked:
                name = example["names"][k][:24]
                axis.text(
                    x0 + 0.01,
                    y0 + 0.05,
                    f"{name} {weight:.2f}",
                    color="red",
                    fontsize=7,
                    backgroundcolor="white",
                )
        axis.set(xlim=(0, 1), ylim=(1, 0))
        axis.set_title(f"{entity['text']} ({entity['type']})", fontsize=9)
        axis.axis("off")
    figure.suptitle(f"{example['run']}: {example['text'][:100]}", fontsize=9)
    _save(figure, out)


def _save(figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def image_links(paths: Sequence[Path], relative_to: Path) -> str:
    return "\n".join(f"![{p.stem}]({p.relative_to(relative_to).as_posix()})" for p in paths)
