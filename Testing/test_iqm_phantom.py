"""The MRIQC metrics against hand-computed expectations on a phantom whose every voxel is known.

The phantom: an ellipsoidal head in Rayleigh-noise air, a bright 3-voxel skin
shell (the smallest class, standing in for CSF) around two tissues, each with
a skewed (exponential) spread so that its mean and median differ, and a
ghost planted in the air above the head.  The first array axis points up
(identity SimpleITK direction).
"""
import math

import numpy as np
import pytest
from scipy import ndimage

from SSIMQualityLib.iqm import (AIR_ALL, AIR_HAT, DIRECTIONS, IQM_NAMES, artefact_mask, cjv, compute_iqms,
                                direction_word, efc, segment, superior_axis)

UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # identity: array axis 0 (k) points superior
NOISE = 5.0   # Rayleigh scale of the air
GHOST = (slice(62, 68), slice(20, 30), slice(30, 40))  # 6 x 10 x 10 voxels well above the head


def make_phantom():
    rng = np.random.default_rng(7)
    shape = (90, 72, 72)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    head = ((z - 24) / 18.0) ** 2 + ((y - 36) / 26.0) ** 2 + ((x - 36) / 26.0) ** 2 < 1
    core = ndimage.binary_erosion(head, iterations=3)
    shell = head & ~core
    left = core & (x < 36)
    right = core & (x >= 36)
    v = np.hypot(rng.normal(0, NOISE, shape), rng.normal(0, NOISE, shape))  # Rayleigh air
    # Skewed tissues: a floor plus an exponential tail (capped so the classes never overlap).
    v[left] = 150 + np.minimum(rng.exponential(6.0, left.sum()), 30)
    v[right] = 220 + np.minimum(rng.exponential(9.0, right.sum()), 45)
    v[shell] = 330 + rng.normal(0, 3, shell.sum())
    v[GHOST] = 150 + rng.normal(0, 5, v[GHOST].shape)
    ghost = np.zeros(shape, bool)
    ghost[GHOST] = True
    # What the detection can find of it: the 6-connected opening (MRIQC's) keeps a box but not its 12 edges.
    found = ndimage.binary_opening(ghost, structure=ndimage.generate_binary_structure(3, 1))
    assert found.sum() == 600 - 4 * (4 + 8 + 8) - 8
    return {"v": v, "head": head, "left": left, "right": right, "ghost": ghost, "found": found}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _madsd(x):
    return 1.4826 * np.median(np.abs(x - np.median(x)))


def test_phantom_is_skewed(phantom):
    v = phantom["v"]
    for t in ("left", "right"):
        vals = v[phantom[t]]
        assert vals.mean() - np.median(vals) > 1.5, t  # mean ≠ median: the metrics' choice matters


def test_segmentation_recovers_the_tissues(phantom):
    m = segment(phantom["v"])
    inner = ndimage.binary_erosion(m.head, iterations=2)
    truth = {phantom["left"].tobytes(), phantom["right"].tobytes()}
    assert np.array_equal(m.head, phantom["head"])
    assert {(m.tissue_a).tobytes(), (m.tissue_b).tobytes()} == {(phantom["left"] & inner).tobytes(),
                                                               (phantom["right"] & inner).tobytes()}
    assert len(truth) == 2


def test_qi1_flags_the_ghost_and_not_the_noise(phantom):
    v, head = phantom["v"], phantom["head"]
    air = ~ndimage.binary_dilation(head, iterations=3)
    art = artefact_mask(v, air, head, detection="mriqc")
    assert np.array_equal(art, phantom["found"])  # the ghost (less its edges), and no noise voxel
    r = compute_iqms(v, direction=UP)
    hat = air & (np.arange(v.shape[0]) > np.nonzero(head)[0].mean())[:, None, None]
    assert r.qi1_air == AIR_HAT
    assert r.qi1 == pytest.approx(phantom["found"].sum() / hat.sum(), rel=1e-12)
    # Without orientation all background is the air region: same ghost, larger denominator.
    r_all = compute_iqms(v)
    assert r_all.qi1_air == AIR_ALL
    assert r_all.qi1 == pytest.approx(phantom["found"].sum() / air.sum(), rel=1e-12)
    # No ghost: QI1 is exactly zero (Rayleigh noise never passes 10 MAD-sigma).
    clean = v.copy()
    clean[GHOST] = np.hypot(*np.random.default_rng(1).normal(0, NOISE, (2,) + clean[GHOST].shape))
    assert compute_iqms(clean, direction=UP).qi1 == 0.0


def test_mriqc_distance_rule_drops_a_ghost_against_the_head(phantom):
    v, head = phantom["v"].copy(), phantom["head"]
    air = ~ndimage.binary_dilation(head, iterations=3)
    # A bright block hugging the head's top, within 10 % of the largest air distance.
    near = np.zeros(v.shape, bool)
    top = np.nonzero(head)[0].max()
    near[top + 4:top + 7, 30:42, 30:42] = True
    near &= air
    v[near] = 150
    dist = ndimage.distance_transform_edt(~head)
    assert (dist[near] / dist[air].max()).max() < 0.10
    assert not (artefact_mask(v, air, head, detection="mriqc") & near).any()
    assert (artefact_mask(v, air, head, detection="robust") & near).sum() > 0.5 * near.sum()


def test_cnr_is_mriqc_code_formula(phantom):
    v = phantom["v"]
    m = segment(v)
    air = ~ndimage.binary_dilation(phantom["head"], iterations=3)
    hat = air & (np.arange(v.shape[0]) > np.nonzero(phantom["head"])[0].mean())[:, None, None]
    bg = v[hat & ~phantom["found"]]          # the artefact is not noise
    a, b = v[m.tissue_a], v[m.tissue_b]
    expected = abs(np.median(a) - np.median(b)) / math.sqrt(bg.std() ** 2 + a.std() ** 2 + b.std() ** 2)
    got = compute_iqms(v, direction=UP).cnr
    assert got == pytest.approx(expected, rel=1e-12)
    # Means, or the ghost left in the air, would each give a measurably different figure.
    with_means = abs(a.mean() - b.mean()) / math.sqrt(bg.std() ** 2 + a.std() ** 2 + b.std() ** 2)
    with_ghost = abs(np.median(a) - np.median(b)) / math.sqrt(v[hat].std() ** 2 + a.std() ** 2 + b.std() ** 2)
    assert abs(with_means / got - 1) > 0.01 and abs(with_ghost / got - 1) > 0.01


def test_cjv_and_efc_are_their_formulas(phantom):
    v = phantom["v"]
    m = segment(v)
    a, b = v[m.tissue_a], v[m.tissue_b]
    assert cjv(v, m) == pytest.approx((_madsd(a) + _madsd(b)) / abs(np.median(a) - np.median(b)), rel=1e-12)
    x = np.abs(v).ravel()
    n = x.size
    r = x / np.sqrt((x ** 2).sum())
    expected = np.sum(r * np.log(r + 1e-16)) / (n / np.sqrt(n) * np.log(1 / np.sqrt(n)))
    assert efc(v) == pytest.approx(expected, rel=1e-12)
    assert compute_iqms(v, direction=UP).cjv == pytest.approx(cjv(v, m), rel=1e-12)


def test_directions_and_orientation():
    assert set(DIRECTIONS) == set(IQM_NAMES)
    assert direction_word("cnr") == "higher is better" and direction_word("qi1") == "lower is better"
    assert superior_axis((-1, 0, 0, 0, -1, 0, 0, 0, 1)) == (0, 1)
    assert superior_axis((1, 0, 0, 0, 0, -1, 0, 1, 0)) == (1, 1)
    s = math.sqrt(0.5)
    assert superior_axis((1, 0, 0, 0, s, -s, 0, s, s)) in {(0, 1), (1, 1)}
    assert superior_axis((1, 0, 0, 0, 1, 0, 0, 0, 1)[:6]) is None
