"""scripts/gpu_window.py: whatever happens to the training, the window ends with a model to take home."""
from __future__ import annotations

import hashlib
from pathlib import Path

from helpers import load_script
from SSIMQualityLib.models import build_model, load_model, save_checkpoint

gw = load_script("gpu_window")


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


def _window_with_bench(tmp_path, monkeypatch, bench, *extra):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(gw, "_bench", lambda *a, **k: dict(bench))
    monkeypatch.setattr(gw.subprocess, "run", fake_run)
    assert gw.main(["--minutes", "12", "--device", "cpu", "--init", "", "--out", str(tmp_path / "run"),
                    "--workers", "8", "--input-size", "128", *extra]) == 0
    assert len(calls) == 1
    cmd = calls[0]
    return {flag: cmd[cmd.index(flag) + 1] if flag in cmd else None
            for flag in ("--workers", "--round", "--group-size", "--steps")}


# What the bench reports at 256² (fourth window's processes; a large-group factory of 9,000 samples/s).
_BENCH = {"train_256_images_per_s_cpu": 9266.0, "train_256_fed_by_factory_images_per_s_cpu": 2585.0,
          "factory_samples_per_s_cpu_8proc": 3847.0, "factory_samples_per_s_cpu_group1024_round16": 9000.0}


def test_auto_layout_trains_in_large_groups_where_the_bench_finds_them_faster(tmp_path, monkeypatch):
    """At 128² the processes feed min(2 x 2,585, 3,847 x 5,080 / 3,847) = 5,080 images/s (what the fourth window
    trained at); one process making groups of 1,024 at 9,000 samples/s and stepping at 2.5 x 9,266 feeds
    1 / (1/9,000 + 1/23,165) = 6,482: the window trains in that layout (no sample processes, rounds of 16
    batches of 512, each batch holding 8 groups) and sets its steps from that rate."""
    flags = _window_with_bench(tmp_path, monkeypatch, _BENCH)
    assert (flags["--workers"], flags["--round"], flags["--group-size"]) == ("0", "16", "1024")
    rates = gw.fed_rates(_BENCH, "cpu", 8, 128, 512, 1024)
    assert abs(rates["large"] - 6482) < 1 and abs(rates["processes"] - 5080) < 1e-6
    slow = dict(_BENCH, **{"factory_samples_per_s_cpu_group1024_round16": 6000.0})  # feeds 4,766 < 5,080
    flags_slow = _window_with_bench(tmp_path, monkeypatch, slow)
    assert (flags_slow["--workers"], flags_slow["--round"], flags_slow["--group-size"]) == ("8", None, None)
    assert int(flags["--steps"]) > int(flags_slow["--steps"])  # more steps at the faster rate


def test_a_named_layout_overrides_the_bench(tmp_path, monkeypatch):
    flags = _window_with_bench(tmp_path, monkeypatch, _BENCH, "--layout", "processes", "--round", "2")
    assert (flags["--workers"], flags["--round"], flags["--group-size"]) == ("8", "2", None)
    flags = _window_with_bench(tmp_path, monkeypatch, {}, "--layout", "large", "--large-group", "256")
    assert (flags["--workers"], flags["--round"], flags["--group-size"]) == ("0", "4", "256")
    # A bench file that never came (its call failed): the window trains as it would without a bench.
    flags = _window_with_bench(tmp_path, monkeypatch, {}, "--bench", str(tmp_path / "missing.json"))
    assert (flags["--workers"], flags["--round"], flags["--group-size"]) == ("8", None, None)


def test_a_bench_run_first_chooses_the_layout_of_a_timed_window(tmp_path, monkeypatch):
    """--bench-only measures and stops (no training); a later --timed window given that file (--bench) runs no
    bench of its own and trains in the layout the file finds faster."""
    import json

    calls, benches = [], []

    def fake_bench(out, *a, **k):
        benches.append(out)
        Path(out).write_text(json.dumps(_BENCH))
        return dict(_BENCH)

    monkeypatch.setattr(gw, "_bench", fake_bench)
    monkeypatch.setattr(gw.subprocess, "run", lambda cmd, **k: calls.append(list(cmd)) or
                        type("Done", (), {"returncode": 0})())
    out, export = tmp_path / "run", tmp_path / "export"
    common = ["--device", "cpu", "--init", "", "--out", str(out), "--input-size", "128"]
    assert gw.main(["--minutes", "3", "--bench-only", "--export", str(export), *common]) == 0
    assert len(benches) == 1 and not calls and (export / "bench_gpu.json").is_file()
    assert gw.main(["--minutes", "9", "--timed", "--bench", str(out / "bench_gpu.json"), *common]) == 0
    assert len(benches) == 1 and len(calls) == 1  # no second bench
    cmd = calls[0]
    assert "--schedule-minutes" in cmd and "--steps" not in cmd
    assert (cmd[cmd.index("--workers") + 1], cmd[cmd.index("--round") + 1], cmd[cmd.index("--group-size") + 1]) == \
        ("0", "16", "1024")
