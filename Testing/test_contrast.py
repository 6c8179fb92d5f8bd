import numpy as np
import pytest

from SSIMQualityLib.contrast import (KINDS, AdaptiveHistogramEqualization, Gamma, Identity, Logarithmic,
                                     RandomContrast, Sigmoid, make_contrast)
from SSIMQualityLib.slices import normalize

DETERMINISTIC = [Gamma(0.5), Gamma(2.0), Logarithmic(1.0), Logarithmic(0.9, inverse=True), Sigmoid(0.4, 10.0),
                 AdaptiveHistogramEqualization(0.02)]


@pytest.mark.parametrize("t", DETERMINISTIC, ids=repr)
def test_keeps_unit_range_and_changes_image(t, sample_slices):
    img = normalize(sample_slices[1])
    out = t(img)
    assert out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - img).mean() > 0.005, "a contrast augmentation must change the image"


def test_known_values():
    x = np.array([[0.0, 0.25, 1.0]])
    np.testing.assert_allclose(Gamma(2.0)(x), [[0.0, 0.0625, 1.0]])
    np.testing.assert_allclose(Logarithmic(1.0)(x), [[0.0, np.log2(1.25), 1.0]])
    s = Sigmoid(0.5, 8.0)(x)
    assert s[0, 0] == pytest.approx(0.0) and s[0, 2] == pytest.approx(1.0)


def test_random_is_seeded_and_covers_every_kind(sample_slices):
    img = normalize(sample_slices[4])
    rc = RandomContrast(p=1.0)
    a = rc(img, seed=11)
    b = rc(img, seed=11)
    np.testing.assert_array_equal(a, b)
    kinds = {rc.sample(seed=i).name for i in range(60)}
    assert kinds == set(KINDS)
    assert any(not np.array_equal(rc(img, seed=i), a) for i in range(12, 16))


def test_probability_zero_is_identity_and_bad_parameters_refused():
    assert isinstance(RandomContrast(p=0.0).sample(seed=1), Identity)
    with pytest.raises(ValueError):
        Gamma(0)
    with pytest.raises(ValueError):
        Sigmoid(1.5, 3)
    with pytest.raises(ValueError):
        RandomContrast(kinds=["posterize"])
    with pytest.raises(ValueError):
        make_contrast("posterize")
    assert make_contrast("gamma", 0.7).gamma == 0.7


@pytest.mark.parametrize("t", DETERMINISTIC + [Identity()], ids=repr)
def test_a_slice_that_is_not_normalised_is_refused(t, sample_slices):
    """Clipped to [0, 1], a raw slice came back as a mask (every voxel above 1 at 1); round-off passes."""
    raw = np.asarray(sample_slices[1], dtype=np.float32)
    assert raw.max() > 10
    with pytest.raises(ValueError, match="normalised to"):
        t(raw)
    img = normalize(raw)
    np.testing.assert_array_equal(t(img * (1 + 1e-5)), t(np.minimum(img * (1 + 1e-5), 1.0)))


def test_draw_ranges_and_kinds_are_checked_when_made():
    """A reversed or negative range failed inside numpy (or drew NaN and overflowed); kinds="gamma" read as the
    kinds 'a', 'g', 'm'. Each is a BadParameterError, a ValueError as before."""
    from SSIMQualityLib.contrast import RandomAdaptiveHistogramEqualization, RandomGamma, RandomSigmoid
    from SSIMQualityLib.errors import BadParameterError

    for make, words in ((lambda: RandomGamma((2.5, 0.4)), "gamma_range must be"),
                        (lambda: RandomGamma((-1, 2)), "0 < low <= high"),
                        (lambda: RandomSigmoid(cutoff_range=(0.3, 1.2)), "< 1"),
                        (lambda: RandomAdaptiveHistogramEqualization((0.0, 0.03)), "clip_range"),
                        (lambda: RandomContrast(p=2.0), "p must be in")):
        with pytest.raises(BadParameterError, match=words):
            make()
    assert RandomContrast(kinds="gamma").kinds == ("gamma",)
    assert RandomGamma((0.7, 0.7)).sample(seed=0).gamma == pytest.approx(0.7)
