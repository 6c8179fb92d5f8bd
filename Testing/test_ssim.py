import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity as sk_ssim

from SSIMQualityLib.slices import normalize
from SSIMQualityLib.ssim import ssim, ssim_map, ssim_numpy


def _pairs(rng, shape=(64, 80), n=6):
    a = rng.random((n,) + shape)
    sigma = np.geomspace(0.005, 0.6, n)[:, None, None]  # from nearly identical to mostly noise
    b = np.clip(a + rng.normal(0, 1, a.shape) * sigma, 0, 1)
    return a, b


def test_matches_skimage_on_random_images_batched_and_single():
    rng = np.random.default_rng(0)
    a, b = _pairs(rng)
    ref = np.array([sk_ssim(x, y, data_range=1.0) for x, y in zip(a, b)])
    batched = ssim(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)).numpy()
    assert np.abs(batched - ref).max() <= 1e-4
    for x, y, r in zip(a, b, ref):
        assert abs(ssim_numpy(x, y) - r) <= 1e-4
    assert ref.min() < 0.5 < ref.max()  # the cases cover a wide range


def test_matches_skimage_on_real_slices(sample_slices):
    rng = np.random.default_rng(1)
    for s in sample_slices:
        clean = normalize(s)
        noisy = normalize(s + rng.normal(0, 0.1 * s.max(), s.shape).astype(np.float32))
        ref = sk_ssim(clean.astype(np.float64), noisy.astype(np.float64), data_range=1.0)
        got = float(ssim(torch.tensor(clean), torch.tensor(noisy)))
        assert abs(got - ref) <= 1e-4, (got, ref)


def test_identical_images_give_one_and_batch_shape_kept():
    x = torch.rand(2, 3, 40, 40)
    s = ssim(x, x)
    assert s.shape == (2, 3)
    assert torch.allclose(s, torch.ones(2, 3), atol=1e-6)
    assert float(ssim(torch.zeros(30, 30), torch.zeros(30, 30))) == pytest.approx(1.0)


def test_map_shape_is_valid_region_and_bad_shapes_refused():
    x = torch.rand(50, 60)
    assert ssim_map(x, x).shape == (44, 54)
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(10, 10), torch.rand(10, 11))
    with pytest.raises(ValueError, match="at least 7"):
        ssim(torch.rand(5, 5), torch.rand(5, 5))


def test_symmetric_and_anticorrelated_is_negative():
    rng = np.random.default_rng(2)
    a = torch.tensor(rng.random((32, 32)))
    b = torch.tensor(rng.random((32, 32)))
    assert float(ssim(a, b)) == pytest.approx(float(ssim(b, a)), abs=1e-12)
    assert float(ssim(a, 1 - a)) < 0
