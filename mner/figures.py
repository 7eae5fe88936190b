"""The report's figures (PNG, matplotlib without a display). Every run keeps one colour in
every figure (:func:`run_colours`)."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

OVERALL_COLUMNS = ("P", "R", "F1")  # a run's overall scores; its other columns are entity types
DPI = 100
MAX_COLUMNS = 5  # attention panels per row
PANEL_INCHES = 3.2  # an attention panel's width
TITLE_CHARACTERS = 40  # of a 9-point title that fit a panel's width
LABEL_CHARACTERS = 20  # of a box's 7-point name: with its weight, under half a panel's width


def run_colours(runs: Sequence[str]) -> dict[str, tuple]:
    """A distinct colour per run: tab10's ten, then their lighter shades from tab20 (purple
    first: the eleventh run, fmit-no-ebd, then sits beside olive and cyan), and evenly
    spaced hues beyond twenty runs."""
    palette = [plt.get_cmap("tab10")(k) for k in range(10)]
    palette += [plt.get_cmap("tab20")(k) for k in (9, 3, 5, 7, 1, 11, 13, 15, 17, 19)]
    if len(runs) > len(palette):
        palette = [plt.get_cmap("hsv")(k / len(runs)) for k in range(len(runs))]
    return dict(zip(runs, palette))


def read_curve(path: Path) -> tuple[list[int], list[float]]:
    """Epochs and values of a DVCLive metric file (``step``, the epoch from 1, and the metric's
    column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    name = next(k for k in rows[0] if k not in ("step", "timestamp")) if rows else ""
    return [int(r["step"]) for r in rows], [float(r[name]) for r in rows]


def training_curves(
    families: Mapping[str, Mapping[str, Sequence[Path]]], colours: Mapping[str, tuple], out: Path, title: str
) -> None:
    """Dev F1 in percent (top) and training loss (bottom) per epoch, one column per model family;
    ``families`` maps a family to its runs and each run to its seeds' metric directories
    (DVCLive ``plots/metrics``); the seeds of a run share its colour."""
    size = (4.2 * len(families), 6.4)
    figure, axes = plt.subplots(
        2, len(families), figsize=size, sharey="row", squeeze=False, layout="constrained"
    )
    for column, (family, runs) in enumerate(families.items()):
        f1_axis, loss_axis = axes[0, column], axes[1, column]
        for run, directories in runs.items():
            for k, directory in enumerate(directories):
                for axis, metric, scale in ((f1_axis, "dev_f1", 100), (loss_axis, "train_loss", 1)):
                    if (directory / f"{metric}.tsv").is_file():
                        steps, values = read_curve(directory / f"{metric}.tsv")
                        label = run if k == 0 else None
                        axis.plot(steps, [scale * v for v in values], ".-", color=colours[run], label=label)
        f1_axis.set_title(family, fontsize=10)
        loss_axis.set_xlabel("epoch")
        for axis in (f1_axis, loss_axis):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if f1_axis.get_legend_handles_labels()[0]:
            f1_axis.legend(fontsize=7)
    axes[0, 0].set_ylabel("dev F1 (%)")
    axes[1, 0].set_ylabel("training loss")
    figure.suptitle(title, fontsize=11)
    _save(figure, out)


def cell_types(results: Mapping[str, Mapping[str, Sequence[float]]]) -> tuple[str, ...]:
    """The entity types among the columns of the runs' cells (every column but
    :data:`OVERALL_COLUMNS`), in the order they first appear."""
    columns = (column for cells in results.values() for column in cells)
    return tuple(dict.fromkeys(c for c in columns if c not in OVERALL_COLUMNS))


def type_f1_bars(
    results: Mapping[str, Mapping[str, Sequence[float]]],
    colours: Mapping[str, tuple],
    out: Path,
    title: str,
    seeds: int = 1,
    types: Sequence[str] | None = None,
) -> None:
    """Per-type F1 of each run, grouped by type, the mean over its ``seeds`` with std error
    bars when there are several (none for one seed: a std of one number is no spread); the
    legend right of the bars. ``results`` maps a run to its cells ``{column: [mean, std]}``;
    the groups are ``types``, by default :func:`cell_types` (a run without a type's cell
    gets 0)."""
    types = cell_types(results) if types is None else tuple(types)
    figure, axis = plt.subplots(figsize=(min(14, 6 + 0.5 * len(results)), 4.2), layout="constrained")
    width = 0.8 / max(1, len(results))
    for k, (run, cells) in enumerate(results.items()):
        x = [t + k * width for t in range(len(types))]
        means = [cells.get(t, [0, 0])[0] for t in types]
        errors = [cells.get(t, [0, 0])[1] for t in types] if seeds > 1 else None
        axis.bar(x, means, width, yerr=errors, label=run, color=colours[run], capsize=2)
    axis.set_xticks([t + 0.4 - width / 2 for t in range(len(types))], types)
    axis.set(ylabel="F1 (%)", title=title, ylim=(0, 100))
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, out)


def grid_shape(panels: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """Rows and columns of a grid of ``panels``, at most ``max_columns`` wide."""
    columns = max(1, min(panels, max_columns))
    return math.ceil(panels / columns), columns


def ellipsised(text: str, characters: int) -> str:
    """``text`` cut to at most ``characters``, ending with an ellipsis where it was cut."""
    return text if len(text) <= characters else text[: characters - 1].rstrip() + "…"


def label_anchor(box: Sequence[float]) -> dict:
    """Where a box's label goes so that it stays inside the panel: at the box's left edge,
    running right, for a box that starts in the panel's left half, else at its right edge,
    running left; likewise at its top, running down, or at its bottom, running up
    (normalised coordinates, y down)."""
    x0, y0, x1, y1 = box
    left, top = x0 < 0.5, y0 < 0.5
    return {
        "x": x0 + 0.01 if left else x1 - 0.01,
        "y": y0 + 0.01 if top else y1 - 0.01,
        "horizontalalignment": "left" if left else "right",
        "verticalalignment": "top" if top else "bottom",
    }


def attention_over_image(example: dict, image: Image.Image, out: Path, labelled: int = 3) -> None:
    """One panel per entity: the image with every visual cell's box, drawn thicker and
    more opaque the more attention the entity gives it; the ``labelled`` cells it attends
    to most are named with their weight, inside the panel (:func:`label_anchor`). Titles
    and names too long for a panel end with an ellipsis (:func:`ellipsised`)."""
    panels = example["entities"]
    rows, columns = grid_shape(len(panels))
    shape = min(max(image.height / image.width, 0.5), 1.5)  # a panel's height per unit of width
    size = (PANEL_INCHES * columns, (PANEL_INCHES * shape + 0.5) * rows + 0.3)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False, layout="constrained")
    for axis in axes.flat[len(panels) :]:
        axis.axis("off")
    for axis, entity in zip(axes.flat, panels):
        axis.imshow(image, extent=(0, 1, 1, 0))  # normalised coordinates, as the boxes
        axis.set_aspect(image.height / image.width)  # the image's own shape in that unit square
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
            if k in ranked:  # inside the box and the panel, the most attended label on top
                axis.text(
                    s=f"{ellipsised(example['names'][k], LABEL_CHARACTERS)} {weight:.2f}",
                    color="red",
                    fontsize=7,
                    backgroundcolor="white",
                    clip_on=True,  # cut at the panel's edge should a label still be wider
                    zorder=10 + labelled - ranked.index(k),
                    **label_anchor((x0, y0, x1, y1)),
                )
        axis.set(xlim=(0, 1), ylim=(1, 0))
        kind = f" ({entity['type']})"
        axis.set_title(ellipsised(entity["text"], TITLE_CHARACTERS - len(kind)) + kind, fontsize=9)
        axis.axis("off")
    heading = f"{example['run']}: {example['text']}"
    figure.suptitle(ellipsised(heading, TITLE_CHARACTERS * columns), fontsize=9)
    _save(figure, out)


def _save(figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=DPI, bbox_inches="tight")
    plt.close(figure)


def image_links(paths: Sequence[Path], relative_to: Path) -> str:
    return "\n".join(f"![{p.stem}]({p.relative_to(relative_to).as_posix()})" for p in paths)
