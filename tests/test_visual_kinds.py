"""Each kind of visual cells is one record of :data:`mner.tagger.VISUAL_KINDS`: the cache
fields, upstream caches and stages it names are those the pipeline writes and expects, and
an unknown kind is refused with the valid ones."""

import numpy as np
import pytest

from mner.cached.dataset import visual_limit
from mner.core.cache import CacheReader
from mner.features.visual import describe_cells
from mner.posts import UPSTREAM_CONFIGS
from mner.settings.visual import expected_caches
from mner.tagger import VISUAL_KINDS, visual_kind
from tests.synthetic import DEFAULT_VISUAL_PROVENANCE, StandInModel, write_synthetic, write_synthetic_visual

KINDS = list(VISUAL_KINDS.values())


def test_the_kinds_are_objects_grounded_grid_and_clue_words():
    assert list(VISUAL_KINDS) == ["objects", "grounded", "grid", "clue"]


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_each_kind_reads_fields_that_the_synthetic_caches_have(tmp_path, kind):
    """The image kinds read the visual cache, the clue kind a clue set's text cache."""
    prepared, text = write_synthetic(tmp_path, sizes=(2, 2, 2), clue_cells=True)
    visual, grounding = (CacheReader(path) for path in write_synthetic_visual(tmp_path, prepared))
    cells = {"visual": visual, "cells": CacheReader(text)}[kind.cache]
    for split in ("train", "valid", "test"):
        assert {kind.whole, kind.field} <= set(cells.fields(split))
        assert not kind.positions or "positions" in grounding.fields(split)
    assert kind.source is None or kind.source in visual.provenance


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_each_kind_names_an_upstream_cache_of_the_visual_features_and_its_stage(kind):
    """Its source is a cache a checkpoint records (the report opens it by that name), made by
    its stage; ``mner predict`` rebuilds that stage from the visual cache's provenance."""
    if kind.source is None:
        assert kind.stage is None and not kind.positions
        return
    assert expected_caches({})[kind.source]["stage"] == kind.stage
    assert set(UPSTREAM_CONFIGS[kind.source]) <= set(DEFAULT_VISUAL_PROVENANCE)


def test_every_upstream_cache_has_its_configs_for_predict():
    assert set(UPSTREAM_CONFIGS) == {kind.source for kind in KINDS if kind.source}


@pytest.mark.parametrize(
    ("name", "cell", "limit"),
    [
        ("objects", "object", 3),
        ("grounded", "grounded", 3),
        ("grid", "grid", None),
        ("clue", "clue word", None),
    ],
)
def test_each_kind_describes_and_counts_its_cells(name, cell, limit):
    kind = VISUAL_KINDS[name]
    cells = describe_cells(kind, np.zeros((2, 4), np.float32), ["a", "b"])
    assert [c["kind"] for c in cells] == ["image", cell, cell]
    assert visual_limit(StandInModel(name, max_visual=4)) == limit


def test_an_unknown_kind_is_refused_with_the_valid_ones():
    with pytest.raises(KeyError, match="unknown visual kind 'boxes'; valid: clue, grid, grounded, objects"):
        VISUAL_KINDS["boxes"]
    with pytest.raises(KeyError, match="unknown visual kind 'caption'; valid: clue, grid, grounded, objects"):
        visual_kind(StandInModel("caption"))
    assert visual_kind(StandInModel()) is None
