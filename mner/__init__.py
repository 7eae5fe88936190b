"""Multimodal named entity recognition on social-media posts (GEI, FMIT, UMT); the errors in what
a user gives, and how a stage shows them."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


class InputError(ValueError):
    """Something a user gave is wrong (a params value, a cache, a checkpoint, a data file);
    ``str()`` names it and what to do, so a stage shows it as one line (:func:`run_stage`)."""


def run_stage(main: Callable[[], None]) -> int:
    """Run a stage script's ``main``; an :class:`InputError` is printed as one line on
    stderr, without a traceback, and gives exit status 2."""
    try:
        main()
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        if getattr(error, "hdf5_left_open", False):  # HDF5 would crash at exit flushing the failed file
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2
    return 0
