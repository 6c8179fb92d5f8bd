"""Motion corruption: spread of labels, seeding, severity, and the TorchIO layout."""
import numpy as np
import pytest
import torch

from SSIMQualityLib.corruption import corrupt_volume, slice_labels
from SSIMQualityLib.motion import (KSpaceMotion, RandomKSpaceMotion, RandomMotion, RandomTorchioMotion,
                                   TorchioMotion, apply_motion_batch, rotate)
from SSIMQualityLib.slices import SliceSampler, normalize
from SSIMQualityLib.ssim import ssim


def _draw(sample, n, seed):
    sampler = SliceSampler(sample.array, (1.0, 1.0, 1.0), seed=seed)  # all orientations, like an isotropic volume
    return [torch.tensor(sampler.sample_slice()[0]) for _ in range(n)]


def _labels(transform_random, slices, seed):
    rng = np.random.default_rng(seed)
    out = []
    for s in slices:
        t = transform_random.sample(tuple(s.shape), rng)
        out.append(float(slice_labels(s[None], t(s)[None])[0]))
    return np.array(out)


@pytest.fixture(scope="module")
def many_slices(sample):
    return _draw(sample, 500, seed=3)


def test_kspace_labels_spread_wide(many_slices):
    labels = _labels(RandomKSpaceMotion(), many_slices, seed=0)
    p10, p90 = np.percentile(labels, [10, 90])
    assert p10 <= 0.6 and p90 >= 0.9, (p10, p90)
    assert labels.max() <= 1.0 + 1e-9


def test_torchio_labels_spread(many_slices):
    # All 500 slices: the population's p10 is about 0.74 (1,200 draws), so 300 left the estimate within its
    # noise of the bound.
    labels = _labels(RandomTorchioMotion(), many_slices, seed=0)
    p10, p90 = np.percentile(labels, [10, 90])
    # TorchIO's model keeps the centre of k-space: a narrower spread (see README).
    assert p10 <= 0.75 and p90 >= 0.9, (p10, p90)


@pytest.mark.parametrize("random_t", [RandomKSpaceMotion(), RandomKSpaceMotion(paper=True, max_degrees=5),
                                      RandomTorchioMotion()], ids=["kspace", "paper", "torchio"])
def test_same_seed_same_output_and_different_seed_differs(random_t, sample_slices):
    s = torch.tensor(sample_slices[2])
    a = random_t(s, seed=7)
    b = random_t(s, seed=7)
    c = random_t(s, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("random_t", [RandomKSpaceMotion(severity=0.0), RandomKSpaceMotion(severity=0.0, paper=True),
                                      RandomTorchioMotion(severity=0.0)], ids=["kspace", "paper", "torchio"])
def test_severity_zero_is_identity(random_t, sample_slices):
    for s in sample_slices[:4]:
        t = torch.tensor(s)
        out = random_t(t, seed=1)
        assert torch.equal(out, t)
        assert float(slice_labels(t[None], out[None])[0]) == 1.0


@pytest.mark.parametrize("cls", [RandomKSpaceMotion, RandomTorchioMotion], ids=["kspace", "torchio"])
def test_higher_severity_lower_mean_ssim(cls, many_slices):
    slices = many_slices[:80]
    means = [_labels(cls(severity=s), slices, seed=4).mean() for s in (0.2, 0.5, 1.0)]
    assert means[0] > means[1] > means[2], means


@pytest.mark.parametrize("mode", ["lines", "segments"])
@pytest.mark.parametrize("n", [64, 65, 256])
def test_kspace_keeps_the_centre_of_kspace(mode, n):
    rt = RandomKSpaceMotion(severity=1.0, mode=mode, keep_centre=0.04)
    band = max(1, round(0.04 * n))
    lo = n // 2 - band // 2
    replaced = []
    for seed in range(200):
        src = np.array(rt.sample((n, n), seed).sources)
        assert len(src) == n
        assert (src[lo:lo + band] == -1).all(), (seed, src[lo - 2:lo + band + 2])
        used = np.flatnonzero(src >= 0)
        replaced.append(len(used) / n)
        if mode == "segments" and len(used):
            # one run of moved lines on one side of the centre
            assert used[-1] < lo or used[0] >= lo + band, used
            assert (np.diff(used) == 1).all()
    # at severity 1 motion still replaces a large share of lines
    assert np.mean(replaced) > 0.4, np.mean(replaced)


def test_kspace_centre_from_a_moved_copy_is_a_displacement_not_an_artefact(sample_slices):
    """Why the centre is kept: replacing it moves the whole head (low SSIM, little to see)."""
    s = torch.tensor(sample_slices[2])
    n = s.shape[1]
    lines = np.full(n, -1)
    lines[n // 2 - n // 8:n // 2 + n // 8] = 0  # the central quarter from a copy shifted 4 px
    centre_moved = KSpaceMotion([0.0], [(0.0, 4.0)], lines.tolist(), pe_axis=1)(s)
    shifted = KSpaceMotion([0.0], [(0.0, 4.0)], [0] * n, pe_axis=1)(s)
    # the result is closer to the shifted head than to the original one
    assert float(ssim(normalize(centre_moved), normalize(shifted))) > float(ssim(normalize(centre_moved), normalize(s)))


def test_keep_centre_is_checked_and_zero_turns_it_off():
    with pytest.raises(ValueError, match="keep_centre"):
        RandomKSpaceMotion(keep_centre=0.5)
    for mode in ("lines", "segments"):
        rt = RandomKSpaceMotion(severity=1.0, mode=mode, keep_centre=0.0)
        centre_moved = [rt.sample((64, 64), seed).sources[32] >= 0 for seed in range(100)]
        # lines: each is moved with probability 0.7; segments: a 70 % run always covers the centre
        assert sum(centre_moved) > 50 and (mode == "segments" or sum(centre_moved) < 100), (mode, sum(centre_moved))


def test_zero_motion_kspace_is_identity_even_with_lines_replaced(sample_slices):
    s = torch.tensor(sample_slices[0], dtype=torch.float64)
    n = s.shape[0]
    t = KSpaceMotion(degrees=[0.0, 0.0], shifts=[(0.0, 0.0), (0.0, 0.0)], sources=[0, 1] * (n // 2) + [0] * (n % 2))
    np.testing.assert_allclose(t(s).numpy(), s.numpy(), atol=1e-6 * float(s.max()))


def test_kspace_replaces_only_given_lines_in_kspace():
    rng = np.random.default_rng(0)
    img = torch.tensor(rng.random((32, 40)))
    sources = [-1] * 32
    sources[3] = 0  # one line, acquisition order
    t = KSpaceMotion(degrees=[5.0], shifts=[(1.0, 2.0)], sources=sources, pe_axis=0)
    k_in = torch.fft.fftshift(torch.fft.fft2(img))
    moved = torch.fft.ifft2(torch.fft.ifftshift(k_in))  # sanity: round trip
    assert torch.allclose(moved.real, img, atol=1e-9)
    out = t(img)
    assert not torch.allclose(out, img)


def test_translation_ramp_is_exact_shift():
    img = torch.zeros(1, 16, 16, dtype=torch.float64)
    img[0, 5, 6] = 1.0
    t = KSpaceMotion(degrees=[0.0], shifts=[(2.0, 3.0)], sources=[0] * 16, pe_axis=0)
    out = t(img)
    assert float(out[0, 7, 9]) == pytest.approx(1.0, abs=1e-9)


def test_rotation_of_non_square_image_is_a_true_rotation():
    img = torch.zeros(1, 41, 61)
    img[0, 20, 40] = 1.0  # 10 px right of centre (20, 30)
    out = rotate(img, torch.tensor([90.0]))
    r, c = divmod(int(out[0].argmax()), 61)
    assert (r, c) in {(30, 30), (10, 30)}


def _best_shift_ssim(clean, corrupted):
    """SSIM after undoing the best integer shift (phase correlation)."""
    a = normalize(clean.double())
    b = normalize(corrupted.double())
    fa, fb = torch.fft.fft2(a), torch.fft.fft2(b)
    r = torch.fft.ifft2(fa * fb.conj() / (fa * fb.conj()).abs().clamp_min(1e-12)).real
    dy, dx = divmod(int(r.argmax()), r.shape[1])
    return float(ssim(a, torch.roll(b, shifts=(dy, dx), dims=(0, 1))))


def test_torchio_layout_ghosts_not_a_rigid_move(sample_slices):
    s = torch.tensor(sample_slices[1])
    t = TorchioMotion(degrees=[0.0], translations=[(6.0, 4.0)], times=[0.3], pe_axis=1)
    out = t(s)
    plain = float(slice_labels(s[None], out[None])[0])
    undone = _best_shift_ssim(s, out)
    assert plain < 0.95
    assert undone < 0.95, f"corruption is (nearly) a rigid move: {undone:.3f} once the shift is undone"
    # The wrong layout (TorchIO's own 2-D one, 1 x H x W x 1) is a rigid move: check our test sees it.
    import torchio as tio

    motion = tio.Motion(degrees=np.zeros((1, 3)), translation=np.array([[6.0, 4.0, 0.0]]), times=np.array([0.3]),
                        image_interpolation="linear")
    wrong = motion(tio.ScalarImage(tensor=s[None, :, :, None])).data[0, :, :, 0].abs()
    assert _best_shift_ssim(s, wrong) > 0.97


def test_apply_motion_batch_mixes_both_algorithms(sample_slices):
    s = torch.stack([torch.tensor(x) for x in sample_slices[:4]])
    rm = RandomMotion("random", severity=0.7)
    rng = np.random.default_rng(1)
    ts = [rm.sample(tuple(s.shape[-2:]), rng) for _ in range(4)]
    assert {type(t) for t in ts} == {KSpaceMotion, TorchioMotion}
    out = apply_motion_batch(s, ts)
    real = apply_motion_batch(s, ts, real_part=True).abs()  # TorchIO returns the real part
    for i, t in enumerate(ts):
        if isinstance(t, KSpaceMotion):
            assert torch.allclose(out[i], t(s[i]), atol=1e-4 * float(s.max()))
        else:  # TorchIO's reference; border rule explained in test_batched_torchio_model_equals_torchio
            assert float((real[i] - t(s[i])).abs().mean()) <= 1e-3 * float(s.max())


@pytest.mark.parametrize("pe_axis", [0, 1])
@pytest.mark.parametrize("moves", [1, 2, 3])
def test_batched_torchio_model_equals_torchio(pe_axis, moves, sample_slices):
    """The torch implementation of TorchIO's model reproduces torchio.Motion on fixed parameters."""
    s = torch.tensor(sample_slices[0])[:, :-5]  # not square: rows and columns must not be confused
    rng = np.random.default_rng(10 * pe_axis + moves)
    t = TorchioMotion(rng.uniform(-8, 8, moves).tolist(), [tuple(v) for v in rng.uniform(-6, 6, (moves, 2)).tolist()],
                      np.sort(rng.uniform(0.05, 0.95, moves)).tolist(), pe_axis)
    ours = apply_motion_batch(s[None], [t], real_part=True)[0].abs()
    ref = t(s)
    # SimpleITK counts points beyond the outer pixel centres as outside (background value); grid_sample blends
    # towards zero over that last half pixel.  Where the slice's border is non-zero, that is the only difference:
    err = (ours - ref).abs()
    assert float(err.max()) <= 0.05 * float(s.max()) and float(err.mean()) <= 1e-3 * float(s.max())
    # ... and with a zero border (most real slices), the two agree to float32 round-off.
    z = s.clone()
    z[:3], z[-3:], z[:, :3], z[:, -3:] = 0, 0, 0, 0
    err = (apply_motion_batch(z[None], [t], real_part=True)[0].abs() - t(z)).abs()
    assert float(err.max()) <= 2e-5 * float(z.max())
    # Magnitude (what training uses) is at least the real part's absolute value.
    mag = apply_motion_batch(s[None], [t])[0]
    assert bool((mag >= ours - 1e-4 * float(s.max())).all())


@pytest.mark.parametrize("pe_axis", [0, 1])
def test_torchio_about_centre_is_a_move_about_the_centre(pe_axis, sample_slices):
    s = torch.tensor(sample_slices[0])[:, :-5]
    t = TorchioMotion.about_centre(tuple(s.shape), [5.0, -3.0], [(2.0, -3.0), (1.0, 4.0)], [0.3, 0.7], pe_axis)
    k = t.to_kspace(tuple(s.shape))
    np.testing.assert_allclose(k.degrees, [5.0, -3.0], atol=1e-9)
    np.testing.assert_allclose(k.shifts, [(2.0, -3.0), (1.0, 4.0)], atol=1e-9)


def test_torchio_sources_follow_torchio_rule():
    # Two moves at 0.3 and 0.7: the middle segment (holding the centre) keeps the reference.
    t = TorchioMotion([1.0, 2.0], [(0, 0), (0, 0)], [0.3, 0.7], 1)
    src = np.array(t.sources(10))
    assert src.tolist() == [0, 0, 0, -1, -1, -1, -1, 1, 1, 1]


def test_corrupt_volume_seeded_and_batch_independent(sample):
    vol = sample.array[30:36]
    a = corrupt_volume(vol, 0, "kspace", 0.6, seed=3, batch_size=2)
    b = corrupt_volume(vol, 0, "kspace", 0.6, seed=3, batch_size=6)
    # Same parameters whatever the batch; only float32 FFT round-off may differ.
    np.testing.assert_allclose(a.array, b.array, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(a.ssim, b.ssim, atol=1e-5)
    z = corrupt_volume(vol, 0, "kspace", 0.0, seed=3, out_dtype=vol.dtype)
    assert np.array_equal(z.array, vol) and np.all(z.ssim == 1.0)


@pytest.mark.parametrize("pe_axis", [0, 1])
def test_all_lines_from_one_copy_is_that_moved_copy(pe_axis, sample_slices):
    """Whatever the phase-encoding direction, taking every line from a copy gives the moved image."""
    from SSIMQualityLib.motion import warp

    s = torch.tensor(sample_slices[0], dtype=torch.float64)
    n = s.shape[pe_axis]
    t = KSpaceMotion(degrees=[7.0], shifts=[(3.0, -2.0)], sources=[0] * n, pe_axis=pe_axis)
    expected = warp(s[None], torch.tensor([7.0]), torch.tensor([[3.0, -2.0]]))[0].abs()
    np.testing.assert_allclose(t(s).numpy(), expected.numpy(), atol=1e-6 * float(s.max()))


def test_motion_drawn_for_a_group_equals_its_transforms_one_by_one():
    """``RandomMotion.draw`` (the factory's path: arrays, no object per slice) against the same draws as
    transforms applied by ``apply_motion_batch``: equal images, and TorchIO's rows hold exactly the lines and
    moves its own model gives (``TorchioMotion.to_kspace``)."""
    from SSIMQualityLib.motion import apply_motion_draws

    rng = np.random.default_rng(0)
    for shape in [(40, 40), (36, 52), (52, 36)]:
        draws = RandomMotion(severity=(0.0, 1.0)).draw(shape, rng, 120)
        transforms = [draws.transform(k) for k in range(len(draws))]
        kinds = {type(t) for t in transforms}
        assert kinds == {KSpaceMotion, TorchioMotion}
        images = torch.rand(len(draws), *shape)
        assert torch.allclose(apply_motion_draws(images, draws), apply_motion_batch(images, transforms), atol=1e-5)
        for k, t in enumerate(transforms):
            if isinstance(t, TorchioMotion) and t.degrees:
                ks = t.to_kspace(shape)
                assert ks.sources == draws.sources[k, :shape[t.pe_axis]].tolist()
                assert np.allclose(ks.degrees, draws.degrees[k, :len(ks.degrees)], atol=1e-9)
                assert np.allclose(ks.shifts, draws.shifts[k, :len(ks.shifts)], atol=1e-9)
        still = np.arange(len(draws)) % 3 == 0
        draws.still(still)
        out = apply_motion_draws(images, draws)
        assert torch.equal(out[still], images[still]) and not torch.equal(out[~still], images[~still])


def test_distinct_cuts_are_uniform_subsets():
    """The segments' cut points: every subset of 1 … total − 1 of the drawn size equally likely."""
    from collections import Counter

    from SSIMQualityLib.motion import _distinct_cuts

    rng = np.random.default_rng(1)
    n = 20000
    cuts = _distinct_cuts(rng.random((n, 3)), np.full(n, 6), np.full(n, 2))
    assert (cuts[:, 2] == np.iinfo(np.int64).max).all() and (cuts[:, 0] < cuts[:, 1]).all()
    counts = Counter(map(tuple, cuts[:, :2].tolist()))
    assert len(counts) == 10 and min(counts) >= (1, 2) and max(counts) <= (4, 5)
    assert max(counts.values()) / min(counts.values()) < 1.15  # 2,000 each, about


def test_kspace_draws_follow_their_documented_distributions():
    """The k-space algorithm's draws: moves 1 … 4 alike, both line modes alike, the centre band never replaced,
    lines replaced at about ``max_fraction · severity``, a segment one run on one side of the band with its copies
    in order, and rotations within ``max_degrees · severity``."""
    r = RandomKSpaceMotion(severity=0.5)
    d = r.draw((64, 64), np.random.default_rng(2), 4000)
    assert np.allclose(np.bincount(d.moves)[1:] / 4000, 0.25, atol=0.03)
    assert np.abs(d.degrees).max() <= 8.0 * 0.5 and np.abs(d.shifts).max() <= 8.0 * 0.5
    src = d.sources[:, :64]
    band = slice(32 - 1, 32 + 2)  # round(0.04 * 64) = 3 lines about line 32
    assert (src[:, band] == -1).all()
    replaced = (src >= 0).mean(axis=1)
    runs = [np.flatnonzero(np.diff(np.r_[0, (row >= 0).astype(int), 0])) for row in src]
    one_run = np.array([len(x) == 2 for x in runs])  # a segment: one contiguous run of replaced lines
    assert 0.4 < one_run.mean() < 0.6  # half the slices sampled sequentially
    assert abs(np.median(replaced[one_run]) - 0.35) < 0.02  # round(0.35 * 64) = 22 lines
    seg = src[one_run]
    for row in seg[:200]:
        taken = row[row >= 0]
        assert (np.diff(taken) >= 0).all() and (np.diff(taken) <= 1).all() and taken[0] == 0  # copies in order
    lines = replaced[~one_run]
    assert abs(lines.mean() - 0.35 * 61 / 64) < 0.02  # each line outside the band with probability 0.35


def test_one_seed_at_two_severities_is_the_same_motion_larger():
    """Common random numbers (the real-scan evaluation's severity grid): every slice takes the same draws whatever
    its severity, so the same seed gives the same algorithm choices and directions, scaled."""
    for cls in (RandomKSpaceMotion, RandomTorchioMotion):
        low = cls(severity=0.3).draw((48, 48), np.random.default_rng(7), 200)
        high = cls(severity=0.9).draw((48, 48), np.random.default_rng(7), 200)
        assert (low.pe_axis == high.pe_axis).all() and (low.moves == high.moves).all()
        assert np.allclose(high.degrees, 3 * low.degrees) and np.allclose(high.shifts, 3 * low.shifts)
        assert (high.sources >= 0).sum() > 1.5 * (low.sources >= 0).sum()


@pytest.mark.parametrize("cls", [RandomKSpaceMotion, RandomTorchioMotion, RandomMotion])
def test_a_shape_that_is_not_a_slice_is_one_line(cls):
    # (0, 0) was drawn and then failed inside torch's FFT ("Invalid number of data points").
    for shape in [(0, 0), (8, 0), (2.5, 8), (8,), "ab"]:
        with pytest.raises(ValueError, match="shape must be a slice's two sizes"):
            cls(severity=0.5).sample(shape, seed=0)
    assert cls(severity=0.5).sample(torch.Size([8, 12]), seed=0) == cls(severity=0.5).sample((8, 12), seed=0)
    with pytest.raises(TypeError):  # asked for by every sampler (TorchIO's had a silent default of 256 x 256)
        cls(severity=0.5).sample(seed=0)
    if cls is not RandomMotion:  # the two algorithms' samplers also move images
        with pytest.raises(ValueError, match="each at least 1 pixel"):
            cls(severity=0.5)(np.zeros((0, 0), np.float32), seed=0)
