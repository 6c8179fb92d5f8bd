"""One image, one score, however its file stores the voxels: slices reach the network in one orientation (a RAS+
volume's), and figures draw them as a viewer shows them."""
import dataclasses

import numpy as np
import pytest
import torch

from SSIMQualityLib.batch import score_files
from SSIMQualityLib.orientation import display_slice, network_slice
from SSIMQualityLib.scoring import score_array
from SSIMQualityLib.volumes import write_volume

from helpers import stored_otherwise

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # a NIfTI stored RAS, as SimpleITK gives its direction


@pytest.mark.parametrize("direction", [None, RAS, (0, 0, 1, 1, 0, 0, 0, 1, 0)])
def test_both_turns_take_a_torch_stack_as_each_numpy_slice(direction):
    stack = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    for turn in (display_slice, network_slice):
        for axis in range(3):
            turned = turn(torch.from_numpy(stack), direction=direction, axis=axis)
            for k in range(3):
                np.testing.assert_array_equal(turned[k].numpy(), turn(stack[k], direction=direction, axis=axis))


def test_the_network_sees_a_ras_volume_as_stored_and_others_turned_to_it():
    """The orientation of nilearn's MNI152 and Colin27 (stored RAS+), whatever order a file has."""
    img = np.arange(6).reshape(2, 3)
    for axis in range(3):
        assert np.array_equal(network_slice(img, direction=RAS, axis=axis), img)
    lps = np.eye(3).ravel()  # DICOM's order: the two in-plane axes reversed in an axial slice
    assert network_slice(img, direction=lps, axis=0).tolist() == img[::-1, ::-1].tolist()
    # a viewer shows an axial RAS slice turned by 180 degrees (anterior up, the patient's left on the right)
    assert display_slice(img, direction=RAS, axis=0).tolist() == img[::-1, ::-1].tolist()


def test_a_scan_stored_two_ways_scores_alike(sample, tiny_model):
    vol = dataclasses.replace(sample, direction=RAS)
    twin = stored_otherwise(vol)
    # the twin is the same image: its voxel at each point of the patient is the original's
    np.testing.assert_array_equal(display_slice(twin.array, direction=twin.direction, axis=0),
                                  display_slice(vol.array, direction=vol.direction, axis=0))
    a = score_array(tiny_model, vol.array, vol.spacing, direction=vol.direction).predicted
    b = score_array(tiny_model, twin.array, twin.spacing, direction=twin.direction).predicted
    np.testing.assert_allclose(a, b, atol=1e-6, equal_nan=True)
    # as stored, the network reads the two differently (what the direction is for)
    stored = score_array(tiny_model, twin.array, twin.spacing).predicted
    assert np.nanmax(np.abs(stored - a)) > 1e-3


def test_score_files_reads_each_files_direction(sample, tiny_model, tmp_path):
    vol = dataclasses.replace(sample, direction=RAS)
    twin = stored_otherwise(vol)
    write_volume(vol.array, vol, tmp_path / "as_ras.nii.gz")
    write_volume(twin.array, twin, tmp_path / "as_dicom.nii.gz")
    a, b = score_files([tmp_path / "as_ras.nii.gz", tmp_path / "as_dicom.nii.gz"], tiny_model)
    np.testing.assert_allclose(a.score.predicted, b.score.predicted, atol=1e-6, equal_nan=True)


@pytest.fixture(scope="module")
def tiny_model():
    from SSIMQualityLib.models import build_model

    torch.manual_seed(0)
    return build_model("resnet18", 64).eval()


def test_training_takes_real_volumes_slices_as_scoring_gives_them(sample, tmp_path):
    """`train --source` (the Slicer module's Fine-tune) drew a site's DICOM-ordered slices as stored, while
    scoring turns them: the two orders of one scan now give the network the same slices."""
    from SSIMQualityLib.data import VolumeFolderSource

    vol = dataclasses.replace(sample, direction=RAS)
    twin = stored_otherwise(vol)
    write_volume(vol.array, vol, tmp_path / "as_ras.nii.gz")
    write_volume(twin.array, twin, tmp_path / "as_dicom.nii.gz")
    a, b = VolumeFolderSource([tmp_path / "as_ras.nii.gz"]), VolumeFolderSource([tmp_path / "as_dicom.nii.gz"])
    for seed in range(5):
        x, y = a.draw(np.random.default_rng(seed)), b.draw(np.random.default_rng(seed))
        assert torch.equal(x, y), seed
