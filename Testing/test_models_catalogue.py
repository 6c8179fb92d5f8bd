"""The model catalogues: a catalogued name works wherever a model is asked for, and `ssimquality models` lists
and adds them without replacing a user's model unasked."""
import json
from pathlib import Path

import pytest
import torch

from SSIMQualityLib.cli import main
from SSIMQualityLib.errors import BadModelFileError, OutputExistsError, SSIMQualityError
from SSIMQualityLib.models import (bundled_model_entry, build_model, catalog_path, find_model, model_entries,
                                   model_identity, open_model, register_user_model, save_checkpoint, sha256_of)


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "user"
    monkeypatch.setenv("SSIMQUALITY_USER_DIR", str(folder))
    return folder


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, build_model("resnet18", 32))
    return path


def test_find_model_reads_none_a_name_or_a_path(user_dir, tmp_path):
    bundled = bundled_model_entry()
    assert find_model() == find_model("") == {"name": bundled["name"], "sha256": bundled["sha256"],
                                              "path": str(catalog_path().parent / bundled["file"])}
    assert find_model(bundled["name"]) == find_model()
    assert find_model("runs/model.pt") == {"name": None, "path": "runs/model.pt", "sha256": None}
    # a Path is a file, even one named like a catalogued model (str(Path("./name")) loses the "./")
    assert find_model(Path("./" + bundled["name"]))["sha256"] is None
    entry = register_user_model(_checkpoint(tmp_path / "a.pt", 0), "site-a")
    found = find_model("site-a")
    assert found == {"name": "site-a", "path": str(user_dir / "models" / entry["file"]), "sha256": entry["sha256"]}
    assert model_identity("site-a") == {"name": "site-a", "file": found["path"], "sha256": entry["sha256"]}
    assert model_identity(tmp_path / "a.pt") == {"name": None, "file": str((tmp_path / "a.pt").resolve()),
                                                 "sha256": sha256_of(tmp_path / "a.pt")}


def test_open_model_by_name_is_checked_and_an_unknown_name_lists_the_names(user_dir, tmp_path):
    register_user_model(_checkpoint(tmp_path / "a.pt", 0), "site-a")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        # the catalogued copy is float16: the same weights to half precision
        assert torch.allclose(open_model("site-a")(x), open_model(tmp_path / "a.pt")(x), atol=2e-3)
    with pytest.raises(BadModelFileError, match="no catalogued model of that name.*resnet18-synthetic-v12, site-a"):
        open_model("site-b")
    copy = Path(find_model("site-a")["path"])
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged after it was catalogued
    copy.write_bytes(bytes(data))
    with pytest.raises(BadModelFileError, match="checksum mismatch"):
        open_model("site-a")


def test_a_users_model_is_replaced_only_when_asked(user_dir, tmp_path):
    first = register_user_model(_checkpoint(tmp_path / "a.pt", 0), "site")
    with pytest.raises(OutputExistsError, match="already in your catalogue"):
        register_user_model(_checkpoint(tmp_path / "b.pt", 1), "site")
    assert find_model("site")["sha256"] == first["sha256"] == sha256_of(find_model("site")["path"])
    second = register_user_model(tmp_path / "b.pt", "site", replace=True)
    assert second["sha256"] != first["sha256"]
    assert [e["name"] for e in model_entries() if e["where"] == "user"] == ["site"]
    with pytest.raises(BadModelFileError, match="name of a bundled model"):
        register_user_model(tmp_path / "a.pt", bundled_model_entry()["name"], replace=True)
    with pytest.raises(SSIMQualityError, match="give the new model a name"):
        register_user_model(tmp_path / "a.pt", "  ")
    for pathlike in ("runs/model.pt", "site.pt", "a\\b"):  # --model NAME would then read as a file
        with pytest.raises(SSIMQualityError, match="must not look like a file path"):
            register_user_model(tmp_path / "a.pt", pathlike)
    with pytest.raises(BadModelFileError, match="no such model file"):  # a folder: one line, not IsADirectoryError
        model_identity(tmp_path)


def test_two_names_that_make_one_file_name_keep_two_files(user_dir, tmp_path):
    a = register_user_model(_checkpoint(tmp_path / "a.pt", 0), "site 1")
    b = register_user_model(_checkpoint(tmp_path / "b.pt", 1), "site_1")
    assert a["file"] != b["file"]
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert not torch.equal(open_model("site 1")(x), open_model("site_1")(x))  # both there, each its own
    assert {e["name"] for e in model_entries() if e["where"] == "user"} == {"site 1", "site_1"}


def test_a_file_that_is_not_a_checkpoint_is_refused_before_anything_is_written(user_dir, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    with pytest.raises(BadModelFileError, match="not a PyTorch checkpoint, or a damaged one"):
        register_user_model(text, "site")
    assert not user_dir.exists()


def test_models_command_lists_adds_and_scores_by_name(user_dir, tmp_path, sample_path, capsys):
    assert main(["models"]) == 0 and main(["models", "list", "--debug"]) == 0  # --debug after the action too
    listing = capsys.readouterr().out
    assert listing.startswith(bundled_model_entry()["name"]) and "none of your own yet" in listing
    ckpt = _checkpoint(tmp_path / "model.pt", 0)
    assert main(["models", "add", str(ckpt), "my site", "--description", "T1, 2026"]) == 0
    assert "use it with --model 'my site'" in capsys.readouterr().out
    assert main(["models", "add", str(ckpt), "my site"]) == 1
    err = capsys.readouterr().err
    assert "already in your catalogue" in err and "Traceback" not in err
    assert main(["models", "add", str(ckpt), "my site", "--force"]) == 0
    capsys.readouterr()
    assert main(["models", "list", "--json"]) == 0
    mine = [e for e in json.loads(capsys.readouterr().out) if e["where"] == "user"]
    assert [(e["name"], e["description"]) for e in mine] == [("my site", "")]  # replaced, as asked
    out = tmp_path / "r.csv"
    assert main(["score", str(sample_path), "--model", "my site", "-o", str(out), "--quiet"]) == 0
    record = json.loads(out.with_name("r.csv.record.json").read_text())
    assert record["made"]["model"] == "my site" and record["run"]["settings"]["model_sha256"] == mine[0]["sha256"]
