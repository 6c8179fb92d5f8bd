"""Batched CLAHE (SSIMQualityLib.clahe) against scikit-image's equalize_adapthist."""
import numpy as np
import pytest
import torch
from skimage import exposure
from skimage.exposure._adapthist import clip_histogram
from torch.utils._python_dispatch import TorchDispatchMode

from SSIMQualityLib import clahe
from SSIMQualityLib.clahe import equalize_adapthist_batch, kernel_size_for
from SSIMQualityLib.dft import HOST_READ_OPS
from SSIMQualityLib.slices import normalize

CLIP_LIMITS = (0.005, 0.01, 0.03)


def head_slice(shape, rng):
    """A head-like slice in [0, 1]: exact-zero air, a bright skull ring, textured brain, blobs, noise."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    y = (y - h / 2 + rng.uniform(-0.05, 0.05) * h) / (h / 2)
    x = (x - w / 2 + rng.uniform(-0.05, 0.05) * w) / (w / 2)
    r2 = (x / rng.uniform(0.6, 0.85)) ** 2 + (y / rng.uniform(0.7, 0.9)) ** 2
    head, brain = r2 < 1, r2 < 0.85 ** 2
    img = np.zeros(shape)
    img[head] = 0.9
    img[brain] = 0.45 + 0.1 * np.cos(6 * x[brain] + rng.uniform(0, 6)) * np.sin(5 * y[brain])
    for _ in range(6):
        cy, cx = rng.uniform(-0.4, 0.4, 2)
        blob = brain & ((x - cx) ** 2 + (y - cy) ** 2 < rng.uniform(0.05, 0.2) ** 2)
        img[blob] = rng.uniform(0.1, 0.8)
    img[head] += rng.normal(0, 0.02, int(head.sum()))
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def stacks():
    """Eight 256 x 256 head slices, one 96 x 128 and one 384 x 320 (each shape its own stack)."""
    rng = np.random.default_rng(20240611)
    return [np.stack([head_slice((256, 256), rng) for _ in range(8)]),
            head_slice((96, 128), rng)[None], head_slice((384, 320), rng)[None]]


def skimage_clahe(image, clip_limit, kernel_fraction=0.125):
    """The project's call (contrast.AdaptiveHistogramEqualization.apply)."""
    kernel = tuple(max(2, int(round(s * kernel_fraction))) for s in image.shape)
    return exposure.equalize_adapthist(image, kernel_size=kernel, clip_limit=clip_limit)


def ours(images, clip_limit, **kwargs):
    return equalize_adapthist_batch(torch.from_numpy(np.asarray(images)), clip_limit, **kwargs).numpy()


@pytest.mark.parametrize("clip_limit", CLIP_LIMITS)
def test_matches_scikit_image_on_head_slices(stacks, clip_limit):
    diffs = []
    for s in stacks:
        mine, theirs = ours(s, clip_limit), np.stack([skimage_clahe(im, clip_limit) for im in s])
        # The very numbers of scikit-image, in float32:
        np.testing.assert_array_equal(mine, theirs.astype(np.float32))
        diffs.append(np.abs(mine - theirs).ravel())
    diff = np.concatenate(diffs)
    # Measured for each clip limit: mean 4.6e-9 to 4.9e-9, 99th percentile 2.9e-8, max 3.0e-8 (the
    # float32 rounding: half an ulp at 1 is 3e-8).  With one float32 ulp of slack:
    assert diff.mean() < 2e-8
    assert np.percentile(diff, 99) < 6e-8
    assert diff.max() < 6e-8


def test_matches_scikit_image_on_the_sample_and_float32(sample_slices):
    """Real slices of odd sizes (tiles reaching past the image) and float32 input."""
    for i, s in enumerate(sample_slices):
        img = normalize(s).astype(np.float32)
        clip_limit = CLIP_LIMITS[i % 3]
        # scikit-image works in float32 on float32 input and returns float32: same numbers.
        np.testing.assert_array_equal(ours(img[None], clip_limit)[0], skimage_clahe(img, clip_limit))


def test_kernel_rule_is_the_projects():
    assert kernel_size_for((256, 256)) == (32, 32)
    assert kernel_size_for((96, 128)) == (12, 16)
    assert kernel_size_for((10, 20)) == (2, 2)  # never below 2
    assert kernel_size_for((384, 320), kernel_fraction=0.25) == (96, 80)


def _clipped(hists, limits, total):
    """Histograms (rows) clipped at their limits: (hist, clim, excess, strides), ready to deal out."""
    hist = torch.from_numpy(np.stack(hists)).to(torch.int32)
    clim = torch.tensor(limits, dtype=torch.int32).view(-1, 1)
    excess = torch.empty_like(clim)
    clahe._clip(hist, clim, total, excess, (torch.empty_like(hist), torch.empty_like(hist)))
    return hist, clim, excess, torch.from_numpy(clahe._stride_table(hist.shape[1]))


def _redistribute(hists, limits, total, first_steps):
    hist, clim, excess, strides = _clipped(hists, limits, total)
    clahe._deal_out(hist, clim, total, excess, strides, 50, torch.empty((2,) + hist.shape, dtype=torch.int32),
                    first_steps=first_steps)
    return hist.numpy()


def _one_pass(hists, limits, total):
    """The histograms after clipping and one full dealing pass (every ``index`` once), no more."""
    hist, clim, excess, strides = _clipped(hists, limits, total)
    clahe._deal_all_rows(hist, clim, total, excess, strides, hist.shape[1])
    return hist.numpy()


def multi_pass_histograms(rng, total_bins=256, rows=40):
    """Rows on which scikit-image deals for several full passes: every bin at the limit but a few, far
    below it and early in the histogram (index i reaches bin j only for i <= j, so early bins take few
    counts per pass); what the clipped bin held over the limit is the excess.  One limit, one total."""
    clim = 40
    out = []
    for _ in range(rows):
        h = np.full(total_bins, clim)
        free = rng.choice(48, size=int(rng.integers(1, 12)), replace=False)
        h[free] = rng.integers(0, clim // 2, size=free.size)
        h[rng.choice(np.setdiff1d(np.arange(total_bins), free))] += clim * total_bins - h.sum()
        out.append(h)
    return out, [clim] * rows, clim * total_bins


@pytest.mark.parametrize("first_steps", [0, 3, clahe._DEVICE_DEAL_STEPS, clahe._MANY_TILES_DEAL_STEPS, 256])
def test_redistribution_replays_scikit_image(first_steps):
    """Clipping and dealing out the excess count for count, on hard cases: tiny limits, empty bins,
    passes that stall (every bin at the limit) and many passes; whatever the number of steps taken on
    all rows at once first (a GPU's, ``first_steps``) before the rows still dealing go on one by one."""
    rng = np.random.default_rng(3)
    total, nbins = 64, 256
    hists, limits = [], []
    for clim in (1, 2, 3, 5, 9, 40):
        for _ in range(40):
            occupied = rng.choice(nbins, size=rng.integers(1, 60), replace=False)
            hists.append(np.bincount(rng.choice(occupied, size=total), minlength=nbins))
            limits.append(clim)
    expected = np.stack([clip_histogram(h.copy(), c) for h, c in zip(hists, limits)])
    np.testing.assert_array_equal(_redistribute(hists, limits, total, first_steps), expected)
    # Several full passes: the check that a pass changed something compares with the excess before that
    # pass (an alias of the running excess once stopped all of these rows after one pass).
    hists, limits, total = multi_pass_histograms(rng)
    expected = np.stack([clip_histogram(h.copy(), c) for h, c in zip(hists, limits)])
    assert (_one_pass(hists, limits, total) != expected).any(axis=1).mean() > 0.5  # they do need a second pass
    np.testing.assert_array_equal(_redistribute(hists, limits, total, first_steps), expected)


def test_batch_equals_single_images_and_per_image_limits(stacks):
    images = stacks[0][:6]
    limits = np.array([0.005, 0.01, 0.015, 0.02, 0.025, 0.03])
    batched = ours(images, torch.from_numpy(limits))
    same_limit = ours(images, 0.02)
    for i, (img, cl) in enumerate(zip(images, limits)):
        assert np.abs(batched[i] - ours(img[None], float(cl))[0]).max() <= 1e-6
        assert np.abs(same_limit[i] - ours(img[None], 0.02)[0]).max() <= 1e-6
    # float32 limits that are not on an integer count boundary give the same counts.
    assert np.array_equal(ours(images, torch.tensor(limits, dtype=torch.float32)), batched)


def test_whole_stack_path_equals_chunked_path(stacks, monkeypatch):
    """GPUs run the stack as one chunk; the same code on the CPU must give the same numbers."""
    images = stacks[0][:4, :200, :150]  # tiles reach past the image; a non-contiguous view
    limits = torch.tensor([0.005, 0.01, 0.02, 0.03], dtype=torch.float64)
    chunked = ours(images, limits)
    monkeypatch.setattr(clahe, "_whole_stack", lambda device: True)
    np.testing.assert_array_equal(ours(images, limits), chunked)
    np.testing.assert_allclose(chunked, np.stack([skimage_clahe(im, float(cl)) for im, cl in zip(images, limits)]),
                               rtol=0, atol=6e-8)


def test_whole_stack_path_builds_one_images_tables_on_the_host(stacks, monkeypatch):
    """The host's index tables must not grow with the stack: built for every image, they were 8 bytes a pixel
    made in numpy and copied to the GPU at every call (0.9 s for 1,024 images of 192 x 160 on a 2-core CPU).
    The chunked path's tables cover its chunk of several images, which keeps this from passing by accident."""
    images = stacks[0][:6, :96, :80]
    sizes = []
    real = clahe._geometry

    def spy(*args):
        geo = real(*args)
        sizes.append(geo.hist_geo.shape[0])
        return geo

    monkeypatch.setattr(clahe, "_geometry", spy)
    chunked = ours(images, 0.01)
    monkeypatch.setattr(clahe, "_whole_stack", lambda device: True)
    np.testing.assert_array_equal(ours(images, 0.01), chunked)
    assert sizes == [2, 1], sizes  # the CPU chunks two 96 x 80 images: their 8 x 8 tiles fill 32,768 bins


class _HostReads(TorchDispatchMode):
    """Counts the operations that make a GPU's host wait for the device (``dft.HOST_READ_OPS``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in HOST_READ_OPS
        return func(*args, **(kwargs or {}))


def test_whole_stack_path_reads_back_once(stacks, monkeypatch):
    """On a GPU every read of a device value stalls it.  The whole-stack path reads one (which tiles still
    deal after the first steps) where the chunked path reads one per step and per check: 21 per 64 head
    slices before, measured on the factory's canvases.  The chunked path still reads (a CPU waits for
    nothing), which keeps this count from passing by accident."""
    images = torch.from_numpy(np.concatenate([stacks[0], 1.2 * stacks[0] - 0.1]))  # out-of-range values too
    limits = torch.linspace(0.005, 0.03, len(images), dtype=torch.float64)
    with _HostReads() as chunked:
        expected = equalize_adapthist_batch(images, limits)
    monkeypatch.setattr(clahe, "_whole_stack", lambda device: True)
    with _HostReads() as whole:
        got = equalize_adapthist_batch(images, limits)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert whole.count == 1 and chunked.count > 5, (whole.count, chunked.count)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu(stacks):
    x = torch.from_numpy(stacks[0])
    limits = torch.linspace(0.005, 0.03, len(x), dtype=torch.float64)
    cpu = equalize_adapthist_batch(x, limits)
    gpu = equalize_adapthist_batch(x.cuda(), limits.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=0)


def test_output_range_shape_dtype(stacks):
    for s in stacks:
        for dtype in (torch.float64, torch.float32):
            out = equalize_adapthist_batch(torch.from_numpy(s).to(dtype), 0.01)
            assert out.shape == s.shape and out.dtype == torch.float32 and out.device.type == "cpu"
            assert float(out.min()) == 0.0 and float(out.max()) == 1.0


def test_constant_and_out_of_range_images():
    rng = np.random.default_rng(1)
    images = np.stack([np.zeros((64, 64)), np.full((64, 64), 0.5), np.ones((64, 64)), head_slice((64, 64), rng)])
    out = ours(images, 0.01)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out, np.stack([skimage_clahe(im, 0.01) for im in images]), rtol=0, atol=6e-8)
    # Values outside [0, 1] are clamped (scikit-image would refuse them).
    np.testing.assert_array_equal(ours(images * 1.5 - 0.25, 0.01), ours(np.clip(images * 1.5 - 0.25, 0, 1), 0.01))


def local_contrast(image, inside):
    """Mean absolute difference between neighbouring pixels that are both inside."""
    down = np.abs(np.diff(image, axis=0))[inside[1:] & inside[:-1]]
    right = np.abs(np.diff(image, axis=1))[inside[:, 1:] & inside[:, :-1]]
    return down.mean() + right.mean()


def test_clip_limit_limits_the_local_contrast(stacks):
    """A higher clip limit lets more of the local histograms through, so local contrast rises, as
    with scikit-image; without clipping (limit 0: plain AHE) it is highest.  Ignoring the clip
    limit would give the same image for every limit and fail this."""
    img = stacks[0][0]
    inside = img > 0
    limits = (0.005, 0.01, 0.03, 0.0)
    contrast = [local_contrast(ours(img[None], cl)[0], inside) for cl in limits]
    expected = [local_contrast(skimage_clahe(img, cl), inside) for cl in limits]
    # Measured (scikit-image and here alike): 0.061, 0.12, 0.25, 0.29; the input: 0.058.
    assert local_contrast(img, inside) < contrast[0] < contrast[1] < contrast[2] < contrast[3]
    assert contrast[2] > 3 * contrast[0]
    np.testing.assert_allclose(contrast, expected, rtol=1e-5)


def test_rejects_bad_arguments():
    x = torch.rand(2, 32, 32)
    with pytest.raises(ValueError):
        equalize_adapthist_batch(x[0], 0.01)
    with pytest.raises(TypeError):
        equalize_adapthist_batch((x * 255).to(torch.uint8), 0.01)
    with pytest.raises(ValueError):
        equalize_adapthist_batch(x, torch.tensor([0.01, 0.02, 0.03]))
    with pytest.raises(ValueError):
        equalize_adapthist_batch(x, 0.01, kernel_fraction=0)
    assert equalize_adapthist_batch(torch.rand(0, 32, 32), 0.01).shape == (0, 32, 32)
