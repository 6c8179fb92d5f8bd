"""scripts/error_factors.py: it must record a sample's factors without changing a single draw of the recipe."""
from __future__ import annotations

import numpy as np
import torch

from helpers import load_script
from SSIMQualityLib.data import MotionSliceDataset, SampleConfig

ef = load_script("error_factors")


def test_recording_leaves_every_sample_as_the_reference_makes_it_and_notes_its_factors():
    config = SampleConfig(p_clean=0.5)  # still samples too, which never ask the random motion
    indices = list(range(12))
    clean, corrupted, labels = MotionSliceDataset(100, seed=5, config=config).pairs(indices)
    recording = ef.RecordingDataset(100, seed=5, config=config)
    clean2, corrupted2, labels2 = recording.pairs(indices)
    assert torch.equal(labels, labels2)
    for a, b in zip(corrupted, corrupted2):
        assert torch.equal(a, b)
    names, _ = config.background_table()
    seen = {recording.factors[i]["motion"] for i in indices}
    assert seen <= {"kspace", "torchio", "none"} and "none" in seen and len(seen) > 1
    for i in indices:
        f = recording.factors[i]
        assert f["background"] in names and f["source"] in {"synthetic", "anatomy", "user"}
        assert isinstance(f["native"], bool)
        if f["native"]:
            assert clean2[i].shape == (256, 256)


def test_the_table_splits_the_squared_error_over_each_factors_levels():
    rows = [{"predicted": p, "true": t, "motion": m, "view": v}
            for p, t, m, v in [(0.9, 1.0, "none", "native 256"), (0.5, 0.7, "kspace", "4 sides cut"),
                               (0.8, 0.75, "torchio", "0 sides cut"), (0.6, 0.6, "kspace", "4 sides cut")]]
    out = ef.table(rows, factors=("motion", "view"))
    assert out["all"]["n"] == 4
    assert np.isclose(out["all"]["mu"], (-0.1 - 0.2 + 0.05 + 0.0) / 4)
    for name in ("motion", "view"):
        assert np.isclose(sum(level["share_sq_error"] for level in out[name].values()), 1.0)
    assert np.isclose(out["motion"]["kspace"]["share_sq_error"], 0.04 / (0.01 + 0.04 + 0.0025))
    assert list(out["view"]) == ["0 sides cut", "4 sides cut", "native 256"]


def test_sides_cut_counts_where_the_head_reaches_the_edge():
    img = torch.zeros(20, 30)
    img[5:15, 5:25] = 1.0
    assert ef._sides_cut(img) == 0
    img[:, 0:25] = 1.0
    assert ef._sides_cut(img) == 3
