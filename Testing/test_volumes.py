import numpy as np
import pytest
import SimpleITK as sitk

from SSIMQualityLib.errors import OutputExistsError, UnreadableFileError, UnsupportedImageError
from SSIMQualityLib.volumes import read_volume, write_volume

from helpers import write_dicom_series


def test_sample_reads_with_geometry(sample):
    assert sample.array.ndim == 3 and sample.array.dtype == np.int16
    assert sample.spacing == pytest.approx((2.0, 1.0, 1.0))
    assert sample.path.endswith("sample_t1_axial.nii.gz")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii", ".mha"])
def test_round_trip_keeps_geometry_and_values(sample, tmp_path, suffix):
    out = tmp_path / f"copy{suffix}"
    write_volume(sample.array, sample, out)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, sample.array)
    assert back.spacing == pytest.approx(sample.spacing)
    np.testing.assert_allclose(back.origin, sample.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, sample.direction, atol=1e-6)


def test_dicom_series_folder(sample, tmp_path):
    folder = write_dicom_series(sample, tmp_path / "dicom")
    vol = read_volume(folder)
    assert vol.shape == (12,) + sample.shape[1:]
    np.testing.assert_array_equal(vol.array, sample.array[:12])
    assert vol.spacing == pytest.approx(sample.spacing, abs=1e-3)


def test_bad_inputs_give_specific_errors(sample, tmp_path):
    with pytest.raises(UnreadableFileError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    empty = tmp_path / "empty.nii"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFileError, match="empty"):
        read_volume(empty)
    text = tmp_path / "notes.nii"
    text.write_text("this is not an image\n" * 20)
    with pytest.raises(UnreadableFileError, match="not a readable image"):
        read_volume(text)
    trunc = tmp_path / "trunc.nii.gz"
    data = open(sample.path, "rb").read()
    trunc.write_bytes(data[: len(data) // 3])
    with pytest.raises(UnreadableFileError):
        read_volume(trunc)
    with pytest.raises(UnreadableFileError, match="no DICOM"):
        read_volume(tmp_path)  # a folder with no DICOM


def test_unsupported_images(tmp_path):
    four = tmp_path / "four.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.rand(30, 30, 20, 3).astype(np.float32), np.eye(4)), str(four))
    with pytest.raises(UnsupportedImageError, match="4-D with 3 frames"):
        read_volume(four)
    assert read_volume(four, frame=2).shape == (20, 30, 30)
    two = tmp_path / "two.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(30, 30).astype(np.float32)), str(two))
    with pytest.raises(UnsupportedImageError, match="2-D"):
        read_volume(two)
    nan = tmp_path / "nan.nrrd"
    a = np.random.rand(10, 30, 30).astype(np.float32)
    a[2, 3, 4] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(a), str(nan))
    with pytest.raises(UnsupportedImageError, match="NaN"):
        read_volume(nan)
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.randint(0, 255, (10, 30, 30, 3)).astype(np.uint8), isVector=True), str(rgb))
    with pytest.raises(UnsupportedImageError, match="RGB"):
        read_volume(rgb)
    const = tmp_path / "const.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 30, 30), np.int16)), str(const))
    with pytest.raises(UnsupportedImageError, match="same value"):
        read_volume(const)
    tiny = tmp_path / "tiny.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(10, 8, 8).astype(np.float32)), str(tiny))
    with pytest.raises(UnsupportedImageError, match="too small"):
        read_volume(tiny)


def test_write_refuses_overwrite_and_is_atomic(sample, tmp_path):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--force"):
        write_volume(sample.array, sample, out)
    assert out.read_bytes() == b"precious"
    write_volume(sample.array, sample, out, force=True)
    assert read_volume(out).shape == sample.shape
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"], "no temporary files left behind"
    with pytest.raises(UnsupportedImageError, match="unknown output format"):
        write_volume(sample.array, sample, tmp_path / "out.png")


def test_outputs_get_normal_permissions(sample, tmp_path):
    import os
    import stat

    out = tmp_path / "perm.nii.gz"
    write_volume(sample.array, sample, out)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_folder_listing_skips_hidden_folders_and_files(sample_path, tmp_path):
    """A download cache (.cache) or .git inside a scan folder is not scanned as data."""
    from SSIMQualityLib.volumes import list_volume_paths

    (tmp_path / "a").mkdir()
    (tmp_path / ".cache" / "deep").mkdir(parents=True)
    for target in (tmp_path / "a" / "t1.nii.gz", tmp_path / ".cache" / "deep" / "raw.nii.gz", tmp_path / ".hidden.nii.gz"):
        target.write_bytes(sample_path.read_bytes())
    assert list_volume_paths([tmp_path], recursive=True) == [tmp_path / "a" / "t1.nii.gz"]
    # One level down finds no image file (the hidden one is skipped): the folder comes back as given.
    assert list_volume_paths([tmp_path]) == [tmp_path]


def test_nibabel_only_reader_matches_read_volume():
    """The factory's SimpleITK-free reader gives read_volume's voxels and spacing."""
    from SSIMQualityLib.resources import SAMPLE_VOLUME
    from SSIMQualityLib.volumes import read_nifti_voxels, read_volume

    arr, spacing = read_nifti_voxels(SAMPLE_VOLUME)
    vol = read_volume(SAMPLE_VOLUME)
    assert arr.dtype == np.float32 and arr.shape == vol.array.shape and spacing == vol.spacing
    assert np.array_equal(arr, vol.array.astype(np.float32))


def test_the_memory_room_counts_a_control_groups_limit(tmp_path, monkeypatch):
    """A SLURM job's --mem (a cgroup limit) is not the machine's free memory: over it a job is killed, not
    refused. The tightest limit over the group and its parents counts, in cgroup v2 and v1 layouts."""
    from SSIMQualityLib import volumes

    v2 = tmp_path / "v2"
    job = v2 / "slurm" / "job_7" / "step_0"
    job.mkdir(parents=True)
    (v2 / "slurm" / "job_7" / "memory.max").write_text("4294967296\n")  # 4 GiB on the job
    (v2 / "slurm" / "job_7" / "memory.current").write_text("1073741824\n")
    (job / "memory.max").write_text("max\n")  # no limit of its own
    (job / "memory.current").write_text("1000\n")
    proc = tmp_path / "cgroup_v2"
    proc.write_text("0::/slurm/job_7/step_0\n")
    assert volumes.cgroup_room(proc, v2) == 3 * 2 ** 30
    # Inactive file cache is room: the kernel reclaims it before it kills.
    (v2 / "slurm" / "job_7" / "memory.stat").write_text("anon 5\ninactive_file 536870912\nactive_file 9\n")
    assert volumes.cgroup_room(proc, v2) == 3.5 * 2 ** 30
    v1 = tmp_path / "v1"
    (v1 / "memory" / "docker" / "abc").mkdir(parents=True)
    (v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text("2147483648\n")
    (v1 / "memory" / "docker" / "abc" / "memory.usage_in_bytes").write_text("147483648\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5\n")
    proc.write_text("4:memory:/docker/abc\n1:cpu:/\n")
    assert volumes.cgroup_room(proc, v1) == 2 * 10 ** 9
    (v1 / "memory" / "docker" / "abc" / "memory.stat").write_text("cache 7\ntotal_inactive_file 1000\n")
    assert volumes.cgroup_room(proc, v1) == 2 * 10 ** 9 + 1000
    proc.write_text("4:memory:/\n")
    assert volumes.cgroup_room(proc, v1) is None and volumes.cgroup_room(tmp_path / "missing", v1) is None
    # available_memory takes the tighter of the free memory and that room; the user's own setting overrides both.
    monkeypatch.setattr(volumes, "cgroup_room", lambda: 12345)
    monkeypatch.delenv(volumes.MEMORY_LIMIT_ENV, raising=False)
    assert volumes.available_memory() == 12345
    monkeypatch.setenv(volumes.MEMORY_LIMIT_ENV, "0.5")
    assert volumes.available_memory() == 2 ** 29


def test_an_int32_scan_near_the_top_of_its_range_does_not_wrap_when_corrupted(sample):
    """Scaled to 0 – 2³¹−1, a corrupted int32 volume came back with hundreds of voxels at −2³¹ (the float clip
    rounded up past the range), and its true SSIM was taken on the wrapped voxels."""
    import warnings

    from SSIMQualityLib.corruption import corrupt_volume
    from SSIMQualityLib.volumes import cast_like

    a = sample.array[36:40].astype(np.float64)
    top = np.iinfo(np.int32).max
    big = np.rint(a / a.max() * top).astype(np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" was the only sign
        res = corrupt_volume(big, 0, "kspace", 1.0, seed=1, out_dtype=np.int32)
    assert res.array.dtype == np.int32 and res.array.min() >= 0 and res.array.max() <= top
    small = corrupt_volume(np.rint(a / a.max() * 60000).astype(np.uint16), 0, "kspace", 1.0, seed=1,
                           out_dtype=np.uint16)
    np.testing.assert_allclose(res.ssim, small.ssim, atol=0.01)  # the same corruption, whatever the scale
    assert cast_like(np.array([1e19, -1e19, 7.0]), np.int64).tolist() == [2 ** 63 - 1, -2 ** 63, 7]


def test_dicom_slices_beside_nifti_files_and_a_copied_slice(sample, tmp_path):
    """dcm2niix's NIfTI written beside its DICOM slices: the folder's series was dropped without a word (while
    --recursive and `corrupt` read it).  A slice copied under another name was read as one more slice at a
    made-up spacing and scored across another axis."""
    import shutil

    from helpers import write_dicom_series, write_nifti
    from SSIMQualityLib.errors import UnsupportedImageError
    from SSIMQualityLib.volumes import list_volume_paths, read_volume

    folder = write_dicom_series(sample, tmp_path / "series")
    write_nifti(folder / "series.nii.gz", sample.array[:12].T, sample.spacing)
    (tmp_path / "notes").mkdir()
    write_nifti(tmp_path / "notes" / "t1.nii.gz", sample.array[:12].T, sample.spacing)
    (tmp_path / "notes" / "README").write_text("no DICOM here", encoding="utf-8")
    assert list_volume_paths([folder]) == [folder, folder / "series.nii.gz"]
    assert list_volume_paths([tmp_path / "notes"]) == [tmp_path / "notes" / "t1.nii.gz"]  # a README is no series
    assert read_volume(folder).array.shape[0] == 12
    files = sorted(folder.glob("*.dcm"))
    shutil.copy(files[3], folder / "copy_of_3.dcm")
    with pytest.raises(UnsupportedImageError, match="two files of the DICOM series hold one slice position"):
        read_volume(folder)
