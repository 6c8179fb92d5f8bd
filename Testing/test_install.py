"""The bundled model and sample are found wherever the library is installed, from any working directory."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_script

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SSIMQUALITY_RESOURCES")}
    env.update(extra)
    return env


@pytest.mark.slow
def test_wheel_ships_the_model_and_scores_from_elsewhere(tmp_path):
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    try:  # the venv's own setuptools when it is new enough (no download), else pip's isolated build
        import setuptools

        isolation = [] if int(setuptools.__version__.split(".")[0]) >= 77 else None
    except ImportError:
        isolation = None
    flags = ["--no-build-isolation"] if isolation is not None else []
    r = subprocess.run(pip + ["wheel", str(ROOT), "--no-deps", *flags, "-w", str(wheels)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel, = wheels.glob("ssimquality-*.whl")
    r = subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    env = _clean_env(PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "import SSIMQualityLib.resources as r; print(r.RESOURCES)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()) == target / "SSIMQualityLib" / "Resources", where.stderr
    sample = target / "SSIMQualityLib" / "Resources" / "Data" / "sample_t1_axial.nii.gz"
    out = elsewhere / "scores.csv"
    r = subprocess.run([sys.executable, "-m", "SSIMQualityLib.cli", "score", str(sample), "-o", str(out),
                        "--device", "cpu"], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and "1 of 1 volume scored" in r.stdout


def _install_destinations():
    """What the CMake rules install where (Slicer's variables named, not expanded)."""
    scripted = (ROOT / "SSIMQuality" / "CMakeLists.txt").read_text()
    cli = (ROOT / "SSIMQualityCLI" / "CMakeLists.txt").read_text()
    return scripted, cli


def test_cmake_install_layout_finds_the_model_for_the_cli_module(tmp_path, sample_path):
    scripted, cli = _install_destinations()
    # The rules this layout mirrors: the library beside each module, the resources once, beside the scripted module.
    assert re.search(r"install\(DIRECTORY \$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\./SSIMQualityLib\s+DESTINATION "
                     r"\$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}", scripted)
    assert re.search(r"Resources/Models \$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\./Resources/Data\s+DESTINATION "
                     r"\$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}/Resources", scripted)
    assert re.search(r"install\(DIRECTORY \$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\./SSIMQualityLib DESTINATION "
                     r"\$\{Slicer_INSTALL_CLIMODULES_BIN_DIR\}", cli)
    assert "Resources" not in re.sub(r"#.*", "", cli)  # no second copy of the model
    lib = tmp_path / "Slicer" / "lib" / "Slicer-5.9"
    qt, clim = lib / "qt-scripted-modules", lib / "cli-modules"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for dest in (qt, clim):
        shutil.copytree(ROOT / "SSIMQualityLib", dest / "SSIMQualityLib", ignore=ignore)
    shutil.copy(ROOT / "SSIMQuality" / "SSIMQuality.py", qt)
    for sub in ("Models", "Data"):
        shutil.copytree(ROOT / "Resources" / sub, qt / "Resources" / sub)
    for f in ("SSIMQualityCLI.py", "SSIMQualityCLI.xml"):
        shutil.copy(ROOT / "SSIMQualityCLI" / f, clim)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "scores.tsv"
    r = subprocess.run([sys.executable, str(clim / "SSIMQualityCLI.py"), "--device", "cpu", str(sample_path), str(out)],
                       capture_output=True, text=True, cwd=elsewhere, env=_clean_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and "<filter-end>" in r.stdout
    # It used the installed copies: the CLI module's library, the scripted module's resources.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import SSIMQualityLib.resources as r; "
             "print(r.__file__); print(r.RESOURCES)")
    where = subprocess.run([sys.executable, "-c", probe, str(clim)], capture_output=True, text=True, cwd=elsewhere,
                           env=_clean_env()).stdout.split()
    assert Path(where[0]).parent == clim / "SSIMQualityLib" and Path(where[1]) == qt / "Resources"


def test_make_refuses_an_install_the_disk_cannot_hold_in_one_line(tmp_path, monkeypatch, capsys):
    check = load_script("check_disk")
    assert check.main(str(tmp_path / ".venv")) == 0  # this machine has room: the suite was installed here
    free = shutil.disk_usage(tmp_path).free / check.GIB
    monkeypatch.setitem(check.NEEDS_GIB, "venv", free + 1.0)
    assert check.main(str(tmp_path / "not-yet" / ".venv")) == 1
    said = capsys.readouterr().err.strip()
    assert "\n" not in said and said.startswith(f"make: {tmp_path}") and "GiB free, the install needs about" in said
    # make runs the check before it creates the environment, so a full disk stops there, not inside pip
    recipe = (ROOT / "Makefile").read_text().split("$(STAMP): pyproject.toml")[1]
    assert recipe.index("scripts/check_disk.py $(VENV)") < recipe.index("-m venv $(VENV)")
