"""Precision chosen by what the machine has: bfloat16 only where it is native, float32 elsewhere."""
import numpy as np
import pytest
import torch

from SSIMQualityLib import precision
from SSIMQualityLib.models import build_model
from SSIMQualityLib.scoring import predict_slices
from SSIMQualityLib.training import TrainConfig, _autocast


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has the given flags (None: no /proc/cpuinfo, so the probe decides)."""
    def set_flags(flags, probe=None):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: None if flags is None else set(flags))
        if probe is not None:
            monkeypatch.setattr(precision, "_probe_cpu_bf16", lambda: probe)
        precision.cpu_has_native_bf16.cache_clear()
    yield set_flags
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("flags,expected", [({"avx2", "fma"}, "float32"), ({"avx2", "avx512f"}, "float32"),
                                            ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"amx_bf16"}, "bfloat16")])
def test_choice_follows_the_cpu_flags(cpu_flags, flags, expected):
    cpu_flags(flags)
    assert precision.fast_precision("cpu") == expected
    assert precision.describe("cpu").startswith(expected)


@pytest.mark.parametrize("probe,expected", [(False, "float32"), (True, "bfloat16")])
def test_probe_decides_without_flags(cpu_flags, probe, expected):
    cpu_flags(None, probe=probe)
    assert precision.fast_precision("cpu") == expected


def test_probe_runs_quickly_and_answers():
    import time

    t = time.perf_counter()
    assert precision._probe_cpu_bf16() in (True, False)
    assert time.perf_counter() - t < 5.0  # a guard against a runaway probe, not a speed target


def test_fast_scoring_keeps_float32_without_native_bf16(cpu_flags):
    torch.manual_seed(0)
    model = build_model("resnet18", 32).eval()
    x = torch.rand(4, 64, 64) * 100
    cpu_flags({"avx2"})
    np.testing.assert_array_equal(predict_slices(model, x, bf16=True), predict_slices(model, x))
    cpu_flags({"avx512_bf16"})
    assert not np.array_equal(predict_slices(model, x, bf16=True), predict_slices(model, x))


def _dtype_under(ctx) -> torch.dtype:
    with ctx:
        return torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype


def test_training_autocast_follows_the_machine(cpu_flags):
    cpu = torch.device("cpu")
    cpu_flags({"avx2"})
    assert _dtype_under(_autocast(cpu, TrainConfig())) == torch.float32
    assert _dtype_under(_autocast(cpu, TrainConfig(precision="bfloat16"))) == torch.bfloat16
    cpu_flags({"avx512_bf16"})
    assert _dtype_under(_autocast(cpu, TrainConfig())) == torch.bfloat16
    assert _dtype_under(_autocast(cpu, TrainConfig(precision="float32"))) == torch.float32
    with pytest.raises(ValueError):
        _autocast(cpu, TrainConfig(precision="float16"))
