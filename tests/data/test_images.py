import json

import numpy as np
import pytest
from PIL import Image

from mner.data.images import (
    ImageReport,
    ImagesConfig,
    ImagesMissingError,
    ImageSource,
    LoadedImage,
    blank_image,
    load_image,
)


def save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def test_good_jpeg(tmp_path):
    loaded = load_image(save(Image.new("RGB", (40, 30), (10, 200, 30)), tmp_path / "a.jpg"))
    assert loaded.problem is None and loaded.image.mode == "RGB" and loaded.image.size == (40, 30)


@pytest.mark.parametrize(
    ("make", "name", "check"),
    [
        (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "alpha.png", lambda px: px == (255, 255, 255)),
        (lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 255)), "opaque.png", lambda px: px == (255, 0, 0)),
        (lambda: Image.new("L", (8, 8), 77), "gray.png", lambda px: px == (77, 77, 77)),
        (lambda: Image.new("P", (8, 8), 3), "palette.png", lambda px: len(px) == 3),
        (
            lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)),
            "cmyk.jpg",
            lambda px: px[0] > 200 and px[1] < 60,
        ),
        (
            lambda: Image.fromarray(np.full((8, 8), 4000, dtype=np.uint16)),
            "deep.png",
            lambda px: len(px) == 3,
        ),
    ],
)
def test_modes_become_rgb(tmp_path, make, name, check):
    loaded = load_image(save(make(), tmp_path / name))
    assert loaded.problem is None and loaded.image.mode == "RGB"
    assert check(loaded.image.getpixel((4, 4)))


def test_gif_first_frame(tmp_path):
    frames = [Image.new("P", (10, 10), i) for i in (1, 2)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    loaded = load_image(tmp_path / "anim.gif")
    assert loaded.problem is None and loaded.image.size == (10, 10)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").image.size == (20, 40)


def test_large_images_are_downscaled(tmp_path):
    loaded = load_image(save(Image.new("RGB", (3000, 1000)), tmp_path / "big.jpg"), max_side=600)
    assert loaded.problem is None and loaded.image.size == (600, 200)


def test_bad_files_become_the_blank_image(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not an image at all")
    data = save(
        Image.effect_noise((64, 64), 50).convert("RGB"), tmp_path / "full.jpg", quality=95
    ).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    problems = {
        name: load_image(tmp_path / name, blank_size=32)
        for name in ("missing.jpg", "empty.jpg", "junk.jpg", "cut.jpg")
    }
    assert {n: p.problem for n, p in problems.items()} == {
        "missing.jpg": "missing",
        "empty.jpg": "empty",
        "junk.jpg": "undecodable",
        "cut.jpg": "truncated",
    }
    for loaded in problems.values():
        assert loaded.image.size == (32, 32) and loaded.image.getpixel((0, 0)) == (255, 255, 255)


def test_missing_directory_fails_with_instructions_unless_blank_allowed(tmp_path):
    with pytest.raises(
        ImagesMissingError, match=r"no image directory .*twitter2017.*UMT.*images\.missing: blank"
    ):
        ImageSource(ImagesConfig(dir=str(tmp_path)), "twitter2017")
    source = ImageSource(ImagesConfig(dir=str(tmp_path), missing="blank"), "twitter2017")
    loaded = source.load("123")
    assert loaded.problem == "missing" and loaded.image.size == (224, 224)


def test_report_counts_per_split_and_lists_items(tmp_path):
    report = ImageReport()
    report.add("train", "train-0", "1", LoadedImage(blank_image(), None))
    report.add("train", "train-1", "2", LoadedImage(blank_image(), "missing"))
    report.add("test", "test-0", "3", LoadedImage(blank_image(), "truncated", "image file is truncated"))
    assert report.blank("train") == 1 and report.blank("test") == 1
    assert report.summary() == "train: 1 of 2 blank (missing 1); test: 1 of 1 blank (truncated 1)"
    report.write(tmp_path / "r.json")
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["counts"]["train"]["missing"] == 1
    assert record["blank_images"][1] == {
        "split": "test",
        "id": "test-0",
        "image_id": "3",
        "problem": "truncated",
        "detail": "image file is truncated",
    }


def test_a_directory_with_only_its_gitkeep_counts_as_absent(tmp_path):
    (tmp_path / "twitter2015").mkdir()
    (tmp_path / "twitter2015" / ".gitkeep").touch()
    with pytest.raises(ImagesMissingError, match="no image directory"):
        ImageSource(ImagesConfig(dir=str(tmp_path)), "twitter2015")
    Image.new("RGB", (4, 4)).save(tmp_path / "twitter2015" / "1.jpg")
    assert ImageSource(ImagesConfig(dir=str(tmp_path)), "twitter2015").load("1").problem is None
