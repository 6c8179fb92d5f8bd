"""The DFT by matrix product (what the factory's motion and ghost steps use on a GPU) against torch's FFT."""
import numpy as np
import pytest
import torch

from SSIMQualityLib import dft as dft_module
from SSIMQualityLib.dft import dft, dft_matrix
from SSIMQualityLib.motion import RandomMotion, apply_motion_batch
from SSIMQualityLib.synthesis import nyquist_ghost


@pytest.fixture
def matmul_on_cpu(monkeypatch):
    """Route the CPU through the matrix-product path, as a GPU is."""
    monkeypatch.setattr(dft_module, "MATMUL_DEVICES", {"cpu", "cuda"})


@pytest.mark.parametrize("shape,dim", [((3, 7, 64), -1), ((2, 45, 9), 1), ((5, 128), 0), ((4, 3, 383), 2)])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("complex_input", [False, True])
def test_matrix_product_equals_fft(matmul_on_cpu, shape, dim, inverse, complex_input):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g)
    if complex_input:
        x = torch.complex(x, torch.randn(shape, generator=g))
    expected = (torch.fft.ifft if inverse else torch.fft.fft)(x, dim=dim)
    got = dft(x, dim=dim, inverse=inverse)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) < 2e-6 * scale * np.sqrt(shape[dim])


def test_out_argument_and_float64(matmul_on_cpu):
    x = torch.randn(4, 6, 32, dtype=torch.float64)
    assert dft(x).dtype == torch.complex128
    assert torch.allclose(dft(x), torch.fft.fft(x), atol=1e-10)
    out = torch.empty(4, 6, 32, dtype=torch.complex64)
    res = dft(x.float(), out=out)
    assert res.data_ptr() == out.data_ptr()
    assert torch.allclose(out, torch.fft.fft(x.float()), atol=1e-4)


def test_matrices_are_cached_and_bounded():
    a = dft_matrix(48)
    assert dft_matrix(48) is a
    assert torch.allclose(dft_matrix(48, inverse=True) @ a, torch.eye(48, dtype=torch.complex64), atol=1e-5)
    for n in range(2, 2 + dft_module._MAX_MATRICES + 5):
        dft_matrix(n)
    assert len(dft_module._MATRICES) <= dft_module._MAX_MATRICES


def test_motion_and_ghost_by_matrix_product_equal_the_fft_path(monkeypatch):
    rng = np.random.default_rng(3)
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 72, 60, generator=g) ** 2
    motion = RandomMotion("random", 0.8, p_kspace=0.5)
    transforms = [motion.sample((72, 60), rng) for _ in range(6)]
    phases = torch.linspace(0.1, 0.9, 6)
    by_fft = apply_motion_batch(images, transforms), nyquist_ghost(images, phases, pe_axis=0)
    monkeypatch.setattr(dft_module, "MATMUL_DEVICES", {"cpu", "cuda"})
    by_matmul = apply_motion_batch(images, transforms), nyquist_ghost(images, phases, pe_axis=0)
    for a, b in zip(by_fft, by_matmul):
        assert float((a - b).abs().max()) < 1e-5
    assert float((by_fft[0] - images).abs().max()) > 0.05  # the motion did move something
