"""The published results of both papers, as printed (percent), for the report's tables.

Each row: per-type F1 (PER, LOC, ORG, MISC; None where the paper gives none) and overall
P, R, F1, per dataset. Sources: FMIT (Lu et al., 2022) Tables 2-5, GEI (Zhao et al.,
2022) Table 1; beside the runs that read images as text, the overall F1 of the systems that
do so: ITA (Wang et al., NAACL 2022: captions, object tags and OCR text, and its text-only
baseline, the same XLM-R-large CRF), MoRe (Wang et al., Findings of EMNLP 2022: retrieved
text) and PGIM (Li et al., Findings of EMNLP 2023: ChatGPT knowledge from the tweet and its
image's caption).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

COLUMNS = ("PER", "LOC", "ORG", "MISC", "P", "R", "F1")
T15, T17 = "twitter2015", "twitter2017"


def _row(*values: float | None) -> dict[str, float | None]:
    return dict(zip(COLUMNS, values))


def _prf(p: float | None, r: float | None, f1: float) -> dict[str, float | None]:
    return _row(None, None, None, None, p, r, f1)


# FMIT Table 2 (text-only and multimodal approaches)
FMIT_MAIN = {
    "CNN-BiLSTM-CRF": {
        T15: _row(80.86, 75.39, 47.77, 32.61, 66.24, 68.09, 67.15),
        T17: _row(87.99, 77.44, 74.02, 60.82, 80.00, 78.76, 79.37),
    },
    "HBiLSTM-CRF": {
        T15: _row(82.34, 76.83, 51.59, 32.52, 70.32, 68.05, 69.17),
        T17: _row(87.91, 78.57, 76.67, 59.32, 82.69, 78.16, 80.37),
    },
    "BERT": {
        T15: _row(84.72, 79.91, 58.26, 38.81, 68.30, 74.61, 71.32),
        T17: _row(90.88, 84.00, 79.25, 61.63, 82.19, 83.72, 82.95),
    },
    "BERT-CRF": {
        T15: _row(84.74, 80.51, 60.27, 37.29, 69.22, 74.59, 71.81),
        T17: _row(90.25, 83.05, 81.13, 62.21, 83.32, 83.57, 83.44),
    },
    "VG-ATT": {
        T15: _row(82.66, 77.21, 55.06, 35.25, 73.96, 67.90, 70.80),
        T17: _row(89.34, 78.53, 79.12, 62.21, 83.41, 80.38, 81.87),
    },
    "Ada-Co-ATT": {
        T15: _row(81.98, 78.95, 53.07, 34.02, 72.75, 68.74, 70.69),
        T17: _row(89.63, 77.46, 79.24, 62.77, 84.16, 80.24, 82.15),
    },
    "UMT": {
        T15: _row(85.24, 81.58, 63.03, 39.45, 71.67, 75.23, 73.41),
        T17: _row(91.56, 84.73, 82.24, 70.10, 85.28, 85.34, 85.31),
    },
    "UMGF": {
        T15: _row(84.26, 83.17, 62.45, 42.42, 74.49, 75.21, 74.85),
        T17: _row(91.92, 85.22, 83.13, 69.83, 86.54, 84.50, 85.51),
    },
    "FMIT (l=1)": {
        T15: _row(84.83, 83.19, 62.64, 41.13, 74.18, 75.03, 74.60),
        T17: _row(91.75, 85.06, 82.38, 69.84, 85.55, 85.29, 85.42),
    },
    "FMIT (l=3)": {
        T15: _row(86.77, 83.93, 64.88, 42.97, 75.11, 77.43, 76.25),
        T17: _row(93.14, 86.52, 83.93, 70.90, 87.51, 86.08, 86.79),
    },
    "FMIT (l=6)": {
        T15: _row(86.45, 84.19, 64.35, 43.68, 76.28, 75.67, 75.97),
        T17: _row(93.04, 85.94, 84.56, 71.20, 86.80, 86.26, 86.53),
    },
    "FMIT (l=12)": {
        T15: _row(85.79, 83.91, 62.87, 41.55, 74.92, 75.63, 75.27),
        T17: _row(92.61, 86.03, 83.34, 70.78, 86.32, 85.50, 85.91),
    },
}

# GEI Table 1 (overall P/R/F1 only); the rows FMIT's table lacks, and GEI with its ablations
GEI_MAIN = {
    "OCSGA": {T15: _prf(74.71, 71.21, 72.92), T17: _prf(None, None, None)},
    "Object-AGBAN": {T15: _prf(74.13, 72.39, 73.25), T17: _prf(None, None, None)},
    "UMGF (GEI's rerun)": {T15: _prf(72.43, 74.09, 73.25), T17: _prf(85.33, 84.32, 84.82)},
    "Captions": {T15: _prf(68.52, 74.61, 71.49), T17: _prf(86.16, 87.49, 86.82)},
    "GEI": {T15: _prf(73.39, 75.51, 74.43), T17: _prf(87.50, 86.01, 86.75)},
}
GEI_ABLATIONS = {
    "GEI": GEI_MAIN["GEI"],
    "-Entity-level interaction": {T15: _prf(72.49, 75.11, 73.78), T17: _prf(87.09, 85.42, 86.25)},
    "-Span Detection": {T15: _prf(71.67, 74.00, 72.87), T17: _prf(83.12, 85.27, 84.18)},
    "+Image Region": {T15: _prf(72.64, 75.40, 73.99), T17: _prf(86.42, 85.27, 85.84)},
}

# FMIT Table 5
FMIT_ABLATIONS = {
    "FMIT (l=3)": FMIT_MAIN["FMIT (l=3)"],
    "w/o Obj": {
        T15: _row(85.55, 80.73, 63.37, 38.61, 73.44, 74.25, 73.84),
        T17: _row(92.16, 85.23, 81.57, 68.97, 85.36, 84.69, 85.02),
    },
    "w/o Rel": {
        T15: _row(84.13, 79.95, 62.64, 38.86, 72.87, 73.38, 73.12),
        T17: _row(91.06, 85.36, 81.24, 67.83, 84.29, 84.76, 84.52),
    },
    "w/o EBD": {
        T15: _row(86.21, 83.26, 64.05, 42.21, 73.38, 77.95, 75.60),
        T17: _row(92.73, 86.14, 82.55, 69.47, 85.55, 86.67, 86.11),
    },
}

# FMIT Table 4, keyed by the test dataset: "twitter2015" is Twitter-2017 -> Twitter-2015
FMIT_CROSS = {
    "UMT": {
        T15: _row(80.34, 71.30, 47.97, 20.13, 64.67, 63.59, 64.13),
        T17: _row(81.24, 67.89, 39.52, 31.87, 67.80, 55.23, 60.87),
    },
    "UMGF": {
        T15: _row(79.62, 71.94, 49.48, 20.24, 67.00, 62.81, 66.21),
        T17: _row(81.83, 72.25, 41.20, 32.00, 69.88, 56.92, 62.74),
    },
    "FMIT (l=3)": {
        T15: _row(82.05, 72.33, 50.82, 21.28, 66.72, 69.73, 68.19),
        T17: _row(83.51, 71.96, 42.93, 33.46, 70.65, 59.22, 64.43),
    },
}

# FMIT Table 3: interaction phase, speed relative to UMGF and parameters
FMIT_EFFICIENCY = {
    "UMT": ("1.93x", "403M"),
    "UMGF": ("1x", "231M"),
    "FMIT (l=1)": ("27.73x", "12M"),
    "FMIT (l=3)": ("10.17x", "35M"),
    "FMIT (l=6)": ("6.12x", "69M"),
}

# images as text: overall F1 only (fine-tuned XLM-R-large there)
ITA = {
    "XLM-R-large CRF (text only)": {T15: _prf(None, None, 77.04), T17: _prf(None, None, 89.11)},
    "ITA": {T15: _prf(None, None, 78.03), T17: _prf(None, None, 89.75)},
}
MORE = {"MoRe": {T15: _prf(None, None, 77.79), T17: _prf(None, None, 90.28)}}
PGIM = {"PGIM": {T15: _prf(None, None, 79.33), T17: _prf(None, None, 91.43)}}

# The published rows our registered models reproduce (frozen encoder here), each by the
# configuration that makes it: the model and the switches of its config that the row sets,
# beside the model's SWITCHES (the paper's setting of every switch that makes another row).
# Widths may differ (ours are often narrower than the papers'): the row a run is compared
# with is the one of the same configuration, or none (:func:`counterpart`).
SWITCHES = {
    "gei": {
        "entity_level_interaction": True,
        "span_detection": True,
        "image_region": False,
        "clue_cells": False,
    },
    "fmit": {"layers": 3, "objects": True, "relative": True, "ebd": True, "clue_cells": False},
    "umt": {"span_detection": True, "visual_gate": True, "clue_cells": False},
}
FMIT_LAYERS = (1, 3, 6, 12)  # the paper's l of its FMIT (l=<l>) rows
COUNTERPARTS = {
    "BERT": ("linear-softmax", {}),
    "BERT-CRF": ("linear-crf", {}),
    "GEI": ("gei", {}),
    "-Entity-level interaction": ("gei", {"entity_level_interaction": False}),
    "-Span Detection": ("gei", {"entity_level_interaction": False, "span_detection": False}),
    "+Image Region": ("gei", {"image_region": True}),
    **{f"FMIT (l={layers})": ("fmit", {"layers": layers}) for layers in FMIT_LAYERS},
    "w/o Obj": ("fmit", {"objects": False}),  # the ablations of FMIT (l=3)
    "w/o Rel": ("fmit", {"relative": False}),
    "w/o EBD": ("fmit", {"ebd": False}),
    "UMT": ("umt", {}),
}


def counterpart(model: str, config: Mapping[str, Any]) -> str | None:
    """The published row that a run of the registered ``model`` with ``config`` (its
    checkpoint's) reproduces: the row of :data:`COUNTERPARTS` whose switches, and the
    model's other :data:`SWITCHES`, the config all has (a switch it lacks, as an older
    checkpoint may, at the paper's setting); None when no row has its configuration (e.g.
    FMIT with 2 layers, or an ablation of FMIT with 1)."""
    paper = SWITCHES.get(model, {})
    for row, (row_model, switches) in COUNTERPARTS.items():
        wanted = {**paper, **switches}
        if row_model == model and all(
            config.get(key, paper.get(key)) == value for key, value in wanted.items()
        ):
            return row
    return None


DATASET_NAMES = {T15: "Twitter-2015", T17: "Twitter-2017"}  # as the papers name them


def dataset_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


class Table(NamedTuple):
    """A published table as the report shows it: its rows, their source beside each row,
    and the table it is in the paper."""

    rows: dict[str, dict[str, dict[str, float | None]]]
    source: str  # e.g. "FMIT T2"
    title: str  # e.g. "FMIT Table 2"


MAIN = (Table(FMIT_MAIN, "FMIT T2", "FMIT Table 2"), Table(GEI_MAIN, "GEI T1", "GEI Table 1"))
CROSS = (Table(FMIT_CROSS, "FMIT T4", "FMIT Table 4"),)
IMAGE_TEXT = (Table(ITA, "ITA", "ITA"), Table(MORE, "MoRe", "MoRe"), Table(PGIM, "PGIM", "PGIM"))
# the papers' ablation tables, by the registered model they ablate, with its name in the paper
ABLATIONS = {
    "gei": ("GEI", Table(GEI_ABLATIONS, "GEI T1", "GEI Table 1")),
    "fmit": ("FMIT", Table(FMIT_ABLATIONS, "FMIT T5", "FMIT Table 5")),
}
