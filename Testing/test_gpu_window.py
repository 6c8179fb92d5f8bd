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
