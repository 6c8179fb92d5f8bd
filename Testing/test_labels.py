import numpy as np
import pytest

from SSIMQualityLib.labels import NOT_SCORED, all_classes, clinical_class, equal_bin_class

EPS = 1e-6


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_every_equal_bin_edge(n):
    for k in range(1, n):
        edge = k / n
        assert equal_bin_class(edge, n) == k, f"edge {edge} belongs to the upper bin"
        assert equal_bin_class(edge - EPS, n) == k - 1
        assert equal_bin_class(edge + EPS, n) == k
    assert equal_bin_class(0.0, n) == 0
    assert equal_bin_class(1.0, n) == n - 1
    assert equal_bin_class(1.0 - EPS, n) == n - 1
    assert equal_bin_class(EPS, n) == 0


def test_out_of_range_values_are_clipped():
    assert equal_bin_class(-0.3, 5) == 0
    assert equal_bin_class(1.2, 5) == 4
    assert clinical_class(-0.2) == 3
    assert clinical_class(1.5) == 1


def test_clinical_edges():
    assert clinical_class(0.85) == 1
    assert clinical_class(0.85 - EPS) == 2
    assert clinical_class(0.85 + EPS) == 1
    assert clinical_class(0.60) == 2
    assert clinical_class(0.60 - EPS) == 3
    assert clinical_class(0.60 + EPS) == 2
    assert clinical_class(0.0) == 3
    assert clinical_class(1.0) == 1


def test_vectorised_and_monotone():
    s = np.linspace(-0.1, 1.1, 2001)
    for n in (3, 5, 10):
        c = equal_bin_class(s, n)
        assert np.all(np.diff(c) >= 0)
        assert set(c.tolist()) == set(range(n))
    cc = clinical_class(s)
    assert np.all(np.diff(cc) <= 0)  # clinical class 1 is the best
    cols = all_classes([0.5, 0.9])
    assert cols["class10"].tolist() == [5, 9]
    assert cols["clinical_class"].tolist() == [3, 1]


def test_bad_bin_count():
    with pytest.raises(ValueError):
        equal_bin_class(0.5, 1)
    with pytest.raises(ValueError):
        equal_bin_class(0.5, 2.5)


def test_a_slice_not_scored_has_no_class():
    # NaN is a slice that was not scored: it used to read as "rescan" (clinical 3) and as a random bin.
    cols = all_classes([float("nan"), 0.9, np.nan])
    for name, values in cols.items():
        assert values.tolist()[0] == NOT_SCORED == values.tolist()[2], name
    assert cols["clinical_class"].tolist()[1] == 1 and cols["class10"].tolist()[1] == 9
    assert clinical_class(float("nan")) == -1 and equal_bin_class(np.nan, 3) == -1


def test_schemes_agree_on_a_shared_edge_at_float32():
    """0.6 is an edge of the clinical scheme and of 5 and 10 equal bins; a float32 prediction of 0.6 is
    0.59999996, which the bins put at or above 0.6 and the clinical scheme put below it ("rescan")."""
    below, above = [np.float32(0.6)], [np.float32(0.6)]
    for _ in range(64):  # the 64 float32 values on each side of the edge (0.59999985 split the schemes)
        below.append(np.nextafter(below[-1], np.float32(0.0)))
        above.append(np.nextafter(above[-1], np.float32(1.0)))
    p = np.concatenate([np.array(below + above, np.float32), np.float32([0.5999, 0.6001]),
                        np.random.default_rng(0).random(1000).astype(np.float32)])
    at_least = clinical_class(p) <= 2
    assert np.array_equal(at_least, equal_bin_class(p, 5) >= 3)
    assert np.array_equal(at_least, equal_bin_class(p, 10) >= 6)
