"""The one HDF5 store every stage writes and the trainer reads.

Layout of a cache file (one per dataset and stage)::

    /                      attrs: format, provenance (JSON)
    /<split>/ids           [N] item ids (UTF-8 strings)
    /<split>/<field>/data     [R, ...] the rows of all items, concatenated
    /<split>/<field>/offsets  [N + 1] int64: item i is rows offsets[i]:offsets[i + 1]

Float features are stored as float16 without compression (measured in the design notes:
compression does not shrink them and slows reads). The fields of each stage's cache, their
dtype and row shape are :func:`stage_fields`.

Caches travel between teammates, so a reader treats a file as untrusted input: it accepts
only plain datasets stored in the file (no external links, soft links, external storage or
virtual datasets, which would make it read other files), checks every field's dtype and
row shape against the provenance, refuses non-finite float rows when it reads them, and
names the file and field in every error. A writer refuses non-finite rows, works on a
temporary name (``.<name>.tmp-<pid>``, removed by the next writer when its process is
gone) and marks the file as a cache only when it closes, just before the rename, so no
reader ever takes a half-written file for a whole one. A reader opens its HDF5 handle
lazily in each process, because h5py handles are not fork-safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

import mner
from mner import InputError
from mner.core.config import plain
from mner.core.workspace import CLUE_MEAN, CLUE_WORDS

FORMAT = "mner-cache/1"


class CacheError(InputError):
    """A cache that is missing, malformed or built with other settings than expected."""


class CacheWriteError(CacheError):
    """A cache the file system would not let be written (a full disk, a read-only or
    vanished directory); ``hdf5_left_open``: HDF5 could not close the temporary file, and
    would crash flushing it when the process exits (:func:`mner.run_stage` ends it without)."""

    def __init__(self, message: str, hdf5_left_open: bool = False) -> None:
        super().__init__(message)
        self.hdf5_left_open = hdf5_left_open


@dataclass(frozen=True)
class FieldLayout:
    dtype: np.dtype
    row_shape: tuple[int, ...]
    required: bool = True  # in every split that has items


def _fields(dtype: Any, required: bool = True, **row_shapes: tuple[int, ...]) -> dict[str, FieldLayout]:
    return {name: FieldLayout(np.dtype(dtype), shape, required) for name, shape in row_shapes.items()}


def stage_fields(record: Mapping[str, Any]) -> dict[str, FieldLayout] | None:
    """The fields a cache of the stage that ``record`` (its provenance) names holds, with
    their dtype and row shape; None for a stage that is not one of the pipeline's.

    - ``text_features``: ``words`` float16 ``[layers, hidden_size]`` per word; read with a clue
      set (``clues`` recorded), also its clue cells ``CLUE_MEAN`` and ``CLUE_WORDS`` (mner.core.workspace),
      float16 ``[hidden_size]``;
    - ``detect``: ``boxes`` float32 ``[4]`` (normalised xyxy), ``scores`` float32,
      ``classes`` int32 per object;
    - ``parse``: ``spans`` int32 ``[2]`` (first word, end) per noun phrase;
    - ``ground``: ``boxes``, ``scores``, ``query`` (int32) per box, ``positions`` int32
      ``[2]`` per box, ``n_phrases`` int32 (one row per tweet);
    - ``visual_features``: ``image`` (one row), ``objects``, ``grounded`` and ``grid``
      (required with ``grid: true``): float16 ``[feature_dim]``.
    """
    stage = record.get("stage")
    boxes = _fields(np.float32, boxes=(4,), scores=())
    if stage == "text_features":
        layers, hidden = record["params"]["layers"], record["hidden_size"]
        cells = _fields(np.float16, **{CLUE_MEAN: (int(hidden),), CLUE_WORDS: (int(hidden),)})
        return _fields(np.float16, words=(len(layers), int(hidden))) | (cells if record.get("clues") else {})
    if stage == "detect":
        return boxes | _fields(np.int32, classes=())
    if stage == "parse":
        return _fields(np.int32, spans=(2,))
    if stage == "ground":
        return boxes | _fields(np.int32, query=(), positions=(2,), n_phrases=())
    if stage == "visual_features":
        row = (int(record["feature_dim"]),)
        grid = _fields(np.float16, bool(record["params"].get("grid")), grid=row)
        return _fields(np.float16, image=row, objects=row, grounded=row) | grid
    return None


def file_digest(path: Path | str, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path | str) -> str:
    return file_digest(path, "sha256")


def check_locked(path: Path | str) -> None:
    """Refuse a file that differs from the output dvc.lock records for it (the dvc.lock of
    the nearest directory above it that has one; a file no dvc.lock records passes). A cache
    replaced by hand with another of the same provenance is caught here; ``dvc repro``
    writes dvc.lock as each stage ends, so the stages after it always agree with it."""
    path = Path(path).resolve()
    root = next((d for d in path.parents if (d / "dvc.lock").is_file()), None)
    if root is None:
        return
    try:
        stages = (yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) or {}).get("stages") or {}
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as error:
        raise CacheError(f"{root / 'dvc.lock'}: not a dvc.lock DVC wrote ({type(error).__name__})") from None
    relative = path.relative_to(root).as_posix()
    for stage, entry in stages.items():
        for out in (entry or {}).get("outs") or []:
            if out.get("path") != relative or "md5" not in out:
                continue
            size, recorded = path.stat().st_size, str(out["md5"])
            if out.get("size") not in (None, size):
                found = f"{out['size']} bytes recorded, {size} found"
            elif (digest := file_digest(path, "md5")) != recorded:
                found = f"MD5 {recorded[:12]}... recorded, {digest[:12]}... found"
            else:
                return
            raise CacheError(
                f"{path} is not the output of {stage} that {root / 'dvc.lock'} records ({found}): it "
                f"was changed outside `dvc repro`. `dvc checkout --force {relative}` restores the recorded "
                f"one, `dvc repro {stage}` rebuilds it, `dvc commit {stage}` records this one"
            )


def directory_sha256(path: Path | str) -> str:
    """One SHA-256 of a directory's files: their relative paths and contents, in order (a
    local model rebuilt with other weights, under the same path, gets another)."""
    root, digest = Path(path), hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(root).as_posix()}\0{file_sha256(file)}\0".encode())
    return digest.hexdigest()


def loaded_revision(model: Any, requested: str) -> str:
    """The revision a transformers ``model`` was loaded at, as a provenance records it: the
    hub commit that ``requested`` resolved to (a local directory has none: ``requested``)."""
    return getattr(model.config, "_commit_hash", None) or requested


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
        self.ids: dict[str, list[str]] = {}
        self.left_open = False  # a failed write left HDF5 unable to close the temporary file

    def __enter__(self) -> CacheWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
            self.file = h5py.File(self.tmp_path, "w")
        except OSError as error:
            raise self.write_error(error) from error
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:  # only a finished file is marked as a cache
                self.file.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True)
                self.file.attrs["format"] = FORMAT
            self.file.close()
            if exc_type is None:
                os.replace(self.tmp_path, self.path)
        except (OSError, RuntimeError) as error:  # the disk filled up while the last data was flushed
            self.abandon()
            raise self.write_error(exc if isinstance(exc, OSError) else error) from error
        if exc_type is not None:
            self.abandon()
            if issubclass(exc_type, OSError):  # a full disk, a read-only or vanished directory
                raise self.write_error(exc) from exc

    def abandon(self) -> None:
        """Close the temporary file whatever state a failed write left it in, and remove it."""
        try:
            self.file.close()
        except (OSError, RuntimeError, ValueError):
            self.left_open = True
        self.tmp_path.unlink(missing_ok=True)

    def write_error(self, error: BaseException) -> CacheWriteError:
        """A failed write of the file system, as one line: the cache, the cause (the system's
        message, not HDF5's report of the call), and that the previous file is unchanged."""
        found = re.search(r"error message = '([^']*)'", str(error))
        cause = found.group(1) if found else getattr(error, "strerror", None) or type(error).__name__
        return CacheWriteError(f"{self.path}: cannot be written ({cause}); {self.kept()}", self.left_open)

    def kept(self) -> str:
        return "the previous one is unchanged" if self.path.is_file() else "nothing was written"

    def write_ids(self, split: str, ids: Sequence[str]) -> None:
        self.ids[split] = list(ids)
        self.file.require_group(split).create_dataset("ids", data=list(ids), dtype=h5py.string_dtype())

    def create_field(
        self, split: str, field: str, lengths: Sequence[int], row_shape: tuple[int, ...], dtype: Any
    ) -> FieldWriter:
        """A field whose item i has ``lengths[i]`` rows of ``row_shape``, to be filled
        item by item in any order (``field[i] = rows``)."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        needed = int(offsets[-1]) * int(np.prod(row_shape)) * np.dtype(dtype).itemsize
        free = shutil.disk_usage(self.tmp_path.parent).free
        if needed > free:  # refused before HDF5 writes into a disk it cannot finish the file on
            raise CacheError(
                f"{self.path}: {split}/{field} needs {needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free "
                f"on its disk; free space and rerun ({self.kept()})"
            )
        group = self.file.require_group(split).create_group(field)
        group.create_dataset("offsets", data=offsets)
        data = group.create_dataset("data", shape=(int(offsets[-1]), *row_shape), dtype=dtype)
        return FieldWriter(data, offsets, f"{self.path}: {split}/{field}", self.ids.get(split))

    def write_field(self, split: str, field: str, items: Sequence[np.ndarray], dtype: Any = None) -> None:
        """A field from in-memory arrays, one per item (rows along the first axis)."""
        first = np.asarray(items[0]) if items else np.zeros((0,))
        dtype = dtype or first.dtype
        writer = self.create_field(split, field, [len(a) for a in items], first.shape[1:], dtype)
        for i, rows in enumerate(items):
            writer[i] = rows


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files that writers of ``path`` left when they were killed
    (``.<name>.tmp-<pid>`` of a process that is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class FieldWriter:
    def __init__(
        self, data: h5py.Dataset, offsets: np.ndarray, where: str, ids: Sequence[str] | None
    ) -> None:
        self.data, self.offsets, self.where, self.ids = data, offsets, where, ids

    def __setitem__(self, index: int, rows: np.ndarray) -> None:
        start, end = self.offsets[index], self.offsets[index + 1]
        item = self.ids[index] if self.ids else index
        if len(rows) != end - start:
            raise ValueError(f"{self.where} item {item}: {len(rows)} rows given, {end - start} declared")
        with np.errstate(over="ignore"):  # an overflow is refused below, naming the item
            stored = np.asarray(rows).astype(self.data.dtype, copy=False)
        if stored.dtype.kind == "f" and not np.isfinite(stored).all():
            largest = np.abs(np.asarray(rows, dtype=np.float64))
            finite = np.isfinite(largest).all()
            why = (
                f"beyond the range of {stored.dtype} (largest {largest.max():.3g})"
                if finite
                else "NaN or Inf"
            )
            raise CacheError(
                f"{self.where} item {item}: non-finite values ({why}); the cache was not written"
            )
        if end > start:
            self.data[start:end] = stored


class CacheReader:
    """Reads a cache file; validated on construction, HDF5 handle opened lazily per
    process (safe to pass to DataLoader workers)."""

    def __init__(self, path: Path | str, expect: Mapping[str, Any] | None = None, rerun: str = "") -> None:
        self.path = Path(path)
        self.rerun = rerun or "the stage that writes it"
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._data: dict[tuple[str, str], h5py.Dataset] = {}  # of the open handle
        if not self.path.is_file():
            raise CacheError(f"{self.path}: cache not found; run {self.rerun}")
        try:
            with h5py.File(self.path, "r") as f:
                self.provenance = self._check_layout(f)
                self.ids = {s: self._read_ids(f[s]) for s in self.splits(f)}
                self.offsets = {
                    (s, name): f[s][name]["offsets"][()] for s in self.ids for name in self._fields(f[s])
                }
                self._check_offsets(f)
        except CacheError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
            raise CacheError(
                f"{self.path}: not a readable HDF5 file ({type(error).__name__}: {error}); rerun {self.rerun}"
            ) from error
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
                f"{self.path}: not an mner cache (format {f.attrs.get('format')!r}, expected {FORMAT}; "
                f"a file whose writer was interrupted has none); rerun {self.rerun}"
            )
        try:
            record = json.loads(f.attrs["provenance"])
        except (KeyError, ValueError, TypeError) as error:
            raise CacheError(f"{self.path}: missing or unreadable provenance ({error})") from error
        if not isinstance(record, dict):
            raise CacheError(f"{self.path}: the provenance is not a JSON object")
        self._check_plain(f)
        try:
            layout = stage_fields(record)
        except (KeyError, TypeError, ValueError) as error:
            raise CacheError(
                f"{self.path}: the provenance of its {record.get('stage')!r} cache lacks a field size "
                f"({type(error).__name__}: {error}); rerun {self.rerun}"
            ) from error
        for split in self.splits(f):
            group = f[split]
            if "ids" not in group:
                raise CacheError(f"{self.path}: split {split!r} has no ids dataset")
            for name in self._fields(group):
                where = f"{self.path}: {split}/{name}"
                if {"data", "offsets"} - set(group[name]):
                    raise CacheError(f"{where} needs data and offsets datasets")
                offsets = group[name]["offsets"]
                if offsets.dtype.kind != "i" or offsets.ndim != 1:  # unsigned: a difference wraps around
                    raise CacheError(f"{where}/offsets is not a one-dimensional signed integer array")
                if layout is not None and len(group["ids"]):
                    self._check_field(where, name, group[name]["data"], layout, record["stage"])
            if layout is not None and len(group["ids"]):
                missing = [name for name, field in layout.items() if field.required and name not in group]
                if missing:
                    raise CacheError(
                        f"{self.path}: split {split!r} lacks the field {missing[0]!r} of a "
                        f"{record['stage']} cache; rerun {self.rerun}"
                    )
        return record

    def _check_plain(self, group: h5py.Group) -> None:
        """Every object under ``group`` is a group or a dataset stored in this file."""
        for name in group:
            where = f"{self.path}: {group.name.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise CacheError(
                    f"{where} is a {type(link).__name__} (a cache holds only its own datasets); "
                    f"rerun {self.rerun}"
                )
            item = group[name]
            if isinstance(item, h5py.Group):
                self._check_plain(item)
            elif not isinstance(item, h5py.Dataset):
                raise CacheError(f"{where} is a {type(item).__name__}, not a group or dataset")
            elif item.is_virtual or item.external:
                kind = "a virtual dataset" if item.is_virtual else "stored in an external file"
                raise CacheError(f"{where} is {kind} (a cache holds only its own data); rerun {self.rerun}")
            elif item.chunks is not None:  # compression or other filters need chunks
                compressed = f" and {item.compression}-compressed" if item.compression else ""
                raise CacheError(
                    f"{where} is chunked{compressed} (mner writes contiguous, uncompressed datasets, "
                    f"which a read takes row by row); rerun {self.rerun}"
                )

    def _check_field(
        self, where: str, name: str, data: h5py.Dataset, layout: Mapping[str, FieldLayout], stage: str
    ) -> None:
        if name not in layout:
            raise CacheError(f"{where} is not a field of a {stage} cache (it has {', '.join(layout)})")
        wanted = layout[name]
        if data.dtype != wanted.dtype or data.shape[1:] != wanted.row_shape:
            raise CacheError(
                f"{where}/data holds {data.dtype} rows of shape {list(data.shape[1:])}; its provenance "
                f"means {wanted.dtype} rows of shape {list(wanted.row_shape)}; rerun {self.rerun}"
            )

    def _read_ids(self, group: h5py.Group) -> list[str]:
        ids = group["ids"]
        if ids.ndim != 1 or h5py.check_string_dtype(ids.dtype) is None:
            raise CacheError(f"{self.path}: {group.name}/ids is not a one-dimensional string array")
        return [x.decode() for x in ids[()]]

    def _check_offsets(self, f: h5py.File) -> None:
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
            self._data = {}
        return self._file

    def _field_data(self, split: str, field: str) -> h5py.Dataset:
        """The ``data`` dataset of a field, looked up once per handle (the lookup costs more
        than reading one tweet's rows)."""
        handle = self._handle()
        if (split, field) not in self._data:
            self._data[split, field] = handle[split][field]["data"]
        return self._data[split, field]

    def get(self, split: str, field: str, index: int, limit: int | None = None) -> np.ndarray:
        """The rows of item ``index`` of ``field`` (only its first ``limit`` when given);
        float rows that are not all finite are refused."""
        offsets = self.offsets[split, field]
        start, end = offsets[index], offsets[index + 1]
        if limit is not None:
            end = min(end, start + limit)
        try:
            rows = self._field_data(split, field)[start:end]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CacheError(
                f"{self._item(split, field, index)} cannot be read ({type(error).__name__}: {error}); "
                f"rerun {self.rerun}"
            ) from error
        if rows.dtype.kind == "f" and not np.isfinite(rows).all():
            raise CacheError(
                f"{self._item(split, field, index)} holds non-finite values (NaN or Inf); rerun {self.rerun}"
            )
        return rows

    def check_rows(
        self, split: str, field: str, valid: Callable[[np.ndarray, np.ndarray], np.ndarray], rule: str
    ) -> None:
        """Refuse the first item of ``field`` in ``split`` with a row that ``valid`` rejects:
        ``valid(rows, items)`` takes every row of the split and the index of each row's item and
        returns a mask of the good rows; ``rule`` says what a good row is."""
        offsets = self.offsets[split, field]
        try:
            rows = self._field_data(split, field)[()]
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CacheError(
                f"{self.path}: {split}/{field} cannot be read ({type(error).__name__}: {error}); "
                f"rerun {self.rerun}"
            ) from error
        items = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        bad = np.flatnonzero(~valid(rows, items))
        if len(bad):
            row = bad[0]
            shown = [round(value, 6) for value in rows[row].tolist()]  # float32 0.6, not 0.6000000238
            raise CacheError(
                f"{self._item(split, field, items[row])} holds {shown}, not {rule}; rerun {self.rerun}"
            )

    def _item(self, split: str, field: str, index: int) -> str:
        return f"{self.path}: {split}/{field} item {self.ids[split][index]}"

    def row_shape(self, split: str, field: str) -> tuple[int, ...]:
        return self._field_data(split, field).shape[1:]

    def dtype(self, split: str, field: str) -> np.dtype:
        return self._field_data(split, field).dtype

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
        self._file, self._data = None, {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None, "_data": {}}


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
