import math

import numpy as np
import pytest
import torch

from SSIMQualityLib.slices import (INPUT_SIZE, SliceSampler, acquisition_axis, candidate_axes, fit_to_size,
                                   foreground_fraction, slicing_axis,
                                   normalize, prepare_input, resample)


def _head(shape):
    """A blob of 'head' in air, so every axis has foreground slices."""
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g ** 2 for g in grids))
    return (r < 0.8).astype(np.float32) * 100 + np.random.default_rng(0).random(shape).astype(np.float32)


def test_isotropic_picks_all_three_axes():
    vol = _head((40, 50, 60))
    sampler = SliceSampler(vol, (1.0, 1.0, 1.0), seed=0)
    axes = [sampler.sample().axis for _ in range(300)]
    counts = np.bincount(axes, minlength=3)
    assert all(c > 60 for c in counts), counts


@pytest.mark.parametrize("spacing,expected", [((3.0, 1.0, 1.0), 0), ((1.0, 1.0, 5.0), 2), ((0.9, 4.0, 0.9), 1)])
def test_anisotropic_only_thickest_axis(spacing, expected):
    vol = _head((30, 40, 50))
    sampler = SliceSampler(vol, spacing, seed=1)
    assert {sampler.sample().axis for _ in range(200)} == {expected}
    assert acquisition_axis(spacing) == expected
    assert candidate_axes(spacing) == (expected,)


def test_sampler_is_seeded_and_avoids_empty_slices():
    vol = np.zeros((60, 40, 40), dtype=np.float32)
    vol[20:40] = _head((20, 40, 40))
    a = [SliceSampler(vol, (1, 1, 1), seed=5).sample() for _ in range(1)]
    s1, s2 = SliceSampler(vol, (2, 1, 1), seed=5), SliceSampler(vol, (2, 1, 1), seed=5)
    picks1 = [s1.sample() for _ in range(50)]
    picks2 = [s2.sample() for _ in range(50)]
    assert picks1 == picks2
    assert all(20 <= p.index < 40 for p in picks1)
    assert a


def test_normalize_convention_numpy_and_torch_agree(sample_slices):
    for s in sample_slices:
        n = normalize(s)
        lo, hi = s.min(), np.percentile(s, 99.5)
        np.testing.assert_allclose(n, np.clip((s - lo) / (hi - lo), 0, 1), atol=1e-6)
        t = normalize(torch.tensor(s)).numpy()
        np.testing.assert_allclose(t, n, atol=1e-5)
    assert normalize(np.full((20, 20), 7.0)).max() == 0.0
    batch = torch.stack([torch.tensor(s[:30, :30]) for s in sample_slices[:3]])
    for i in range(3):
        np.testing.assert_allclose(normalize(batch)[i].numpy(), normalize(batch[i].numpy()), atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 16), (100, 256), (193, 157), (256, 256), (300, 120), (512, 512), (17, 600)])
def test_fit_to_size_always_256_in_unit_range(shape):
    rng = np.random.default_rng(0)
    img = rng.random(shape).astype(np.float32) * 500
    out = prepare_input(img)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # The longest side is resized to 256 (small matrices enlarged, not padded into a stamp) ...
    h, w = shape
    scale = INPUT_SIZE / max(h, w)
    nh, nw = min(INPUT_SIZE, max(1, round(h * scale))), min(INPUT_SIZE, max(1, round(w * scale)))
    top, left = (INPUT_SIZE - nh) // 2, (INPUT_SIZE - nw) // 2
    inside = torch.zeros(INPUT_SIZE, INPUT_SIZE, dtype=torch.bool)
    inside[top:top + nh, left:left + nw] = True
    assert float(out[~inside].abs().max()) == 0.0 if (~inside).any() else True  # ... the rest is zero padding
    assert float(out[inside].mean()) > 0.2
    # A slice whose longest side is already 256 keeps its pixels as they are.
    if max(shape) == INPUT_SIZE:
        n = normalize(torch.tensor(img))
        assert torch.equal(out[top:top + h, left:left + w], n)


def test_fit_to_size_numpy_in_numpy_out_and_batch():
    x = np.ones((3, 40, 30), dtype=np.float32)
    y = fit_to_size(x)
    assert isinstance(y, np.ndarray) and y.shape == (3, 256, 256)
    # 40 x 30 becomes 256 x 192 (aspect kept), padded to 256 x 256.
    assert y.sum() == pytest.approx(3 * 256 * 192)


def test_slicing_axis_given_or_acquisition_and_clear_error():
    from SSIMQualityLib.errors import SSIMQualityError

    assert slicing_axis([1.0, 1.0, 4.0]) == 2 and slicing_axis([1.0, 1.0, 4.0], 0) == 0
    with pytest.raises(SSIMQualityError, match="scan.nii: axis must be 0, 1, 2"):
        slicing_axis([1.0, 1.0, 1.0], 3, "scan.nii")


def test_near_empty_slices_are_not_foreground_even_with_negative_outliers():
    """Air above the head holds tiny values; with one negative outlier in the volume, a slice-relative test (or
    the volume's plain minimum) calls it all foreground and its normalised label is meaningless."""
    from SSIMQualityLib.scoring import foreground_slices

    rng = np.random.default_rng(0)
    vol = np.zeros((6, 40, 40), np.float32)
    vol[:4, 8:32, 8:32] = 200.0 + rng.normal(0, 5, (4, 24, 24))
    vol[4] = np.abs(rng.normal(0, 0.5, (40, 40)))  # near-empty: noise of the air only
    vol[0, 0, 0] = -20.0  # a negative outlier (resampled data)
    assert foreground_fraction(vol[4]) > 0.05, "the slice's own range is fooled"
    assert foreground_slices(vol).tolist() == [True, True, True, True, False, False]


@pytest.mark.parametrize("by_matrix", [False, True])
def test_fourier_resample_is_the_centred_kspace_crop_or_zero_fill(by_matrix, monkeypatch):
    """Recipe 11's acquisition in k-space: equal to cropping (or zero-padding) the centred FFT, odd and even
    sizes, both ways; a smooth image keeps its values, a sharp edge rings."""
    from SSIMQualityLib import dft
    from SSIMQualityLib.slices import fourier_resample

    if by_matrix:  # the GPU's path (matrix products), run on the CPU
        monkeypatch.setattr(dft, "MATMUL_DEVICES", {"cpu", "cuda"})
    x = torch.rand(2, 32, 40, dtype=torch.float64).float()

    def by_fft(img, oh, ow):
        h, w = img.shape[-2:]
        spec = torch.fft.fftshift(torch.fft.fft2(img.double()), dim=(-2, -1))
        out = torch.zeros(*img.shape[:-2], oh, ow, dtype=torch.complex128)
        mh, mw = min(h, oh), min(w, ow)
        out[..., oh // 2 - mh // 2:oh // 2 - mh // 2 + mh, ow // 2 - mw // 2:ow // 2 - mw // 2 + mw] = \
            spec[..., h // 2 - mh // 2:h // 2 - mh // 2 + mh, w // 2 - mw // 2:w // 2 - mw // 2 + mw]
        return (torch.fft.ifft2(torch.fft.ifftshift(out, dim=(-2, -1))) * (oh * ow) / (h * w)).abs().float()

    odd = torch.rand(2, 31, 39, dtype=torch.float64).float()
    for img in (x, odd):  # odd and even inputs; outputs odd and even, smaller, larger, one axis each way
        for size in [(16, 20), (17, 21), (48, 60), (33, 40), (32, 40), (45, 12), (2, 3), (1, 1)]:
            assert torch.allclose(fourier_resample(img, size), by_fft(img, *size), atol=2e-6), (img.shape, size)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    smooth = 1 + 0.5 * torch.cos(2 * math.pi * yy) * torch.cos(2 * math.pi * xx)
    assert torch.allclose(fourier_resample(smooth, (32, 32)), smooth[::2, ::2], atol=0.03)
    step = torch.zeros(64, 64)
    step[:, 20:44] = 1.0
    rung = fourier_resample(step, (64, 40))
    assert rung.max() > 1.05 and rung[:, :5].min() > 0.01  # overshoot and ripple; area averaging has neither
    assert resample(step[None, None], (64, 40)).max() <= 1.0 + 1e-6


def test_an_axis_of_true_is_refused_not_read_as_1():
    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.slices import slicing_axis

    with pytest.raises(SSIMQualityError, match="axis must be 0, 1, 2"):
        slicing_axis((1.0, 1.0, 1.0), True)
    assert slicing_axis((1.0, 1.0, 1.0), 1) == 1


def test_neighbour_correlation_tells_an_image_from_noise_whatever_its_scale():
    """An image's pixels correlate with their neighbours (the sample's slices: above 0.9), white noise's and a
    shuffled slice's do not; the figure does not move with gain or offset, and a constant slice gives 0 (not
    NaN, which would pass every threshold test)."""
    import torch

    from SSIMQualityLib.resources import sample_volume_path
    from SSIMQualityLib.slices import neighbour_correlation, noise_like_message
    from SSIMQualityLib.volumes import read_volume
    from SSIMQualityLib.vocabulary import MIN_NEIGHBOUR_CORRELATION

    a = torch.as_tensor(read_volume(sample_volume_path()).array[20:50:10], dtype=torch.float32)
    image = neighbour_correlation(a)
    assert (image > 0.9).all(), image
    torch.testing.assert_close(neighbour_correlation(3.0 * a + 500.0), image, rtol=0, atol=1e-4)
    g = torch.Generator().manual_seed(1)
    shuffled = a.reshape(len(a), -1)[:, torch.randperm(a[0].numel(), generator=g)].reshape(a.shape)
    noise = torch.rand(3, 40, 24, generator=g)
    for stack in (shuffled, noise):
        assert (neighbour_correlation(stack).abs() < MIN_NEIGHBOUR_CORRELATION / 2).all()
    assert neighbour_correlation(torch.full((2, 16, 16), 7.0)).tolist() == [0.0, 0.0]
    assert noise_like_message(float("nan"), "x") is None and noise_like_message(0.3, "x") is None
    assert noise_like_message(0.1, "x.nii").startswith("warning: x.nii: ")
