"""Which floating-point precision is fast on the machine at hand.

bfloat16 autocast pays off only where the hardware computes it natively: a
CUDA GPU that supports it, or a CPU with AVX-512 BF16 or AMX.  Elsewhere
(AVX2-only CPUs, many laptops and servers) PyTorch emulates it and a ResNet
runs 40 – 50× slower than in float32.  So the choice is made from what the
machine has, not assumed.

On Linux the CPU's flags (``/proc/cpuinfo``) answer at once.  Elsewhere a
short probe (well under a second) times one convolution both ways.  The
answer is kept for the life of the process.
"""
from __future__ import annotations

import functools
import time
from typing import Union

import torch

FLOAT32, BFLOAT16 = "float32", "bfloat16"
#: CPU flags that mean native bfloat16 arithmetic (Linux names).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> Union[set, None]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def _probe_cpu_bf16() -> bool:
    """Time a small convolution in float32 and under bfloat16 autocast; native bf16 is not much slower."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(8, 64, 32, 32)

    def run(bf16: bool) -> float:
        best = float("inf")
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            conv(x)  # warm-up
            for _ in range(3):
                t = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - t)
        return best

    return run(True) < 1.5 * run(False)


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), by its flags or a probe."""
    flags = _cpu_flags()
    if flags is not None:
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    return _probe_cpu_bf16()


def fast_precision(device: Union[str, torch.device]) -> str:
    """The faster precision for a network on ``device``: :data:`BFLOAT16` where native, else :data:`FLOAT32`.

    Examples
    --------
    >>> fast_precision("cpu") in (FLOAT32, BFLOAT16)
    True
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        return BFLOAT16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else FLOAT32
    if dev.type == "cpu":
        return BFLOAT16 if cpu_has_native_bf16() else FLOAT32
    return FLOAT32


def describe(device: Union[str, torch.device]) -> str:
    """One line saying what was chosen and why, for logs and ``make bench``."""
    dev = torch.device(device)
    p = fast_precision(dev)
    if dev.type == "cpu":
        why = ("the CPU has native bfloat16 (AVX-512 BF16 / AMX)" if p == BFLOAT16
               else f"the CPU has no native bfloat16 ({torch.backends.cpu.get_cpu_capability()}): emulated, it is far slower")
    else:
        why = f"{dev.type} device"
    return f"{p} ({why})"
