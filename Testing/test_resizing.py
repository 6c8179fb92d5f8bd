"""Crop-and-resize as batched products (the GPU factory's path) against the per-sample functions."""
import numpy as np
import pytest
import torch

import SSIMQualityLib.dft as dft
import SSIMQualityLib.factory as factory_module
from SSIMQualityLib.resizing import AREA, BILINEAR, FOURIER, axis_operators, crop_resize_batch
from SSIMQualityLib.slices import crop, fourier_resample, resample


def _per_sample(images, boxes, size, in_kspace):
    return torch.stack([fourier_resample(crop(images[k], boxes[k]), size) if in_kspace[k] else
                        resample(crop(images[k], boxes[k])[None, None], size)[0, 0] for k in range(len(boxes))])


@pytest.mark.parametrize("size", [(8, 8), (37, 52), (64, 64), (97, 81)])
def test_batched_crop_and_resize_equals_the_per_sample_path(size):
    rng = np.random.default_rng(size[0])
    images = torch.rand(24, 64, 64) * torch.linspace(0.5, 3.0, 24)[:, None, None]
    for kspace_share in (0.0, 0.5, 1.0):
        starts = rng.integers(-20, 30, size=(24, 2))
        lengths = rng.integers(4, 90, size=(24, 2))  # crops smaller and larger than the output, in and out
        boxes = np.stack([starts[:, 0], starts[:, 0] + lengths[:, 0], starts[:, 1], starts[:, 1] + lengths[:, 1]], 1)
        in_kspace = rng.random(24) < kspace_share
        out = crop_resize_batch(images, boxes, size, in_kspace)
        ref = _per_sample(images, boxes, size, in_kspace)
        assert out.shape == ref.shape == (24, *size)
        assert float((out - ref).abs().max()) < 2e-5 * float(ref.abs().max())


def test_operators_of_an_unchanged_length_are_the_identity():
    for kind in (AREA, BILINEAR, FOURIER):
        m = axis_operators([7, 8], [7, 8], [kind, kind], in_len=8, out_len=8)
        assert torch.allclose(m[1], torch.eye(8, dtype=m.dtype), atol=1e-6)
        assert torch.allclose(m[0, :7, :7], torch.eye(7, dtype=m.dtype), atol=1e-6)
        assert not m[0, 7].abs().any() and not m[0, :, 7].abs().any()  # beyond the crop and the output: zero


def test_the_factory_acquires_the_same_matrix_on_either_path(monkeypatch):
    factory = factory_module.SampleFactory(seed=11)
    factory.config.p_native = 0.0  # every group crops and resizes
    canvas = torch.rand(16, 256, 256) * (torch.rand(16, 256, 256) > 0.3)
    rows = np.tile([40, 210, 170], (16, 1))
    cols = np.tile([50, 200, 150], (16, 1))
    per_sample = factory._acquire(canvas, rows, cols, np.random.default_rng(5))
    monkeypatch.setattr(dft, "MATMUL_DEVICES", {"cpu", "cuda"})
    batched = factory._acquire(canvas, rows, cols, np.random.default_rng(5))
    assert per_sample.shape == batched.shape and per_sample.shape[1:] != (256, 256)
    assert torch.allclose(per_sample, batched, atol=2e-5)


def test_thick_slices_as_batched_products_equal_the_per_sample_resizes(monkeypatch):
    from SSIMQualityLib.synthesis import RandomSynthesis, _thick_slices

    rng = np.random.default_rng(1)
    params = [RandomSynthesis().sample(rng) for _ in range(30)]
    params[0].thick_factor, params[0].thick_axis, params[1].thick_factor, params[1].thick_axis = 3.7, 0, 2.2, 1
    images = torch.rand(30, 64, 64)
    per_sample = images.clone()
    _thick_slices(per_sample, params)
    monkeypatch.setattr(dft, "MATMUL_DEVICES", {"cpu", "cuda"})
    batched = images.clone()
    _thick_slices(batched, params)
    assert not torch.allclose(per_sample[:2], images[:2], atol=1e-3)  # both axes were thickened
    assert torch.allclose(per_sample, batched, atol=1e-5)


def test_the_factorys_gpu_code_path_run_on_the_cpu_makes_the_same_batch(monkeypatch):
    """Every branch the factory takes on a GPU (DFT matrices, batched crop-and-resize, thick slices by matrix)
    against the CPU's, on the same seeds: the labels agree to float round-off."""
    factory = factory_module.SampleFactory(seed=4, group_size=32)
    x_cpu, y_cpu = factory.batch(3, 96)
    monkeypatch.setattr(dft, "MATMUL_DEVICES", {"cpu", "cuda"})
    x_gpu, y_gpu = factory.batch(3, 96)
    assert y_cpu.std() > 0.05  # a batch with motion of every strength
    assert float((y_cpu - y_gpu).abs().max()) < 1e-4
    # Inputs: round-off, amplified in a few pixels by the normalisation's percentile.
    assert float((x_cpu - x_gpu).abs().mean()) < 1e-5 and float((x_cpu - x_gpu).abs().max()) < 5e-3
