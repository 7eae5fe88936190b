"""The ``report`` params section (:class:`ReportConfig`), apart from the renderer
(:mod:`mner.report`) and the analysis (:mod:`mner.analysis`) that both read it, so neither
stage, nor the params check, depends on the other's code."""

from __future__ import annotations

from dataclasses import dataclass

from mner.core.config import Count, NonNegative


@dataclass(frozen=True)
class ReportConfig:
    baseline: str = "transformer-crf"  # the text-only run the case study compares with
    case_studies: NonNegative = 8  # tweets in the case-study table
    speed_batches: NonNegative = 0  # test batches timed for the efficiency table (0: all)
    batch_size: Count = 32
    visual_use: bool = True  # the visual-use section (mner visual-use of each model's main run, first seed)
