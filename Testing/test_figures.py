"""Figures show slices the way a viewer does, whatever order the file stores them in; the teaching figures
carry what a lecture needs (k-space, differences with their scale, truth and prediction)."""
import numpy as np
import pytest
import SimpleITK as sitk

from SSIMQualityLib.cli import main
from SSIMQualityLib.figures import display_slice
from SSIMQualityLib.volumes import read_volume


def _head(nose_row: int = 4) -> np.ndarray:
    """(k, j, i) = (6, 40, 32) in LPS order: j runs anterior → posterior, i right → left; a bright 'nose' at
    the anterior end and a bright 'left ear' on the patient's left."""
    a = np.zeros((6, 40, 32), np.float32)
    a[:, 8:36, 4:28] = 100.0
    a[:, nose_row, 14:18] = 500.0  # anterior
    a[:, 20, 28:31] = 300.0  # the patient's left (i large in LPS)
    return a


def _write(path, array, direction):
    img = sitk.GetImageFromArray(array)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))
    return path


def test_the_same_head_stored_two_ways_is_drawn_the_same(tmp_path):
    lps = _write(tmp_path / "lps.nii.gz", _head(), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    # The same head stored RAS (as many NIfTI files are): both in-plane axes reversed, direction flipped.
    ras = _write(tmp_path / "ras.nii.gz", _head()[:, ::-1, ::-1].copy(), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    shown = []
    for path in (lps, ras):
        vol = read_volume(path)
        shown.append(display_slice(vol.array[3], direction=vol.direction, axis=0))
    np.testing.assert_array_equal(shown[0], shown[1])
    rows, cols = np.nonzero(shown[0] == 500.0)
    assert rows.max() < 10, "the nose is at the top (anterior up)"
    rows, cols = np.nonzero(shown[0] == 300.0)
    assert cols.min() > 24, "the patient's left is on the screen's right (radiological, as 3D Slicer)"


def test_views_follow_slicers_conventions():
    img = np.arange(6).reshape(2, 3)
    assert np.array_equal(display_slice(img, axis=0), img)  # identity LPS, axial: stored as drawn
    coronal = (1, 0, 0, 0, 0, -1, 0, 1, 0)  # j runs superior: turned so that superior is up
    assert display_slice(img, direction=coronal, axis=0).tolist() == [[3, 4, 5], [0, 1, 2]]
    sagittal = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # k along x: a sagittal stack; j superior, i posterior
    out = display_slice(img, direction=sagittal, axis=0)
    assert out.tolist() == [[3, 4, 5], [0, 1, 2]]  # superior up, anterior (small i) on the left
    swapped = (0, 1, 0, 1, 0, 0, 0, 0, 1)  # rows run left-right, columns anterior-posterior: transposed
    assert display_slice(img, direction=swapped, axis=0).tolist() == img.T.tolist()
    oblique = (0.7071, 0.7071, 0, -0.7071, 0.7071, 0, 0, 0, 1)  # both in-plane axes nearest x: as stored
    assert np.array_equal(display_slice(img, direction=oblique, axis=0), img)


def test_the_demo_runs_on_a_volume_of_yours(tmp_path, capsys):
    rng = np.random.default_rng(0)
    head = _head() + rng.normal(0, 3, (6, 40, 32)).astype(np.float32)
    path = _write(tmp_path / "mine.nii.gz", np.abs(np.repeat(np.repeat(head, 2, 1), 2, 2)),
                  (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert main(["demo", "--input", str(path), "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert f"volume: {path}" in out and "true SSIM over all slices: mean" in out and "predicted mean" in out
    for name in ("corruption_kspace.png", "corruption_torchio.png"):
        assert (tmp_path / "d" / name).stat().st_size > 20_000


def test_corruption_panel_needs_one_label_per_image(tmp_path):
    """Fewer labels than images left rows unlabelled, more were dropped, without a word."""
    from SSIMQualityLib.errors import BadParameterError
    from SSIMQualityLib.figures import corruption_panel

    img = np.random.default_rng(0).random((32, 32))
    with pytest.raises(BadParameterError, match="2 corrupted images and 1 labels"):
        corruption_panel(img, [img, img], ["only one"], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists()
