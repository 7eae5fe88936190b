"""Hostile and broken caches, as a teammate's DVC remote could hand them over: each crafted
file is refused with a :class:`CacheError` that names it, when training opens the caches
and reads every item; none is read through to another file, none hangs."""

import os
import signal

import h5py
import numpy as np
import pytest

from mner.cached.dataset import FeatureCaches
from mner.core.cache import CacheError
from mner.core.workspace import Workspace
from mner.data.conll import SPLITS
from mner.data.labels import TWITTER_LABELS
from mner.data.prepared import read_prepared
from tests.synthetic import TEXT_CONFIG, StandInModel, write_synthetic, write_synthetic_visual

WORDS = "train/words/data"
EXPECT = {
    "text": {"stage": "text_features", "params.model": TEXT_CONFIG.model},
    "visual": {"stage": "visual_features"},
    "grounding": {"stage": "ground"},
}


def open_and_read_all(prepared, text, visual, grounding):
    """What training does: open the caches against their expectations and read every item
    a grounded-objects model reads."""
    caches = FeatureCaches.open(Workspace.of("d", text=text, visual=visual, grounding=grounding), EXPECT)
    model = StandInModel("grounded", max_visual=64)
    for split in SPLITS:
        data = caches.dataset(model, split, read_prepared(prepared / f"{split}.jsonl"), TWITTER_LABELS)
        for i in range(len(data)):
            data[i]


def replace(path, name, make):
    """Replace dataset ``name`` of the cache at ``path`` by ``make(f, name, old array)``."""
    with h5py.File(path, "r+") as f:
        old = f[name][()]
        del f[name]
        make(f, name, old)


def side_file(path, array):
    """An HDF5 file next to ``path`` holding ``array`` as ``/data``."""
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as f:
        f["data"] = array
    return other


def external_link(path):
    replace(
        path, WORDS, lambda f, name, old: f.__setitem__(name, h5py.ExternalLink(side_file(path, old), "data"))
    )


def soft_link(path):
    def make(f, name, old):
        f["elsewhere"] = old
        f[name] = h5py.SoftLink("/elsewhere")

    replace(path, WORDS, make)


def virtual_dataset(path):
    def make(f, name, old):
        layout = h5py.VirtualLayout(shape=old.shape, dtype=old.dtype)
        layout[...] = h5py.VirtualSource(side_file(path, old), "data", shape=old.shape)
        f.create_virtual_dataset(name, layout)

    replace(path, WORDS, make)


def external_storage(target):
    def damage(path):
        def make(f, name, old):
            source = target(path, old)
            f.create_dataset(name, old.shape, old.dtype, external=[(str(source), 0, h5py.h5f.UNLIMITED)])

        replace(path, WORDS, make)

    return damage


def raw_copy(path, old):
    raw = path.with_name("raw.bin")
    raw.write_bytes(old.tobytes())
    return raw


def fifo(path, old):
    pipe = path.with_name("pipe")
    os.mkfifo(pipe)
    return pipe


def set_item(name, index, value):
    def damage(path):
        with h5py.File(path, "r+") as f:
            f[name][index] = value

    return damage


def overwrite_bytes(path):
    """0xFF bytes over the rows of one item, as a bad disk or a careless edit would (float16
    0xFFFF is NaN)."""
    with h5py.File(path, "r") as f:
        offset, rows = f[WORDS].id.get_offset(), f["train/words/offsets"][()]
        row_bytes = f[WORDS][0].nbytes
    with open(path, "r+b") as raw:
        raw.seek(offset + int(rows[2]) * row_bytes)
        raw.write(b"\xff" * row_bytes)


def retyped(name, convert):
    return lambda path: replace(path, name, lambda f, n, old: f.create_dataset(n, data=convert(old)))


def set_attr(key, value):
    def damage(path):
        with h5py.File(path, "r+") as f:
            if value is None:
                del f.attrs[key]
            else:
                f.attrs[key] = value

    return damage


def drop_provenance_key(key):
    def damage(path):
        import json

        with h5py.File(path, "r+") as f:
            record = json.loads(f.attrs["provenance"])
            del record[key]
            f.attrs["provenance"] = json.dumps(record)

    return damage


def edit(make):
    def damage(path):
        with h5py.File(path, "r+") as f:
            make(f)

    return damage


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def decreasing_offsets(f):
    offsets = f["train/words/offsets"]
    offsets[1], offsets[2] = offsets[2], offsets[1]


TEXT_FAULTS = {
    "external link": external_link,
    "soft link": soft_link,
    "virtual dataset": virtual_dataset,
    "external raw storage": external_storage(raw_copy),
    "external storage on /etc/passwd": external_storage(lambda path, old: "/etc/passwd"),
    "external storage on a FIFO": external_storage(fifo),
    "NaN in an item": set_item(WORDS, 3, np.nan),
    "Inf in an item": set_item(WORDS, 0, np.inf),
    "bytes overwritten": overwrite_bytes,
    "int32 features": retyped(WORDS, lambda old: old.astype(np.int32)),
    "float32 features": retyped(WORDS, lambda old: old.astype(np.float32)),
    "big-endian float16": retyped(WORDS, lambda old: old.astype(">f2")),
    "rank-2 features": retyped(WORDS, lambda old: old.reshape(len(old), -1)),
    "another hidden size": retyped(WORDS, lambda old: old[:, :, :8]),
    "another number of layers": retyped(WORDS, lambda old: old[:, :1]),
    "provenance not JSON": set_attr("provenance", "{not json"),
    "provenance a JSON list": set_attr("provenance", "[1, 2]"),
    "provenance without hidden_size": drop_provenance_key("hidden_size"),
    "no format mark (an interrupted writer)": set_attr("format", None),
    "another format": set_attr("format", "mner-cache/0"),
    "float offsets": retyped("train/words/offsets", lambda old: old.astype(np.float64)),
    "two-dimensional offsets": retyped("train/words/offsets", lambda old: np.stack([old, old], 1)),
    "offsets past the data": retyped(WORDS, lambda old: old[:-1]),
    "decreasing offsets": edit(decreasing_offsets),
    "unsigned offsets": retyped("train/words/offsets", lambda old: old.astype(np.uint64)),
    "gzip-compressed features": lambda path: replace(
        path,
        WORDS,
        lambda f, n, old: f.create_dataset(n, data=old, compression="gzip", chunks=(1, *old.shape[1:])),
    ),
    "chunked features": lambda path: replace(
        path, WORDS, lambda f, n, old: f.create_dataset(n, data=old, chunks=(2, *old.shape[1:]))
    ),
    "integer ids": retyped("train/ids", lambda old: np.arange(len(old))),
    "fewer ids than items": retyped("train/ids", lambda old: old[:-1]),
    "a field no stage writes": edit(lambda f: f.copy("train/words", "train/extra")),
    "no words field": edit(lambda f: f.__delitem__("train/words")),
    "a named datatype": edit(lambda f: f.__setitem__("kind", np.dtype("f4"))),
    "truncated file": truncate,
}

VISUAL_FAULTS = {
    "Inf in the image features": set_item("valid/image/data", 1, np.inf),
    "a field of another width": retyped("train/objects/data", lambda old: old[:, :4]),
    "provenance without feature_dim": drop_provenance_key("feature_dim"),
    "external link to the grid": lambda path: replace(
        path,
        "test/grid/data",
        lambda f, n, old: f.__setitem__(n, h5py.ExternalLink(side_file(path, old), "data")),
    ),
}

GROUNDING_FAULTS = {
    "float positions": retyped("train/positions/data", lambda old: old.astype(np.float32)),
    "positions of three columns": retyped("train/positions/data", lambda old: np.pad(old, ((0, 0), (0, 1)))),
}

CASES = (
    [("text", name, damage) for name, damage in TEXT_FAULTS.items()]
    + [("visual", name, damage) for name, damage in VISUAL_FAULTS.items()]
    + [("grounding", name, damage) for name, damage in GROUNDING_FAULTS.items()]
)


@pytest.fixture
def caches(tmp_path):
    prepared, text = write_synthetic(tmp_path, sizes=(6, 4, 4))
    visual, grounding = write_synthetic_visual(tmp_path, prepared)
    return {"prepared": prepared, "text": text, "visual": visual, "grounding": grounding}


def test_the_intact_caches_are_read(caches):
    open_and_read_all(**caches)


def timeout(signum, frame):
    raise TimeoutError("reading the cache hung")


@pytest.mark.parametrize(("target", "name", "damage"), CASES, ids=[name for _, name, _ in CASES])
def test_a_hostile_cache_is_refused_naming_its_file(caches, target, name, damage):
    damage(caches[target])
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)  # a cache read through to a FIFO would block forever
    try:
        with pytest.raises(CacheError) as caught:
            open_and_read_all(**caches)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert str(caches[target]) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("unsigned offsets", "train/words/offsets is not a one-dimensional signed integer array"),
        (
            "gzip-compressed features",
            "/train/words/data is chunked and gzip-compressed (mner writes contiguous",
        ),
        ("chunked features", "/train/words/data is chunked (mner writes contiguous"),
    ],
)
def test_layouts_mner_does_not_write_are_refused_before_a_read(caches, name, wrong):
    """Unsigned offsets passed the monotone check (their differences wrap around, so items
    overlap); a compressed, chunked field cost gigabytes to read a few rows."""
    TEXT_FAULTS[name](caches["text"])
    with pytest.raises(CacheError) as caught:
        FeatureCaches.open(Workspace.of("d", text=caches["text"]), EXPECT)
    assert str(caught.value).startswith(f"{caches['text']}: {wrong}")
