"""scripts/gpu_window.py: whatever happens to the training, the window ends with a model to take home."""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from SSIMQualityLib.models import build_model, load_model, save_checkpoint

_SPEC = importlib.util.spec_from_file_location(
    "gpu_window", Path(__file__).resolve().parent.parent / "scripts" / "gpu_window.py")
gw = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gw)


def test_a_run_that_failed_after_its_checkpoint_still_exports_its_weights(tmp_path, capsys):
    """No model.pt (a run that ended with an error) but a last.ckpt: its weights are written and exported in
    parts that rejoin to the file named by the .sha256."""
    out, export = tmp_path / "run", tmp_path / "export"
    out.mkdir()
    net = build_model("resnet18", 32)
    save_checkpoint(out / "last.ckpt", net, {"optimizer": {"state": {}}, "step": 7})
    # A window too short to train in: the script goes straight to the export.
    assert gw.main(["--minutes", "0.3", "--steps", "4", "--device", "cpu", "--init", "", "--out", str(out),
                    "--export", str(export), "--reserve", "5", "--part-mb", "10"]) == 0
    assert "wrote the weights of" in capsys.readouterr().out
    parts = sorted(export.glob("model.pt.part*"), key=lambda p: int(p.name.split("part")[-1]))
    assert len(parts) == 5  # ~45 MB of float32 weights in parts of 10 MB
    joined = b"".join(p.read_bytes() for p in parts)
    assert hashlib.sha256(joined).hexdigest() == (export / "model.pt.sha256").read_text().strip()
    (tmp_path / "model.pt").write_bytes(joined)
    restored = load_model(tmp_path / "model.pt")
    assert all((restored.state_dict()[k] == v).all() for k, v in net.state_dict().items())


def test_a_timed_window_skips_the_bench_and_keeps_its_schedule_when_it_retries(tmp_path, monkeypatch):
    """--timed: no bench; the training command spans the window's training time (--schedule-minutes), and the
    retry in this process's factory asks for the same schedule (a resume refuses another one)."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        return type("Done", (), {"returncode": 1 if len(calls) == 1 else 0})()

    monkeypatch.setattr(gw.subprocess, "run", fake_run)
    assert gw.main(["--minutes", "12", "--timed", "--device", "cpu", "--init", "", "--out", str(tmp_path / "run"),
                    "--workers", "4"]) == 0
    assert len(calls) == 2 and all("train" in c for c in calls)  # no bench child before them

    def value(cmd, flag):
        return cmd[cmd.index(flag) + 1]

    assert value(calls[0], "--schedule-minutes") == value(calls[1], "--schedule-minutes")
    assert 9.5 < float(value(calls[0], "--schedule-minutes")) < 10.5  # 12 min, less the reserve and start-up
    assert "--steps" not in calls[0] and (value(calls[0], "--workers"), value(calls[1], "--workers")) == ("4", "0")


def test_the_window_passes_a_round_and_group_size_to_both_attempts(tmp_path, monkeypatch):
    """--round / --group-size reach train in the first attempt and in its retry; left out, train's own rules
    decide (no flag)."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        return type("Done", (), {"returncode": 1 if len(calls) % 2 else 0})()

    monkeypatch.setattr(gw.subprocess, "run", fake_run)
    argv = ["--minutes", "12", "--timed", "--device", "cpu", "--init", "", "--out", str(tmp_path / "run"),
            "--workers", "4"]
    assert gw.main(argv + ["--round", "1", "--group-size", "64"]) == 0
    assert gw.main(argv) == 0
    assert len(calls) == 4
    for cmd in calls[:2]:
        assert cmd[cmd.index("--round") + 1] == "1" and cmd[cmd.index("--group-size") + 1] == "64"
    assert all("--round" not in cmd and "--group-size" not in cmd for cmd in calls[2:])
