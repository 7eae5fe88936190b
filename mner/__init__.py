"""Multimodal named entity recognition on social-media posts (GEI, FMIT)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
