from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from PIL import Image

from mner import figures

TEXT = ["linear-softmax", "linear-crf", "transformer-crf"]
GEI = ["gei", "gei-no-entity-level", "gei-no-span-detection", "gei-image-region"]
FMIT = ["fmit", "fmit-no-obj", "fmit-no-rel", "fmit-no-ebd"]
RUNS = [*TEXT, *GEI, *FMIT]  # the eleven runs of the pipeline


@pytest.fixture
def saved(monkeypatch):
    """The figures the functions draw, kept open after they are saved."""
    kept = []
    save = figures._save

    def keep(figure, out):
        kept.append(figure)
        save(figure, out)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


def write_curves(directory: Path, f1: list[float], loss: list[float]) -> Path:
    directory.mkdir(parents=True)
    for name, values in (("dev_f1", f1), ("train_loss", loss)):
        rows = [f"{step}\t{value}" for step, value in enumerate(values, start=1)]
        (directory / f"{name}.tsv").write_text("\n".join(["step\t" + name, *rows]) + "\n")
    return directory


def test_every_run_gets_its_own_colour():
    for n in (3, 11, 20, 25):
        runs = [f"run{k}" for k in range(n)]
        assert len({to_hex(c) for c in figures.run_colours(runs).values()}) == n


def test_training_curves_one_column_per_family_each_run_its_colour(tmp_path, saved):
    families = {
        family: {run: [write_curves(tmp_path / run, [0.1, 0.3, 0.4], [3.0, 2.0, 1.5])] for run in runs}
        for family, runs in (("text", TEXT), ("gei", GEI), ("fmit", FMIT))
    }
    out = tmp_path / "curves.png"
    figures.training_curves(families, figures.run_colours(RUNS), out, "Twitter-2015")
    (figure,) = saved
    assert len(figure.axes) == 6  # dev F1 and loss for each of the three families
    assert [axis.get_title() for axis in figure.axes[:3]] == ["text", "gei", "fmit"]
    lines = [line for axis in figure.axes for line in axis.get_lines()]
    assert len(lines) == 2 * len(RUNS)
    by_run = {}
    for axis, runs in zip(figure.axes[:3], (TEXT, GEI, FMIT)):
        assert [text.get_text() for text in axis.get_legend().get_texts()] == runs
        by_run |= {line.get_label(): to_hex(line.get_color()) for line in axis.get_lines()}
    assert len(set(by_run.values())) == len(RUNS)
    width, height = Image.open(out).size
    assert 1000 < width < 1600 and height < 800


TWITTER_TYPES = ["PER", "LOC", "ORG", "MISC"]


def test_type_f1_bars_colour_each_run_and_keep_the_legend_outside(tmp_path, saved):
    results = {run: {t: [10.0 * k, 1.0] for t in TWITTER_TYPES} for k, run in enumerate(RUNS)}
    figures.type_f1_bars(results, figures.run_colours(RUNS), tmp_path / "bars.png", "F1 per type")
    (figure,) = saved
    (axis,) = figure.axes
    bars = [c for c in axis.containers if isinstance(c, BarContainer)]
    colours = [to_hex(bar.patches[0].get_facecolor()) for bar in bars]
    assert len(bars) == len(RUNS) and len(set(colours)) == len(RUNS)
    assert Image.open(tmp_path / "bars.png").size[0] < 1600


def bar_groups(axis) -> tuple[list[str], list[list[float]]]:
    """The tick labels of a bar chart and each run's bar heights."""
    bars = [c for c in axis.containers if isinstance(c, BarContainer)]
    return [t.get_text() for t in axis.get_xticklabels()], [[p.get_height() for p in b.patches] for b in bars]


def test_type_f1_bars_group_the_types_of_the_cells(tmp_path, saved):
    overall = {"P": [70.0, 0.5], "R": [60.0, 0.5], "F1": [65.0, 0.5]}
    results = {
        "gei": {"PER": [80.0, 1.0], "LOC": [70.0, 1.0], "PRODUCT": [40.0, 2.0], **overall},
        "fmit": {"PER": [82.0, 1.0], "person": [30.0, 1.0], "PRODUCT": [45.0, 2.0], **overall},
    }
    colours = figures.run_colours(list(results))
    figures.type_f1_bars(results, colours, tmp_path / "bars.png", "F1 per type")
    figures.type_f1_bars(results, colours, tmp_path / "chosen.png", "F1 per type", types=["PRODUCT", "PER"])
    found, chosen = (figure.axes[0] for figure in saved)
    assert bar_groups(found) == (
        ["PER", "LOC", "PRODUCT", "person"],
        [[80.0, 70.0, 40.0, 0.0], [82.0, 0.0, 45.0, 30.0]],
    )
    assert bar_groups(chosen) == (["PRODUCT", "PER"], [[40.0, 80.0], [45.0, 82.0]])


def test_type_f1_bars_of_twitter_cells_are_the_four_types_in_order(tmp_path, saved):
    cells = {"PER": [80.0, 1.0], "LOC": [70.0, 1.0], "ORG": [50.0, 1.0], "MISC": [30.0, 1.0]}
    cells |= {"P": [60.0, 1.0], "R": [60.0, 1.0], "F1": [60.0, 1.0]}
    figures.type_f1_bars({"gei": cells}, figures.run_colours(["gei"]), tmp_path / "bars.png", "F1 per type")
    assert bar_groups(saved[0].axes[0]) == (TWITTER_TYPES, [[80.0, 70.0, 50.0, 30.0]])


@pytest.mark.parametrize(
    ("panels", "shape"), [(1, (1, 1)), (3, (1, 3)), (5, (1, 5)), (6, (2, 5)), (25, (5, 5))]
)
def test_grid_shape(panels, shape):
    assert figures.grid_shape(panels) == shape


def attention_example(entities: int) -> dict:
    boxes = [[0.0, 0.0, 1.0, 1.0], [0.1, 0.1, 0.5, 0.6], [0.4, 0.3, 0.9, 0.9]]
    return {
        "run": "gei",
        "text": "RT @user : a tweet about things",
        "boxes": boxes,
        "names": ["whole image", "person", "dog"],
        "entities": [
            {"text": f"entity {k}", "type": "PER", "weights": [0.2, 0.5 + 0.01 * k, 0.3]}
            for k in range(entities)
        ],
    }


def test_attention_panels_wrap_into_rows_of_at_most_five(tmp_path, saved):
    image = Image.new("RGB", (320, 160), (40, 120, 200))
    out = tmp_path / "attention.png"
    figures.attention_over_image(attention_example(12), image, out)
    (figure,) = saved
    shown = [axis for axis in figure.axes if axis.images]
    assert len(figure.axes) == 15 and len(shown) == 12  # a 3 x 5 grid, the last three empty
    assert len({round(axis.get_position().x0, 3) for axis in shown}) == 5
    assert len({round(axis.get_position().y0, 3) for axis in shown}) == 3
    assert shown[0].get_title() == "entity 0 (PER)"
    assert shown[0].get_aspect() == pytest.approx(0.5)  # the image's own shape
    width, height = Image.open(out).size
    assert width < 1700 and height < 1200  # was 12 panels in one row: 5400 px wide


def test_one_entity_is_one_panel(tmp_path, saved):
    figures.attention_over_image(attention_example(1), Image.new("RGB", (64, 64)), tmp_path / "one.png")
    assert len(saved[0].axes) == 1
    assert Image.open(tmp_path / "one.png").size[0] < 400


def test_type_f1_bars_have_error_bars_only_over_several_seeds(tmp_path, saved):
    results = {run: {t: [50.0, 0.0] for t in TWITTER_TYPES} for run in ("gei", "fmit")}
    colours = figures.run_colours(list(results))
    figures.type_f1_bars(results, colours, tmp_path / "one.png", "F1 per type", seeds=1)
    figures.type_f1_bars(results, colours, tmp_path / "three.png", "F1 per type", seeds=3)
    one, three = ([c for c in f.axes[0].containers if isinstance(c, BarContainer)] for f in saved)
    assert [bars.errorbar for bars in one] == [None, None]  # a std of one seed is no spread
    assert all(bars.errorbar is not None for bars in three)


def test_ellipsised_marks_where_it_cuts():
    assert figures.ellipsised("Obama in Paris", 14) == "Obama in Paris"
    assert figures.ellipsised("Obama in Paris", 10) == "Obama in…"
    assert len(figures.ellipsised("x" * 200, 40)) == 40


def test_attention_titles_are_ellipsised_and_labels_stay_inside_their_panels(tmp_path, saved):
    """Long names and boxes at every edge of a blank image: each label inside its panel,
    each cut title ending with an ellipsis."""
    example = attention_example(2)
    example["text"] = "RT @user : " + "a very long tweet about many things " * 6
    example["boxes"] = [[0.0, 0.0, 1.0, 1.0], [0.75, 0.8, 1.0, 1.0], [0.9, 0.0, 1.0, 0.3]]
    example["names"] = ["whole image", "a traffic light beside a bus stop", "an umbrella held up high"]
    example["entities"][0]["text"] = "The Metropolitan Museum of Art in New York City"
    figures.attention_over_image(example, Image.new("RGB", (64, 64), (255, 255, 255)), tmp_path / "a.png")
    (figure,) = saved
    title = figure.get_suptitle()
    assert title.endswith("…") and len(title) == 2 * figures.TITLE_CHARACTERS  # two panels wide
    first = figure.axes[0].get_title()
    assert first.endswith("… (PER)") and len(first) <= figures.TITLE_CHARACTERS
    canvas = FigureCanvasAgg(figure)  # its own canvas: the saved figure is closed
    canvas.draw()
    renderer = canvas.get_renderer()
    for axis in figure.axes:
        panel = axis.get_window_extent(renderer)
        labels = [text for text in axis.texts if text.get_text()]
        assert len(labels) == 3 and any("…" in text.get_text() for text in labels)
        for text in labels:
            box = text.get_window_extent(renderer)
            assert panel.x0 - 1 <= box.x0 and box.x1 <= panel.x1 + 1, text.get_text()
            assert panel.y0 - 1 <= box.y0 and box.y1 <= panel.y1 + 1, text.get_text()
