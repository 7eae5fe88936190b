"""The one HDF5 store every stage writes and the trainer reads.

Layout of a cache file (one per dataset and stage)::

    /                      attrs: format, provenance (JSON)
    /<split>/ids           [N] item ids (UTF-8 strings)
    /<split>/<field>/data     [R, ...] the rows of all items, concatenated
    /<split>/<field>/offsets  [N + 1] int64: item i is rows offsets[i]:offsets[i + 1]

Float features are stored as float16 without compression (measured in the design notes:
compression does not shrink them and slows reads). A writer works on a temporary name
and renames at the end, so no reader ever opens a half-written cache. A reader validates
the file on open (layout, offsets, provenance) and opens its HDF5 handle lazily in each
process, because h5py handles are not fork-safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import mner
from mner.config import plain

FORMAT = "mner-cache/1"


class CacheError(ValueError):
    """A cache that is missing, malformed or built with other settings than expected."""


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(
    stage: str, params: Mapping[str, Any], inputs: Iterable[Path | str] = (), **extra: Any
) -> dict:
    """What a cache records about how it was made: the producing stage, the params it
    used, the SHA-256 of its input files, the package version and ``extra`` (model id,
    revision, ...)."""
    return {
        "stage": stage,
        "params": dict(params),
        "inputs": {str(p): file_sha256(p) for p in inputs},
        "mner_version": mner.__version__,
        **extra,
    }


class CacheWriter:
    """Writes one cache file atomically::

    with CacheWriter(path, provenance(...)) as cache:
        cache.write_split("train", ids, {"words": arrays})
    """

    def __init__(self, path: Path | str, provenance: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.tmp_path = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.provenance = dict(provenance)
        self.file: h5py.File | None = None

    def __enter__(self) -> CacheWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp_path, "w")
        self.file.attrs["format"] = FORMAT
        self.file.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp_path, self.path)
        else:
            self.tmp_path.unlink(missing_ok=True)

    def write_ids(self, split: str, ids: Sequence[str]) -> None:
        self.file.require_group(split).create_dataset("ids", data=list(ids), dtype=h5py.string_dtype())

    def create_field(
        self, split: str, field: str, lengths: Sequence[int], row_shape: tuple[int, ...], dtype: Any
    ) -> FieldWriter:
        """A field whose item i has ``lengths[i]`` rows of ``row_shape``, to be filled
        item by item in any order (``field[i] = rows``)."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        group = self.file.require_group(split).create_group(field)
        group.create_dataset("offsets", data=offsets)
        data = group.create_dataset("data", shape=(int(offsets[-1]), *row_shape), dtype=dtype)
        return FieldWriter(data, offsets)

    def write_field(self, split: str, field: str, items: Sequence[np.ndarray], dtype: Any = None) -> None:
        """A field from in-memory arrays, one per item (rows along the first axis)."""
        first = np.asarray(items[0]) if items else np.zeros((0,))
        dtype = dtype or first.dtype
        writer = self.create_field(split, field, [len(a) for a in items], first.shape[1:], dtype)
        for i, rows in enumerate(items):
            writer[i] = rows


class FieldWriter:
    def __init__(self, data: h5py.Dataset, offsets: np.ndarray) -> None:
        self.data, self.offsets = data, offsets

    def __setitem__(self, index: int, rows: np.ndarray) -> None:
        start, end = self.offsets[index], self.offsets[index + 1]
        if len(rows) != end - start:
            raise ValueError(f"item {index}: {len(rows)} rows given, {end - start} declared")
        if end > start:
            self.data[start:end] = rows


class CacheReader:
    """Reads a cache file; validated on construction, HDF5 handle opened lazily per
    process (safe to pass to DataLoader workers)."""

    def __init__(self, path: Path | str, expect: Mapping[str, Any] | None = None, rerun: str = "") -> None:
        self.path = Path(path)
        self.rerun = rerun or "the stage that writes it"
        self._file: h5py.File | None = None
        self._pid: int | None = None
        if not self.path.is_file():
            raise CacheError(f"{self.path}: cache not found; run {self.rerun}")
        try:
            with h5py.File(self.path, "r") as f:
                self.provenance = self._check_layout(f)
                self.ids = {s: [x.decode() for x in f[s]["ids"][()]] for s in self.splits(f)}
                self.offsets = {
                    (s, name): f[s][name]["offsets"][()] for s in self.ids for name in self._fields(f[s])
                }
        except OSError as error:
            raise CacheError(f"{self.path}: not a readable HDF5 file ({error}); run {self.rerun}") from error
        self._check_offsets()
        if expect:
            check_provenance(self.path, self.provenance, expect, self.rerun)

    @staticmethod
    def splits(f: h5py.File) -> list[str]:
        return [name for name, item in f.items() if isinstance(item, h5py.Group)]

    @staticmethod
    def _fields(group: h5py.Group) -> list[str]:
        return [name for name, item in group.items() if isinstance(item, h5py.Group)]

    def _check_layout(self, f: h5py.File) -> dict:
        if f.attrs.get("format") != FORMAT:
            raise CacheError(
                f"{self.path}: not an mner cache (format {f.attrs.get('format')!r}, expected {FORMAT})"
            )
        try:
            record = json.loads(f.attrs["provenance"])
        except (KeyError, ValueError) as error:
            raise CacheError(f"{self.path}: missing or unreadable provenance ({error})") from error
        for split in self.splits(f):
            group = f[split]
            if "ids" not in group:
                raise CacheError(f"{self.path}: split {split!r} has no ids dataset")
            for name in self._fields(group):
                if {"data", "offsets"} - set(group[name]):
                    raise CacheError(f"{self.path}: field {split}/{name} needs data and offsets datasets")
                if group[name]["offsets"].dtype.kind not in "iu":
                    raise CacheError(f"{self.path}: {split}/{name}/offsets is not an integer array")
        return record

    def _check_offsets(self) -> None:
        with h5py.File(self.path, "r") as f:
            for (split, name), offsets in self.offsets.items():
                where = f"{self.path}: {split}/{name}/offsets"
                n_rows = len(f[split][name]["data"])
                if len(offsets) != len(self.ids[split]) + 1:
                    raise CacheError(f"{where} has {len(offsets)} entries for {len(self.ids[split])} ids")
                if len(offsets) and (offsets[0] != 0 or offsets[-1] != n_rows):
                    raise CacheError(f"{where} must run from 0 to {n_rows} (the data rows)")
                if np.any(np.diff(offsets) < 0):
                    raise CacheError(f"{where} is not monotone")

    def fields(self, split: str) -> list[str]:
        return [name for s, name in self.offsets if s == split]

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def get(self, split: str, field: str, index: int, limit: int | None = None) -> np.ndarray:
        """The rows of item ``index`` of ``field`` (only its first ``limit`` when given)."""
        offsets = self.offsets[split, field]
        start, end = offsets[index], offsets[index + 1]
        if limit is not None:
            end = min(end, start + limit)
        return self._handle()[split][field]["data"][start:end]

    def row_shape(self, split: str, field: str) -> tuple[int, ...]:
        return self._handle()[split][field]["data"].shape[1:]

    def dtype(self, split: str, field: str) -> np.dtype:
        return self._handle()[split][field]["data"].dtype

    def rows(self, split: str, ids: Sequence[str]) -> list[int]:
        """The row of each of ``ids`` in ``split`` (a shard job reads a full cache this way)."""
        row_of = {item_id: row for row, item_id in enumerate(self.ids.get(split, []))}
        missing = [i for i in ids if i not in row_of]
        if missing:
            raise CacheError(
                f"{self.path}: split {split!r} lacks {len(missing)} of the prepared tweets "
                f"(first: {', '.join(missing[:5])}); rerun {self.rerun}"
            )
        return [row_of[i] for i in ids]

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


def rerun_hint(stage: str, dataset: str = "") -> str:
    """How to remake the cache of ``stage``: the dvc command for ``dataset`` when known."""
    return f"dvc repro {stage}@{dataset}" if dataset else f"the {stage} stage (stages/{stage}.py)"


def expectation(stage: str, config: Any, keys: Sequence[str], **recorded: Mapping[str, Any]) -> dict:
    """What a consumer requires of a ``stage`` cache, as the dotted keys that
    :func:`check_provenance` reads: the stage, the ``keys`` of its ``config`` that decide
    its content, and for each ``name=values`` the settings the cache records under ``name``
    (the images config, or the params of a cache it was made from)."""
    expect = {"stage": stage, **{f"params.{key}": getattr(config, key) for key in keys}}
    for name, values in recorded.items():
        expect |= {f"{name}.{key}": value for key, value in values.items()}
    return expect


def recorded_part(expect: Mapping[str, Any], part: str = "params") -> dict:
    """The ``part.*`` keys of an expectation without their prefix: how the next cache records
    them (a visual cache records its objects cache's params under ``objects``)."""
    return {
        key.removeprefix(f"{part}."): value for key, value in expect.items() if key.startswith(f"{part}.")
    }


def check_provenance(path: Path, record: Mapping[str, Any], expect: Mapping[str, Any], rerun: str) -> None:
    """Refuse a cache whose provenance differs from ``expect`` (dotted keys such as
    ``params.model``), naming every difference and the stage to rerun."""
    differences = []
    for key, wanted in expect.items():
        found: Any = record
        for part in key.split("."):
            found = found.get(part, _MISSING) if isinstance(found, Mapping) else _MISSING
        if plain(found) != plain(wanted):
            shown = "nothing" if found is _MISSING else repr(found)
            differences.append(f"{key} is {shown}, expected {wanted!r}")
    if differences:
        raise CacheError(f"{path} was built with other settings: {'; '.join(differences)}. Rerun {rerun}.")


_MISSING = object()
