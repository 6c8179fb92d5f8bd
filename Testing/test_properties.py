"""Property tests (hypothesis): labels, SSIM, slicing, zero-motion identity."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from SSIMQualityLib.labels import clinical_class, equal_bin_class
from SSIMQualityLib.motion import KSpaceMotion
from SSIMQualityLib.slices import INPUT_SIZE, prepare_input
from SSIMQualityLib.ssim import ssim

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(st.lists(unit, min_size=2, max_size=50), st.sampled_from([2, 3, 5, 10]))
def test_labels_monotone_in_ssim(values, n):
    s = np.sort(np.array(values))
    assert np.all(np.diff(equal_bin_class(s, n)) >= 0)
    assert np.all(np.diff(clinical_class(s)) <= 0)


@given(unit, st.sampled_from([2, 3, 5, 10]))
def test_labels_cover_unit_interval_without_gaps(s, n):
    k = int(equal_bin_class(s, n))
    assert 0 <= k < n
    lo, hi = k / n, (k + 1) / n
    assert lo - 1e-6 <= s <= hi + 1e-6  # each value lands in the bin that contains it
    assert int(clinical_class(s)) in (1, 2, 3)


images = st.integers(min_value=8, max_value=40).flatmap(
    lambda h: st.tuples(st.just(h), st.integers(min_value=8, max_value=40), st.integers(0, 2 ** 31 - 1)))


@given(images, st.floats(min_value=0.0, max_value=1.0))
@settings(max_examples=40, deadline=None)
def test_ssim_symmetric_bounded_and_one_on_identity(shape_seed, noise):
    h, w, seed = shape_seed
    rng = np.random.default_rng(seed)
    a = torch.tensor(rng.random((h, w)))
    b = torch.tensor(np.clip(rng.random((h, w)) * noise + a.numpy() * (1 - noise), 0, 1))
    sab, sba = float(ssim(a, b)), float(ssim(b, a))
    assert abs(sab - sba) < 1e-12
    assert -1.0 - 1e-9 <= sab <= 1.0 + 1e-9
    assert abs(float(ssim(a, a)) - 1.0) < 1e-9


@given(st.integers(16, 600), st.integers(16, 600), st.floats(min_value=-1e4, max_value=1e4), st.floats(1e-3, 1e4),
       st.integers(0, 2 ** 31 - 1))
@settings(max_examples=40, deadline=None)
def test_slicing_keeps_size_and_range_for_any_shape_and_scale(h, w, offset, scale, seed):
    img = np.random.default_rng(seed).random((h, w)).astype(np.float32) * scale + offset
    out = prepare_input(img)
    assert out.shape == (INPUT_SIZE, INPUT_SIZE)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@given(st.integers(16, 48), st.integers(16, 48), st.integers(0, 1), st.integers(0, 2 ** 31 - 1), st.integers(1, 4))
@settings(max_examples=30, deadline=None)
def test_zero_motion_kspace_is_identity(h, w, pe, seed, moves):
    rng = np.random.default_rng(seed)
    img = torch.tensor(rng.random((h, w)))
    n = (h, w)[pe]
    t = KSpaceMotion(degrees=[0.0] * moves, shifts=[(0.0, 0.0)] * moves,
                     sources=rng.integers(-1, moves, size=n).tolist(), pe_axis=pe)
    np.testing.assert_allclose(t(img).numpy(), img.numpy(), atol=1e-9)
