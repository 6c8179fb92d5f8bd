"""The batched sample factory: each step against its per-sample reference, labels against scikit-image,
seeds, the label distribution against the reference path, and training from it."""
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from SSIMQualityLib.contrast import Gamma, Identity, Logarithmic, Sigmoid, apply_contrast_batch
from SSIMQualityLib.data import MotionSliceDataset, SampleConfig
from SSIMQualityLib.factory import SampleFactory, head_mask_batch
from SSIMQualityLib.slices import fit_to_size, head_boxes, normalize
from SSIMQualityLib.synthesis import (RandomSynthesis, load_tissue_volume, nyquist_ghost, scanner_blur, synthesize,
                                      synthesize_batch)


@pytest.fixture(scope="module")
def factory():
    return SampleFactory(seed=3)


@pytest.fixture(scope="module")
def tissue_slices():
    vol = load_tissue_volume()
    picks = [(0, 90), (1, 100), (2, 80), (2, 50), (0, 60), (1, 140), (2, 110), (0, 120)]
    return torch.stack([fit_to_size(torch.as_tensor(np.take(vol, i, axis=a + 1).astype(np.float32)))
                        for a, i in picks])


def test_batched_synthesis_equals_the_per_slice_reference(tissue_slices):
    rng = np.random.default_rng(7)
    params = [RandomSynthesis().sample(rng) for _ in range(len(tissue_slices))]
    params[0].family, params[1].thick_factor, params[2].blur_sigma = "template", 3.0, 1.3  # every branch
    params[3].transpose, params[4].flip, params[5].skull_stripped = True, True, True
    params[6].transpose, params[6].flip, params[7].transpose, params[7].flip = True, True, False, False
    out = synthesize_batch(tissue_slices, params)
    for k, p in enumerate(params):
        ref = synthesize(tissue_slices[k], p, noise=False)
        assert float((out[k] - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_synthesis_draws_follow_their_documented_distributions():
    """The parameters are drawn a field at a time for a whole batch; every field keeps its range and shares."""
    from SSIMQualityLib.synthesis import FAMILIES, FAMILY_WEIGHTS

    n = 20000
    ps = RandomSynthesis().sample_batch(np.random.default_rng(11), n)
    fam = np.array([p.family for p in ps])
    for name, w in FAMILY_WEIGHTS.items():  # binomial sd of a share is <= 0.0036 at n = 20,000
        assert abs((fam == name).mean() - w / sum(FAMILY_WEIGHTS.values())) < 0.015, name
    for p in ps[:2000]:
        for (lo, hi), v in zip(FAMILIES.get(p.family, FAMILIES["t1"]), p.intensities):
            assert lo <= v <= hi
    epi = fam == "epi"
    thick = np.array([p.thick_factor for p in ps])
    assert (thick[epi] > 1.0).all() and thick.max() <= 4.0
    assert abs((thick[~epi] > 1).mean() - 0.4) < 0.02
    blur = np.array([p.blur_sigma for p in ps])
    assert blur[epi].min() >= 0.6 and blur[epi].max() <= 1.5
    assert abs((blur[~epi] == 0).mean() - 0.5) < 0.02 and blur[~epi].max() <= 1.2
    log_noise = np.log([p.noise for p in ps])
    assert abs(log_noise.mean() - np.log([0.005, 0.08]).mean()) < 0.03
    for name, share in (("flip", 0.5), ("transpose", 0.2), ("skull_stripped", 0.3), ("thick_axis", 0.5)):
        assert abs(np.mean([getattr(p, name) for p in ps]) - share) < 0.02, name
    rotation = np.array([p.rotation for p in ps])
    assert rotation.min() >= -20 and rotation.max() <= 20 and abs(rotation.mean()) < 0.5
    assert all(0.85 <= s <= 1.15 for p in ps[:2000] for s in p.scale)
    elastic = np.stack([p.elastic for p in ps[:2000]])
    assert np.abs(elastic).max() <= 4.0 and elastic.std() > 0.5
    texture = np.stack([p.texture for p in ps[:2000]])
    assert abs(texture.mean()) < 0.01 and abs(texture.std() - 1) < 0.01
    # Independent samples: no two share their texture or elastic field.
    assert len({p.texture.tobytes() for p in ps[:2000]}) == 2000


def test_slice_picks_drawn_for_a_batch_are_uniform_over_the_allowed_axes_and_positions():
    from SSIMQualityLib.factory import _Volume
    from SSIMQualityLib.slices import SliceSampler, pick_slices

    vol = np.zeros((20, 24, 28), np.float32)
    vol[4:16, 5:19, 6:22] = 1.0  # head in the middle: the edges' slices are not drawn
    sampler = SliceSampler(vol, (1.0, 1.0, 1.0))
    volume = _Volume(torch.as_tensor(vol)[None], sampler)  # what the factory draws from
    picks = pick_slices(volume.axes, volume.positions, 30000, np.random.default_rng(0))
    axes = np.array([p.axis for p in picks])
    assert set(axes.tolist()) == set(int(a) for a in sampler.axes)
    for a in sampler.axes:
        share = (axes == a).mean()
        assert abs(share - 1 / len(sampler.axes)) < 0.02
        positions = np.array([p.index for p in picks if p.axis == a])
        allowed = sampler.positions(a)
        assert set(positions.tolist()) == set(allowed.tolist())  # every allowed position, nothing else
        counts = np.array([(positions == i).sum() for i in allowed])
        assert counts.min() > 0.6 * counts.mean()  # about uniform


def test_batched_contrast_equals_the_scikit_image_transforms():
    x = torch.rand(5, 48, 40)
    transforms = [Gamma(0.5), Logarithmic(1.1), Logarithmic(0.9, inverse=True), Sigmoid(0.4, 10.0), Identity()]
    out = apply_contrast_batch(x, transforms)
    for k, t in enumerate(transforms):
        assert np.abs(out[k].numpy() - t(x[k].numpy())).max() < 1e-6
    # a slice that is not normalised is refused as a single transform refuses it (it came back as a mask)
    raw = 1000 * x
    with pytest.raises(ValueError, match="normalised to \\[0, 1\\]"):
        apply_contrast_batch(raw, transforms)
    with pytest.raises(ValueError, match="normalised to \\[0, 1\\]"):
        transforms[0](raw[0].numpy())


def test_batched_ghost_equals_one_phase_at_a_time():
    x = torch.rand(3, 2, 20, 24)
    phases = torch.tensor([0.1, 0.3, 0.6])
    for axis in (0, 1):
        out = nyquist_ghost(x, phases, pe_axis=axis)
        for k in range(3):
            assert torch.allclose(out[k], nyquist_ghost(x[k], float(phases[k]), pe_axis=axis), atol=1e-6)


def test_batched_scanner_blur_equals_one_pair_of_sigmas_at_a_time():
    from SSIMQualityLib.synthesis import _gaussian_blur

    x = torch.rand(4, 2, 20, 24)
    rows, cols = np.array([0.0, 0.4, 1.0, 0.7]), np.array([0.0, 0.9, 0.3, 0.7])
    out = scanner_blur(x, rows, cols)
    assert torch.equal(out[0], x[0])  # no blur: unchanged
    for k in range(4):
        assert torch.allclose(out[k], scanner_blur(x[k], rows[k], cols[k]), atol=1e-6)
    # Equal sigmas: the synthesis's isotropic blur; one axis only: rows (or columns) untouched across.
    for i in range(2):
        assert torch.allclose(out[3, i], _gaussian_blur(x[3, i], 0.7), atol=1e-6)
    stripes = torch.rand(20, 1).expand(20, 24)  # constant along each row, varying down the columns
    assert torch.allclose(scanner_blur(stripes, 0.0, 1.0), stripes, atol=1e-6)  # along the rows: no change
    assert not torch.allclose(scanner_blur(stripes, 1.0, 0.0), stripes, atol=1e-3)  # down the rows: blurred


def test_the_scanners_blur_hits_both_images_on_both_paths():
    """Recipe 10: a share of the synthetic acquisitions is soft at its own matrix (the scanner's point-spread
    function), clean and moved alike, so that the label is untouched when nothing moved."""
    from SSIMQualityLib.data import SampleConfig

    cfg = SampleConfig()
    rows, cols = cfg.draw_psf(np.random.default_rng(0), 4000)
    soft = rows > 0
    assert abs(soft.mean() - cfg.p_psf) < 0.03 and np.all((cols > 0) == soft)
    major = np.maximum(rows, cols)[soft]
    assert major.min() >= cfg.psf_sigma[0] and major.max() <= cfg.psf_sigma[1]
    assert 0.4 < np.mean(rows[soft] >= cols[soft]) < 0.6  # either axis
    # No motion, no noise, no ghost: blurred or not, the label is 1 on both paths, and the blur shows.
    still = SampleConfig(p_clean=1.0, p_psf=1.0, p_nyquist=0.0, backgrounds={"zero": 1.0})
    ds = MotionSliceDataset(4, seed=3, config=still)
    sharp = MotionSliceDataset(4, seed=3, config=SampleConfig(p_clean=1.0, p_psf=0.0, p_nyquist=0.0,
                                                                backgrounds={"zero": 1.0}))
    clean, moved, labels = ds.pairs(range(4))
    assert torch.allclose(labels, torch.ones(4), atol=1e-4)
    groups = SampleFactory(seed=3, config=still, group_size=4).groups(0, 4)
    assert torch.allclose(groups[0].labels, torch.ones(4), atol=1e-4)

    def edges(img):
        return float((img[1:] - img[:-1]).abs().mean() + (img[:, 1:] - img[:, :-1]).abs().mean())

    sharp_clean = sharp.pairs(range(4))[0]
    softer = [edges(normalize(a)) < edges(normalize(b)) for a, b in zip(clean, sharp_clean) if a.shape == b.shape]
    assert softer and all(softer)


def test_the_reconstruction_filter_smooths_signal_and_noise_together_on_both_paths():
    """Recipe 13: a share of the synthetic acquisitions went through the reconstruction's k-space filter, which
    smooths the noise with the signal: the air's noise is correlated between neighbours where it is on and white
    where it is off, on both paths, and the label is 1 when nothing moved."""
    from SSIMQualityLib.data import SampleConfig

    cfg = SampleConfig()
    rows, cols = cfg.draw_filter(np.random.default_rng(1), 4000)
    on = rows > 0
    assert abs(on.mean() - cfg.p_filter) < 0.03 and np.all((cols > 0) == on)
    major, minor = np.maximum(rows, cols)[on], np.minimum(rows, cols)[on]
    assert major.min() >= cfg.filter_sigma[0] and major.max() <= cfg.filter_sigma[1]
    assert np.all(minor >= 0.6 * major - 1e-12) and 0.4 < np.mean(rows[on] >= cols[on]) < 0.6

    def neighbours(img):  # correlation of neighbours in the canvas's darkest corner (air), both axes averaged
        c = min([img[:24, :24], img[:24, -24:], img[-24:, :24], img[-24:, -24:]], key=lambda x: float(x.mean()))
        pairs = ((c[:, :-1], c[:, 1:]), (c[:-1], c[1:]))
        return float(np.mean([torch.corrcoef(torch.stack([a.double().flatten(), b.double().flatten()]))[0, 1]
                              for a, b in pairs]))

    def still(p_filter):
        return SampleConfig(p_clean=1.0, p_psf=0.0, p_nyquist=0.0, p_native=1.0, backgrounds={"noisy": 1.0},
                            p_filter=p_filter, filter_sigma=(1.0, 1.0))

    # (The magnitude of correlated complex noise is less correlated than its parts: 0.37 - 0.63 here.)
    for p_filter, low, high in ((1.0, 0.25, 1.0), (0.0, -0.1, 0.1)):
        clean, _, labels = MotionSliceDataset(4, seed=5, config=still(p_filter)).pairs(range(4))
        group = SampleFactory(seed=5, config=still(p_filter), group_size=4).groups(0, 4)[0]
        assert torch.allclose(labels, torch.ones(4), atol=1e-4)
        assert torch.allclose(group.labels, torch.ones(4), atol=1e-4)
        for img in list(clean) + list(group.clean):
            assert low < neighbours(img) < high, (p_filter, neighbours(img))


def test_a_standing_ghost_band_lifts_the_air_beside_the_head_on_both_paths():
    """Recipe 17: in a share of the acquisitions the noise over the head's rows (or columns) is 1 + gain as
    strong, in both images: the air beside the head is then louder than the corners, on both paths, and the
    label is 1 when nothing moved.  The draws: p_band of them banded, gains log-uniform in band_gain, capped so
    the band's noise stays under band_max_sigma, either axis."""
    cfg = SampleConfig()
    gains, axes = cfg.draw_band(np.random.default_rng(2), np.full(4000, 0.01))
    on = gains > 0
    assert abs(on.mean() - cfg.p_band) < 0.03 and 0.45 < axes.mean() < 0.55
    assert gains[on].min() >= cfg.band_gain[0] and gains[on].max() <= cfg.band_gain[1]
    logs = np.log(gains[on])  # log-uniform: the median at the geometric mean
    assert abs(np.median(logs) - np.mean(np.log(cfg.band_gain))) < 0.15
    capped, _ = cfg.draw_band(np.random.default_rng(2), np.full(4000, 0.05))
    assert capped.max() <= cfg.band_max_sigma / 0.05 - 1 + 1e-9 and (capped > 0).mean() > 0.3

    def band_ratio(img):  # the louder of the air beside the head (either axis) over the corners' air
        a = img.numpy()
        head = a > 0.3 * a.max()
        r = np.flatnonzero(head.any(1)); c = np.flatnonzero(head.any(0))
        r0, r1, c0, c1 = r[0] - 8, r[-1] + 8, c[0] - 8, c[-1] + 8
        if min(r0, c0, a.shape[0] - r1, a.shape[1] - c1) < 4:
            return None  # the head fills the canvas: no corners of air to compare with
        corners = np.concatenate([a[:r0, :c0].ravel(), a[:r0, c1:].ravel(), a[r1:, :c0].ravel(),
                                  a[r1:, c1:].ravel()])
        beside = np.concatenate([a[r0 + 16:r1 - 16, :c0].ravel(), a[r0 + 16:r1 - 16, c1:].ravel()])
        above = np.concatenate([a[:r0, c0 + 16:c1 - 16].ravel(), a[r1:, c0 + 16:c1 - 16].ravel()])
        return max(beside.mean(), above.mean()) / corners.mean()

    def still(p_band):
        return SampleConfig(p_clean=1.0, p_psf=0.0, p_nyquist=0.0, p_native=1.0, p_filter=0.0,
                            backgrounds={"noisy": 1.0}, p_band=p_band, band_gain=(3.0, 3.0))

    for p_band, low, high in ((1.0, 2.0, 5.0), (0.0, 0.8, 1.25)):
        ds = MotionSliceDataset(10, seed=5, config=still(p_band))
        ds.synthesis.noise_range = (0.01, 0.01)  # the cap never bites: every band is 4x the corners' noise
        clean, corrupted, labels = ds.pairs(range(10))
        factory = SampleFactory(seed=5, config=still(p_band), group_size=10)
        factory.synthesis.noise_range = (0.01, 0.01)
        group = factory.groups(0, 10)[0]
        assert torch.allclose(labels, torch.ones(10), atol=1e-4)
        assert torch.allclose(group.labels, torch.ones(10), atol=1e-4)
        for images in (clean, group.clean):
            ratios = [band_ratio(img) for img in images]
            ratios = [x for x in ratios if x is not None]
            assert len(ratios) >= 4 and all(low < x < high for x in ratios), (p_band, ratios)
        assert all(torch.equal(a, b) for a, b in zip(clean, corrupted))


def test_half_the_acquired_matrices_are_sampled_in_kspace_on_both_paths():
    """Recipe 11: with p_fourier = 1 the drawn matrices ring (overshoot above the canvas's own maximum, which
    image-space averaging never exceeds); with 0, none does; the default is a half."""
    from SSIMQualityLib.data import SampleConfig

    assert SampleConfig().p_fourier == 0.5
    slab = fit_to_size(torch.as_tensor(load_tissue_volume()[0, :, :, 90].astype(np.float32)))

    def overshoots(p):
        cfg = SampleConfig(p_native=0.0, p_fourier=p)
        ds, rng = MotionSliceDataset(4, seed=2, config=cfg), np.random.default_rng(1)
        ref = [bool(ds.acquire(slab, rng).max() > slab.max() * 1.001) for _ in range(24)]
        factory = SampleFactory(seed=2, config=cfg, group_size=8)
        factory._load()
        canvas = slab.expand(8, -1, -1).clone()
        rows, cols = head_boxes(canvas)
        ours = [bool(a.max() > slab.max() * 1.001) for _ in range(3)
                for a in factory._acquire(canvas, rows, cols, np.random.default_rng(_))]
        return np.mean(ref), np.mean(ours)

    assert overshoots(0.0) == (0.0, 0.0)
    assert min(overshoots(1.0)) > 0.75  # (a matrix finer than the canvas's crop rings little: zero filling)


def test_head_mask_fills_holes_and_agrees_with_scipy_on_head_slices(tissue_slices):
    # A ring (a hole inside the head) is filled, the air around it is not.
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    r = ((yy - 32) ** 2 + (xx - 32) ** 2).sqrt()
    ring = ((r > 10) & (r < 20)).float()[None]
    mask = head_mask_batch(ring)[0]
    assert mask[32, 32] == 1 and mask[0, 0] == 0 and mask[32, 54] == 0  # centre filled; air 2 px past the rim kept
    assert torch.equal(mask, MotionSliceDataset.head_mask(ring[0]))
    # Real head shapes: scipy's hole filling and the row-and-column rule agree on nearly every pixel.
    heads = tissue_slices[:, 0] + tissue_slices[:, 3]  # T1 template + CSF: a brain with its ventricles
    ours = head_mask_batch(heads)
    for k in range(len(heads)):
        assert float((ours[k] != MotionSliceDataset.head_mask(heads[k])).float().mean()) < 0.005


def test_head_boxes_are_the_rows_and_columns_above_five_percent():
    img = torch.zeros(2, 10, 12)
    img[0, 2:5, 3:9] = 1.0
    img[0, 7, 1] = 0.04  # below 5 % of the maximum: not head
    rows, cols = head_boxes(img)
    assert rows[0].tolist() == [2, 5, 3] and cols[0].tolist() == [3, 9, 6]
    assert rows[1, 2] == 0 and cols[1, 2] == 0  # no head at all


def test_labels_equal_scikit_image_ssim_and_batches_are_reproducible(factory):
    groups = factory.groups(0, 32)
    assert sum(len(g.labels) for g in groups) == 32
    worst = 0.0
    for g in groups:
        a, b = normalize(g.clean.double()).numpy(), normalize(g.corrupted.double()).numpy()
        for k in range(len(g.labels)):
            ref = structural_similarity(a[k], b[k], data_range=1.0)
            worst = max(worst, abs(ref - float(g.labels[k])))
        assert g.inputs.shape == (len(g.labels), 1, 256, 256)
    assert worst < 1e-4
    x, y = factory.batch(0, 32)
    x2, y2 = SampleFactory(seed=3).batch(0, 32)  # a fresh factory: the same seed gives the same samples
    assert torch.equal(y, y2) and torch.equal(x, x2)
    assert not torch.equal(factory.batch(1, 32)[1], y)
    assert not torch.equal(SampleFactory(seed=4).batch(0, 32)[1], y)
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(y.max()) <= 1.0


def test_groups_share_a_matrix_drawn_like_the_reference(factory):
    sizes = []
    for i in range(6):
        for g in factory.groups(100 + i, 64):
            assert g.clean.shape == g.corrupted.shape
            sizes.append(max(g.clean.shape[-2:]))
    sizes = np.array(sizes)
    lo, hi = SampleConfig().matrix
    assert sizes.min() >= lo - 1 and sizes.max() <= hi + 1
    assert (sizes < 64).any()  # recipe 12: matrices below 64 (cropped research volumes) occur
    assert 1 < len(np.unique(sizes))  # groups differ (native 256² or a drawn matrix)


def test_label_distribution_agrees_with_the_reference_path():
    """Two-sample KS test on 2,000 labels of each path (the factory's deliberate differences: module notes)."""
    from scipy.stats import ks_2samp

    factory = SampleFactory(seed=11)
    ours = torch.cat([factory.batch(i, 64)[1] for i in range(32)]).numpy()[:2000]
    ds = MotionSliceDataset(10 ** 6, seed=11)
    ref = torch.cat([ds.batch(list(range(i, i + 100)))[1] for i in range(0, 2000, 100)]).numpy()
    assert ks_2samp(ours, ref).pvalue > 0.01
    assert abs(np.mean(ours < 0.85) - np.mean(ref < 0.85)) < 0.05


def test_gpu_worker_path_hands_over_the_same_batches_on_the_host():
    """What ``train --stream --workers N`` runs on a GPU, on the CPU: spawned processes make whole batches
    and hand them over as float16 on the host; they are the trainer's own batches to float16 rounding."""
    from SSIMQualityLib.data import worker_init
    from SSIMQualityLib.training import StepBatches

    made_here = StepBatches(SampleFactory(seed=4), 8, 128, 4, per_round=2)
    loader = torch.utils.data.DataLoader(
        StepBatches(SampleFactory(seed=4), 8, 128, 4, to_host=True, per_round=2), batch_size=None,
        sampler=range(2), num_workers=2, worker_init_fn=worker_init, multiprocessing_context="spawn")
    for item, (x, y) in enumerate(loader):  # rounds of two steps
        assert x.dtype == torch.float16 and x.device.type == "cpu" and y.dtype == torch.float32
        x_ref, y_ref = made_here[item]
        assert x.shape == x_ref.shape == (2, 8, 1, 128, 128)
        assert float((x.float() - x_ref).abs().max()) <= 2.5e-4  # float16 rounding of [0, 1]
        assert torch.equal(y, y_ref)


def test_a_round_deals_every_group_to_every_batch():
    """SampleFactory.round: the batches of a round are its factory batch dealt like cards, so each holds samples
    of every group (every acquired matrix) of the round, not two or three matrices."""
    factory = SampleFactory(seed=6, group_size=4, size=64)
    x, y = factory.round(2, 4, 2)
    x_all, y_all = factory.batch(2, 8)
    groups = factory.groups(2, 8)
    assert x.shape == (2, 4, 1, 64, 64) and y.shape == (2, 4)
    assert torch.equal(torch.cat([g.labels for g in groups]), y_all)  # the groups lie in order in the batch
    group_of = np.repeat(np.arange(len(groups)), 4)
    for r in range(2):
        assert torch.equal(x[r], x_all[r::2]) and torch.equal(y[r], y_all[r::2])
        assert np.bincount(group_of[r::2]).tolist() == [2, 2]  # two samples of each group of four


def test_group_size_defaults_by_device():
    from SSIMQualityLib.factory import GROUP_SIZE

    assert SampleFactory(seed=0).group_size == GROUP_SIZE["cpu"] == 16
    assert SampleFactory(seed=0, device="cuda").group_size == GROUP_SIZE["cuda"] == 256  # no GPU needed to build one
    assert SampleFactory(seed=0, group_size=32).group_size == 32


def _head_cut(img: torch.Tensor) -> bool:
    """Head at both edges of the rows or of the columns: the field of view cuts into it."""
    head = img > 0.05 * img.max()
    return bool((head[0].any() and head[-1].any()) or (head[:, 0].any() and head[:, -1].any()))


def test_fields_of_view_may_cut_into_the_head_on_both_paths():
    """Recipe 9: margins from -0.2 of the head's size, so that tight EPI / ASL / cropped views, with the head
    cut at the matrix edge, occur in training.  (Sagittal and coronal slices already reach the canvas edge at
    the neck: about 30 % of the factory's slices, whatever the margins.)"""
    from SSIMQualityLib.data import SampleConfig

    assert SampleConfig().min_margin < 0 < SampleConfig().max_margin
    slab = fit_to_size(torch.as_tensor(load_tissue_volume()[0, :, :, 90].astype(np.float32)))  # an axial slice

    def shares(config):
        ours = [_head_cut(c) for i in range(4)
                for g in SampleFactory(seed=5, config=config, group_size=1).groups(i, 16) for c in g.clean]
        ds, rng = MotionSliceDataset(10, seed=5, config=config), np.random.default_rng(0)
        return np.mean(ours), np.mean([_head_cut(ds.acquire(slab, rng)) for _ in range(64)])

    now = shares(SampleConfig(p_native=0.0, p_nyquist=0.0))
    never = shares(SampleConfig(p_native=0.0, p_nyquist=0.0, min_margin=0.0))
    for path, a, b in zip(("factory", "reference"), now, never):
        assert a - b > 0.15, (path, a, b)
    assert now[1] < 0.8  # the reference's axial slice: about 60 % cut (either axis), not all


def test_the_deepest_cut_keeps_part_of_the_head_on_both_paths(monkeypatch):
    """Margins of -0.35 times a stretch of up to 1.5 would cut more than the whole head; ``max_cut`` bounds each
    side, so the tightest view still holds 1 - 2 x 0.4 = 20 % of the head's extent (never an empty crop)."""
    import SSIMQualityLib.data as data_module
    import SSIMQualityLib.factory as factory_module
    from SSIMQualityLib.slices import crop

    config = SampleConfig(p_native=0.0, p_nyquist=0.0, min_margin=-0.9, max_margin=-0.9)
    slab = fit_to_size(torch.as_tensor(load_tissue_volume()[0, :, :, 90].astype(np.float32)))
    rows, cols = head_boxes(slab[None])
    head = (int(rows[0, 1] - rows[0, 0]), int(cols[0, 1] - cols[0, 0]))
    views = []

    def crop_and_record(image, box):
        out = crop(image, box)
        views.append(tuple(out.shape))
        return out

    monkeypatch.setattr(data_module, "crop", crop_and_record)
    ds, rng = MotionSliceDataset(10, seed=5, config=config), np.random.default_rng(0)
    for _ in range(8):
        assert _head_cut(ds.acquire(slab, rng))
    assert views and all(abs(v[0] - 0.2 * head[0]) <= 2 and abs(v[1] - 0.2 * head[1]) <= 2 for v in views), views
    monkeypatch.setattr(factory_module, "crop", crop_and_record)
    views.clear()
    for g in SampleFactory(seed=5, config=config, group_size=4).groups(0, 8):
        assert g.clean.numel() > 0 and bool(torch.isfinite(g.labels).all())
    # Each sample's own head cut to 20 % on both axes, then widened on its short side to the group's aspect.
    assert len(views) == 8 and min(min(v) for v in views) >= 4, views
