import json
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from mner.features.images import (
    MAX_ASPECT,
    ImageReport,
    ImageSource,
    LoadedImage,
    blank_image,
    image_batches,
    is_plain_file_name,
    load_image,
    to_rgb,
)
from mner.settings.images import ImagesConfig, ImagesMissingError, image_settings


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


def test_a_thin_strip_is_padded_to_the_largest_aspect_ratio(tmp_path):
    """A 20000x10 image is 320x1 after the downscale, which the detector's and grounder's
    processors resized to no pixel high (their crash lost every post after it in ``mner
    predict``): it is centred on a black canvas of at most MAX_ASPECT:1. Other shapes, a
    tiny image included, stay as they are."""
    Image.new("RGB", (20000, 10), (200, 30, 30)).save(tmp_path / "strip.png")
    loaded = load_image(tmp_path / "strip.png", max_side=320)
    assert loaded.problem is None and loaded.image.size == (320, 320 // MAX_ASPECT)
    assert loaded.image.getpixel((160, (320 // MAX_ASPECT - 1) // 2)) == (200, 30, 30)
    assert loaded.image.getpixel((160, 0)) == (0, 0, 0)
    Image.new("RGB", (10, 2000), (9, 9, 9)).save(tmp_path / "tall.png")
    assert load_image(tmp_path / "tall.png", max_side=400).image.size == (20, 400)
    for size in ((5, 3), (400, 20)):
        Image.new("RGB", size).save(tmp_path / "plain.png")
        assert load_image(tmp_path / "plain.png", max_side=400).image.size == size


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


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail a test whose image gets decoded."""

    def load(self):
        raise AssertionError(f"decoded {self.size}")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_an_image_over_max_pixels_is_blank_and_never_decoded(tmp_path, no_decoding):
    path = save(Image.new("RGBA", (300, 300), (9, 9, 9, 255)), tmp_path / "huge.png")
    loaded = load_image(path, blank_size=32, max_pixels=10_000)
    assert loaded.problem == "too_large"
    assert loaded.detail == "300x300 pixels, over images.max_pixels (10000)"
    assert loaded.image.size == (32, 32) and loaded.image.getpixel((0, 0)) == (255, 255, 255)


def test_image_source_applies_max_pixels(tmp_path):
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (300, 300)).save(tmp_path / "ds" / "1.jpg")
    assert ImageSource(ImagesConfig(dir=str(tmp_path)), "ds").load("1").problem is None
    assert (
        ImageSource(ImagesConfig(dir=str(tmp_path), max_pixels=10_000), "ds").load("1").problem == "too_large"
    )
    assert image_settings(ImagesConfig(max_pixels=10_000))["max_pixels"] == 10_000


def test_a_jpeg_is_judged_at_its_reduced_decoding_scale(tmp_path):
    path = save(Image.new("RGB", (2000, 2000), (0, 0, 200)), tmp_path / "big.jpg")
    loaded = load_image(path, max_side=600, max_pixels=1_000_000)  # decoded at 1/2: 1000x1000
    assert loaded.problem is None and loaded.image.size == (600, 600)
    loaded = load_image(path, max_side=600, max_pixels=999_999)
    assert loaded.problem == "too_large"
    assert loaded.detail == (
        "1000x1000 pixels at the reduced JPEG scale (2000x2000 in the file), over images.max_pixels (999999)"
    )


def test_an_image_over_pils_own_limit_is_too_large(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses at open above twice this
    loaded = load_image(path)
    assert loaded.problem == "too_large" and "decompression bomb" in loaded.detail


def test_only_the_first_frame_counts(tmp_path):
    small, large = Image.new("RGB", (10, 10), (0, 200, 0)), Image.new("RGB", (300, 300))
    small.save(tmp_path / "small-first.tif", save_all=True, append_images=[large])
    large.save(tmp_path / "large-first.tif", save_all=True, append_images=[small])
    loaded = load_image(tmp_path / "small-first.tif", max_pixels=10_000)
    assert loaded.problem is None and loaded.image.size == (10, 10)
    assert load_image(tmp_path / "large-first.tif", max_pixels=10_000).problem == "too_large"


def test_a_name_too_long_for_the_file_system_is_missing(tmp_path):
    loaded = load_image(tmp_path / ("a" * 300 + ".jpg"))
    assert loaded.problem == "missing" and "too long" in loaded.detail


def grey(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image)  # [H, W, 3]
    assert (rgb == rgb[..., :1]).all()
    return rgb[..., 0]


def test_a_constant_16_bit_image_keeps_its_grey_level(tmp_path):
    path = save(Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), tmp_path / "grey16.png")
    assert Image.open(path).mode == "I;16"
    loaded = load_image(path)
    assert loaded.problem is None and (grey(loaded.image) == 128).all()


def test_a_16_bit_gradient_is_scaled_by_a_fixed_rule(tmp_path):
    steps = np.arange(256, dtype=np.uint16) * 257  # 0, 257, ..., 65535
    path = save(Image.fromarray(np.tile(steps, (16, 1))), tmp_path / "gradient16.png")
    assert (grey(load_image(path).image) == np.arange(256)).all()
    dark = save(Image.fromarray(np.tile(steps // 16, (16, 1))), tmp_path / "dark16.png")
    assert (grey(load_image(dark).image) == np.arange(256) // 16).all()  # not stretched to 0..255


@pytest.mark.parametrize(
    ("image", "level"),
    [
        (Image.frombytes("I;16B", (4, 4), np.full(16, 32768, ">u2").tobytes()), 128),
        (Image.frombytes("I;16L", (4, 4), np.full(16, 65535, "<u2").tobytes()), 255),
        (Image.fromarray(np.full((4, 4), 32768, dtype=np.int32), "I"), 128),
        (Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), "I"), 255),
        (Image.fromarray(np.full((4, 4), -5, dtype=np.int32), "I"), 0),
        (Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), "F"), 128),
        (Image.fromarray(np.full((4, 4), 100.0, dtype=np.float32), "F"), 100),
        (Image.fromarray(np.full((4, 4), 300.0, dtype=np.float32), "F"), 255),
        (Image.fromarray(np.full((4, 4), np.nan, dtype=np.float32), "F"), 0),
    ],
)
def test_deep_grey_modes_are_scaled_not_stretched(image, level):
    assert (grey(to_rgb(image)) == level).all()


def png_16_bit_rgb(path, rgb: tuple[int, int, int], size: int = 4):
    """A 16-bit RGB PNG (PIL writes none) of one colour."""
    row = b"\0" + struct.pack(">" + "H" * 3 * size, *rgb * size)
    header = struct.pack(">IIBBBBB", size, size, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_a_16_bit_rgb_png_keeps_the_high_byte(tmp_path):
    loaded = load_image(png_16_bit_rgb(tmp_path / "rgb16.png", (65535, 32768, 256)))
    assert loaded.problem is None and loaded.image.getpixel((1, 1)) == (255, 128, 1)


def test_report_counts_too_large(tmp_path):
    report = ImageReport()
    report.add("train", "train-0", "1", LoadedImage(blank_image(), None))
    report.add("train", "train-1", "2", LoadedImage(blank_image(), "too_large", "300x300 pixels, ..."))
    assert report.blank("train") == 1
    assert report.summary() == "train: 1 of 2 blank (too_large 1)"
    report.write(tmp_path / "r.json")
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["counts"]["train"]["too_large"] == 1 and record["blank_images"][0]["problem"] == "too_large"


@pytest.mark.parametrize("name", ["1015799", "17_06_12483", "a.b", "..a", "a b"])
def test_plain_file_names(name):
    assert is_plain_file_name(name)


@pytest.mark.parametrize(
    "image_id", ["../secret", "../../etc/passwd", "/etc/passwd", "a/b", "a\\b", "a\0b", "..", ".", ""]
)
@pytest.mark.parametrize("missing", ["fail", "blank"])
def test_an_image_id_that_is_not_a_plain_file_name_is_refused(tmp_path, image_id, missing):
    (tmp_path / "images" / "ds").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "ds" / "1.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "images" / "secret.jpg")  # outside the dataset's directory
    images = ImagesConfig(dir=str(tmp_path / "images"), missing=missing)
    source = ImageSource(images, "ds" if missing == "fail" else "absent")
    assert not is_plain_file_name(image_id)
    with pytest.raises(ValueError, match=f"^image id {re.escape(repr(image_id))} is not a plain file name$"):
        source.load(image_id)


def size_of(index: int, loaded: LoadedImage) -> tuple[int, tuple[int, int], str | None]:
    return index, loaded.image.size, loaded.problem


@pytest.mark.parametrize("workers", [0, 2])
def test_image_batches_load_in_the_order_given_and_prepare_where_they_load(tmp_path, workers):
    """Batches of (index, image), or of ``prepare(index, image)``, in the order asked
    for, the same in worker processes as in this one; a missing image is the blank one."""
    (tmp_path / "ds").mkdir()
    for k in range(4):
        Image.new("RGB", (10 + k, 20)).save(tmp_path / "ds" / f"{k}.jpg")
    source = ImageSource(ImagesConfig(dir=str(tmp_path), blank_size=8), "ds")
    ids = ["0", "1", "2", "3", "gone"]
    plain = list(image_batches(source, ids, batch_size=2, num_workers=workers))
    assert [[index for index, _ in batch] for batch in plain] == [[0, 1], [2, 3], [4]]
    assert [loaded.image.size for batch in plain for _, loaded in batch][:4] == [
        (10, 20),
        (11, 20),
        (12, 20),
        (13, 20),
    ]
    prepared = image_batches(source, ids, 3, workers, order=[4, 2, 0, 1, 3], prepare=size_of)
    assert list(prepared) == [
        [(4, (8, 8), "missing"), (2, (12, 20), None), (0, (10, 20), None)],
        [(1, (11, 20), None), (3, (13, 20), None)],
    ]
