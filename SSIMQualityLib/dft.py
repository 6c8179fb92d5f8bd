"""1-D discrete Fourier transforms along one axis: by FFT on a CPU, by a matrix product on a GPU.

The sample factory transforms batches whose shapes change with every group
(each group has its own acquired matrix and its own number of moved copies).
On a GPU each new FFT shape builds a new cuFFT plan: measured on an H200,
10 ms for a new shape against 0.04 ms for a cached one, which made the motion
step 40 % of the factory's time.  A transform by a product with the DFT matrix
has no plan to build and costs about a millisecond at 256 points on a GPU,
so :func:`dft` uses it there; on a CPU the FFT is the faster choice.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

#: Device types on which :func:`dft` multiplies by the DFT matrix instead of calling the FFT.
MATMUL_DEVICES = {"cuda"}
_MATRICES: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
# Every length a group's matrix can have (8 - 384 on either side), forward and inverse: at most 754 matrices,
# ~300 MB of complex64 in all.  512 (before) let a long run evict and rebuild matrices, each built on the host
# (9 ms a matrix at n 300 - 340 on a 2-core CPU, measured while other work ran).
_MAX_MATRICES = 1024


def dft_matrix(n: int, *, inverse: bool = False, device="cpu", dtype=torch.complex64) -> torch.Tensor:
    """The (n, n) DFT matrix ``M`` with ``x @ M == torch.fft.fft(x)`` (``ifft`` when ``inverse``).

    Examples
    --------
    >>> x = torch.randn(3, 8, dtype=torch.complex64)
    >>> bool(torch.allclose(x @ dft_matrix(8), torch.fft.fft(x), atol=1e-5))
    True
    """
    key = (int(n), bool(inverse), str(device), dtype)
    m = _MATRICES.get(key)
    if m is None:
        j = torch.arange(n, dtype=torch.int64)
        # Angles from (j·k mod n) in float64: exact phases even for large j·k.
        angle = (2 * math.pi / n) * torch.remainder(j[:, None] * j[None, :], n).to(torch.float64)
        m = torch.polar(torch.ones_like(angle), angle if inverse else -angle)
        if inverse:
            m = m / n
        m = m.to(device=device, dtype=dtype)
        _MATRICES[key] = m
        if len(_MATRICES) > _MAX_MATRICES:
            _MATRICES.popitem(last=False)
    else:
        _MATRICES.move_to_end(key)
    return m


def on_matmul_device(device) -> bool:
    """Whether work on ``device`` takes the GPU's branches (matrix products rather than FFTs or per-sample
    loops): the one switch every such branch reads, so that a test flips them all through :data:`MATMUL_DEVICES`.

    >>> on_matmul_device("cpu"), on_matmul_device(torch.device("cuda", 0))
    (False, True)
    """
    return torch.device(device).type in MATMUL_DEVICES


#: The aten operations that make a GPU's host wait for the device: a value read back (``bool()``, ``int()``,
#: ``.item()``) and ``nonzero`` (its output's size is data).  What the GPU's branches keep few, and what the
#: operation counters of the tests and ``scripts/profile_factory.py`` count.
HOST_READ_OPS = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default})


def dft(x: torch.Tensor, *, dim: int = -1, inverse: bool = False, out: torch.Tensor = None) -> torch.Tensor:
    """``torch.fft.fft(x, dim=dim)`` (``ifft`` when ``inverse``), by a matrix product on :data:`MATMUL_DEVICES`.

    Real inputs are taken as complex64 (complex128 for float64).  ``out``, when
    given, receives the result (as ``torch.fft``'s ``out``).  The matrix product
    runs in the matmul precision torch is set to: keep TF32 off (torch's
    default) where labels are computed.

    Examples
    --------
    >>> x = torch.randn(2, 5, 6)
    >>> bool(torch.allclose(dft(x, dim=1), torch.fft.fft(x, dim=1)))
    True
    """
    if not on_matmul_device(x.device):
        fn = torch.fft.ifft if inverse else torch.fft.fft
        return fn(x, dim=dim, out=out) if out is not None else fn(x, dim=dim)
    ctype = torch.complex128 if x.dtype in (torch.float64, torch.complex128) else torch.complex64
    moved = x.to(ctype).movedim(dim, -1)
    res = (moved @ dft_matrix(moved.shape[-1], inverse=inverse, device=x.device, dtype=ctype)).movedim(-1, dim)
    if out is not None:
        out.copy_(res)
        return out
    return res
