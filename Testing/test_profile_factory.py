"""scripts/profile_factory.py: the GPU window's stage-by-stage profile runs and names the factory's stages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_profile_times_and_counts_every_stage(tmp_path):
    """Run as the next GPU window would, on the CPU (a child process: the script wraps the factory's functions
    with timers for its whole process).  A stage renamed in the factory must be renamed here too."""
    out = tmp_path / "profile.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_factory.py"), "--device", "cpu",
                           "--gpu-path", "--batch", "8", "--groups", "4", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    stages = report["group4"]["stages"]
    for name in ("synthesize_mixed", "apply_contrast_batch", "apply_motion_draws", "ssim", "_acquire", "_group"):
        assert stages[name]["ops"] > 0 and stages[name]["ms"] > 0, (name, stages.get(name))
    assert report["gpu_path"] and report["group4"]["samples_per_s_plain"] > 0
    assert report["group4"]["host_us_per_sample_outside_ops"] > 0
    # Each stage's host time outside its operations (the counter's own cost included): the stages' sum stays
    # within the batch's (which also holds the time between stages), and the synthesis draws on the host.
    assert 0 < report["counter_overhead_us_per_op"] < 1000
    outside = {k: r["host_us_per_sample_outside_ops"] for k, r in stages.items()}
    assert outside["synthesize_mixed"] > 0 and min(outside.values()) >= 0, outside
    assert sum(outside.values()) <= report["group4"]["host_us_per_sample_outside_ops"] * 1.05 + 1, outside
    # Bytes: every stage that computes moves at least its 8 samples' 256² float32 canvases once (2 MB), the SSIM
    # reads the pair and writes its moments; the total is the stages' sum.
    assert stages["synthesize_mixed"]["kb_per_sample"] >= 256
    assert stages["ssim"]["kb_per_sample"] > 0
    total_kb = sum(r["kb_per_sample"] for r in stages.values())
    assert abs(report["group4"]["mb_per_sample_moved"] * 1024 - total_kb) <= 0.1 * len(stages)
