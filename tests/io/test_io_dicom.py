"""medmm.io.load_volume on DICOM: every input path, geometry checks and pixel decoding."""

from __future__ import annotations

import logging
import random
import shutil
import zipfile

import numpy as np
import pytest

from fixtures.dicom_cases import (
    AFFINE,
    PHI_STRINGS,
    make_hu,
    oblique_affine,
    series_datasets,
    write_enhanced,
    write_series,
)
from medmm.errors import MedmmInputError
from medmm.io import Volume, list_series, load_volume
from medmm.io.volume import lps_to_ras
from medmm.io.writers import save_datasets


def _no_phi(text: str) -> None:
    for s in PHI_STRINGS:
        assert s not in text, f"PHI {s!r} leaked into {text!r}"


def _error(path, **kw) -> str:
    with pytest.raises(MedmmInputError) as info:
        load_volume(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    _no_phi(msg)
    return msg


# ---------------------------------------------------------------- loader paths


def test_folder_loads_exact_hu_affine_and_clean_meta(tmp_path):
    hu = make_hu()
    files = write_series(tmp_path / "s", hu)
    vol = load_volume(tmp_path / "s")
    assert isinstance(vol, Volume) and vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    assert vol.spacing == (0.8, 0.9, 2.0)
    assert vol.orientation == "LPS"
    assert vol.source_files == files
    assert vol.meta["modality"] == "CT" and vol.meta["n_files"] == len(files)
    _no_phi(repr(vol.meta) + repr(vol))
    assert "shape=(10, 12, 8)" in repr(vol) and "LPS" in repr(vol)


def test_nested_folders_are_searched_recursively(tmp_path):
    hu = make_hu()
    files = write_series(tmp_path / "a" / "b" / "c", hu)
    (tmp_path / "a" / "notes.txt").write_text("not dicom")
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, hu)
    assert any("non-DICOM" in w for w in vol.meta["warnings"])
    assert vol.source_files == files


def test_single_file_loads_its_series_and_says_so(tmp_path, caplog):
    hu = make_hu()
    files = write_series(tmp_path, hu)
    with caplog.at_level(logging.INFO, logger="medmm.io"):
        vol = load_volume(files[3])
    np.testing.assert_array_equal(vol.array, hu)
    assert "whole series" in caplog.text
    assert any("whole series" in w for w in vol.meta["warnings"])


def test_lone_slice_is_an_error(tmp_path):
    files = write_series(tmp_path / "s")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(files[0], lone / "x.dcm")
    assert "single 2D slice" in _error(lone / "x.dcm")
    assert "at least 4" in _error(lone)


def test_zip_of_dicom_loads_and_names_members(tmp_path):
    hu = make_hu()
    files = write_series(tmp_path / "s", hu)
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in reversed(files):
            zf.write(f, f"study/series/{f.name}")
    vol = load_volume(archive)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.meta["source_format"] == "dicom-zip"
    assert [p.name for p in vol.source_files] == [f.name for f in files]
    assert all(str(p).startswith(str(archive)) for p in vol.source_files)
    from medmm.io import read_dicom_header

    for member, src in zip(vol.source_files, files):
        assert read_dicom_header(member).SOPInstanceUID == read_dicom_header(src).SOPInstanceUID
    with pytest.raises(MedmmInputError, match="no readable member"):
        read_dicom_header(archive / "nope.dcm")


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_enhanced_multiframe_uses_functional_groups(tmp_path, modality):
    hu = make_hu()
    slopes = [1, 2, 1, 2, 1, 2, 1, 2]
    path = write_enhanced(tmp_path / "mf.dcm", hu, modality=modality, slopes=slopes, shuffle_frames=True)
    vol = load_volume(path)
    expected = np.stack([np.rint((hu[:, :, k] + 1024) / slopes[k]) * slopes[k] - 1024 for k in range(8)], -1)
    np.testing.assert_array_equal(vol.array, expected)
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
    assert vol.meta["source_format"] == "dicom-multiframe"


def test_folder_holding_one_enhanced_file(tmp_path):
    hu = make_hu()
    (tmp_path / "study").mkdir()
    write_enhanced(tmp_path / "study" / "mf.dcm", hu)
    vol = load_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, hu)
    assert list_series(tmp_path)[0].multiframe


def test_missing_path_and_empty_inputs(tmp_path):
    assert "no such file" in _error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no DICOM images" in _error(tmp_path / "empty")
    (tmp_path / "zero.dcm").write_bytes(b"")
    assert "empty file" in _error(tmp_path / "zero.dcm")


# ---------------------------------------------------------------- geometry


def test_shuffled_file_names_give_identical_volume(tmp_path):
    hu = make_hu()
    ref_files = write_series(tmp_path / "ref", hu, oblique_affine())
    ref = load_volume(tmp_path / "ref")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = [f"IM{n:04d}" for n in random.Random(3).sample(range(1000), len(ref_files))]
    for f, n in zip(ref_files, names):
        shutil.copy(f, shuffled / n)
    vol = load_volume(shuffled)
    np.testing.assert_array_equal(vol.array, ref.array)
    np.testing.assert_array_equal(vol.affine, ref.affine)


def test_descending_slice_order_is_normalised(tmp_path):
    hu = make_hu()
    flipped = AFFINE.copy()
    flipped[:3, 2] *= -1  # slices written head -> feet
    write_series(tmp_path, hu, flipped)
    vol = load_volume(tmp_path)
    # sorted along the normal: the k axis now runs the other way, same world positions
    np.testing.assert_array_equal(vol.array, hu[:, :, ::-1])
    world_ref = flipped @ np.array([2, 3, 7, 1.0])
    np.testing.assert_allclose(vol.affine @ np.array([2, 3, 0, 1.0]), world_ref, atol=1e-5)


@pytest.mark.parametrize("affine", [AFFINE, oblique_affine(30.0)], ids=["axial", "oblique"])
def test_affine_agrees_with_simpleitk(tmp_path, affine):
    sitk = pytest.importorskip("SimpleITK")
    write_series(tmp_path, make_hu(), affine)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    vol = load_volume(tmp_path)
    np.testing.assert_allclose(vol.affine, lps_to_ras(lps), atol=1e-4)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


def _mutated_series(tmp_path, mutate, affine=None, hu=None):
    datasets = series_datasets(make_hu() if hu is None else hu, affine)
    mutate(datasets)
    save_datasets(datasets, tmp_path)
    return tmp_path


def _drop(k):
    return lambda dss: dss.pop(k)


def _duplicate(dss):
    dss[4].ImagePositionPatient = dss[3].ImagePositionPatient


def _tilt(dss):
    for k, ds in enumerate(dss):  # shift each slice in-plane: a 14-degree gantry tilt
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]


def _orientation(dss):
    dss[2].ImageOrientationPatient = [1, 0, 0, 0, 0.996, 0.0872]


def _pixel_spacing(dss):
    dss[5].PixelSpacing = [0.5, 0.5]


def _uneven(dss):
    x, y, z = (float(v) for v in dss[3].ImagePositionPatient)
    dss[3].ImagePositionPatient = [x, y, z + 0.6]


def _size(dss):
    dss[1].Rows = 11
    dss[1].PixelData = np.zeros((11, 10), np.uint16).tobytes()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_drop(4), "missing slice"),
        (_duplicate, "duplicate slice position"),
        (_tilt, "gantry tilt"),
        (_orientation, "inconsistent ImageOrientationPatient"),
        (_pixel_spacing, "inconsistent PixelSpacing"),
        (_uneven, "non-uniform slice spacing"),
        (_size, "inconsistent image size"),
    ],
    ids=["missing", "duplicate", "tilt", "orientation", "pixel-spacing", "uneven", "size"],
)
def test_geometry_errors(tmp_path, mutate, message):
    msg = _error(_mutated_series(tmp_path, mutate))
    assert message in msg
    assert str(tmp_path) in msg


def test_in_plane_jitter_is_caught(tmp_path):
    def jitter(dss):
        x, y, z = (float(v) for v in dss[6].ImagePositionPatient)
        dss[6].ImagePositionPatient = [x + 0.3, y, z]

    assert "not on one line" in _error(_mutated_series(tmp_path, jitter))


def test_fewer_than_four_slices(tmp_path):
    write_series(tmp_path, make_hu((6, 6, 3)))
    assert "only 3 slices" in _error(tmp_path)


# ---------------------------------------------------------------- series discovery


def test_two_series_error_lists_candidates_and_series_selects(tmp_path):
    hu1, hu2 = make_hu(seed=1), make_hu(seed=2)
    write_series(tmp_path / "a", hu1, uid_seed="one", description="lung 1mm")
    write_series(tmp_path / "b", hu2, uid_seed="two", description="soft 3mm")
    msg = _error(tmp_path)
    assert "2 CT/MR series" in msg and "lung 1mm" not in msg and "soft 3mm" not in msg  # no free text in errors
    infos = list_series(tmp_path)
    assert {i.description for i in infos} == {"lung 1mm", "soft 3mm"}
    by_desc = {i.description: i for i in infos}
    for i in infos:
        assert i.uid_suffix in msg and i.n_slices == 8 and i.modality == "CT"
    vol = load_volume(tmp_path, series=by_desc["soft 3mm"].uid_suffix)
    np.testing.assert_array_equal(vol.array, hu2)
    import pydicom

    full_uid = pydicom.dcmread(next((tmp_path / "a").iterdir())).SeriesInstanceUID
    np.testing.assert_array_equal(load_volume(tmp_path, series=full_uid).array, hu1)
    assert "no series matches" in _error(tmp_path, series="999999999")


def test_ambiguous_series_suffix(tmp_path):
    from pydicom.uid import generate_uid

    def series_uid(seed):
        return str(generate_uid(entropy_srcs=[seed, "series"]))

    # two seeds whose series UIDs end in the same digit: that digit is an ambiguous suffix
    seeds = next((f"s{a}", f"s{b}") for a in range(50) for b in range(a + 1, 50)
                 if series_uid(f"s{a}")[-1] == series_uid(f"s{b}")[-1])
    write_series(tmp_path / "a", uid_seed=seeds[0])
    write_series(tmp_path / "b", uid_seed=seeds[1])
    msg = _error(tmp_path, series=series_uid(seeds[0])[-1])
    assert "ambiguous" in msg


def test_localizer_is_excluded_with_warning(tmp_path):
    hu = make_hu()
    write_series(tmp_path / "s", hu)
    scout = series_datasets(make_hu((10, 12, 4)), uid_seed="case")[0]  # same series UID
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    save_datasets([scout], tmp_path / "s", stem="scout")
    vol = load_volume(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, hu)
    assert any("localizer" in w for w in vol.meta["warnings"])
    assert vol.meta["excluded_localizers"] == 1


def test_untagged_scout_of_other_plane_is_excluded(tmp_path):
    hu = make_hu()
    write_series(tmp_path, hu)
    scout = series_datasets(make_hu((16, 16, 4)), uid_seed="case")[0]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal, different size, no LOCALIZER tag
    save_datasets([scout], tmp_path, stem="scout")
    np.testing.assert_array_equal(load_volume(tmp_path).array, hu)


def test_dicomdir_cd_layout_and_non_image_objects(tmp_path):
    from pydicom.fileset import FileSet

    hu = make_hu()
    files = write_series(tmp_path / "src", hu)
    fs = FileSet()
    for f in files:
        fs.add(str(f))
    fs.write(tmp_path / "cd")  # DICOMDIR + PT000000/ST000000/SE000000/IM00000x, as on a CD
    sr = series_datasets(make_hu((4, 4, 4)), uid_seed="sr")[0]
    for kw in ("PixelData", "Rows", "Columns"):
        delattr(sr, kw)
    sr.Modality = "SR"
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    save_datasets([sr], tmp_path / "cd", stem="report")
    for target in (tmp_path / "cd", tmp_path / "cd" / "DICOMDIR"):
        vol = load_volume(target)
        np.testing.assert_array_equal(vol.array, hu)
        warnings = " ".join(vol.meta["warnings"])
        assert "DICOMDIR" in warnings and "without image pixel data" in warnings


# ---------------------------------------------------------------- pixels


def test_rescale_applied_exactly_once_per_slice(tmp_path):
    hu = make_hu()

    def slopes(dss):
        for k, ds in enumerate(dss):  # re-encode each slice with its own slope/intercept
            slope, intercept = (2.0, -2048.0) if k % 2 else (0.5, -1000.0)
            stored = np.rint((hu[:, :, k] - intercept) / slope).T.astype(np.int32)
            ds.PixelRepresentation = 1 if stored.min() < 0 else 0
            dtype = "<i2" if ds.PixelRepresentation else "<u2"
            ds.PixelData = stored.astype(dtype).tobytes()
            ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"

    vol = load_volume(_mutated_series(tmp_path, slopes))
    expected = hu.copy()
    for k in range(1, hu.shape[2], 2):
        expected[:, :, k] = np.rint((hu[:, :, k] + 2048) / 2) * 2 - 2048
    np.testing.assert_array_equal(vol.array, expected)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_monochrome1(tmp_path, modality):
    hu = make_hu()

    def mono1(dss):
        for ds in dss:
            ds.PhotometricInterpretation = "MONOCHROME1"

    datasets = series_datasets(hu, modality=modality)
    mono1(datasets)
    save_datasets(datasets, tmp_path)
    vol = load_volume(tmp_path)
    if modality == "CT":
        np.testing.assert_array_equal(vol.array, hu)  # HU are physical: display-only inversion
    else:
        stored = hu + 1024
        np.testing.assert_array_equal(vol.array, (65535 - stored) - 1024)


def test_bits_stored_masks_high_bits(tmp_path):
    hu = make_hu()

    def overlay_bits(dss):
        for ds in dss:
            ds.BitsStored, ds.HighBit = 12, 11
            px = np.frombuffer(ds.PixelData, "<u2") | np.uint16(0x8000)  # garbage in bit 15
            ds.PixelData = px.tobytes()

    vol = load_volume(_mutated_series(tmp_path, overlay_bits))
    np.testing.assert_array_equal(vol.array, hu)


def test_signed_bits_stored_sign_extends(tmp_path):
    hu = make_hu()
    hu[0, 0, :] = -1500

    def signed12(dss):
        for ds in dss:
            assert ds.PixelRepresentation == 1
            ds.BitsStored, ds.HighBit = 13, 12  # stored values span -476..2524
            px = np.frombuffer(ds.PixelData, "<i2") & np.int16(0x1FFF)  # 13-bit two's complement
            ds.PixelData = px.tobytes()

    vol = load_volume(_mutated_series(tmp_path, signed12, hu=hu))
    np.testing.assert_array_equal(vol.array, hu)


@pytest.mark.filterwarnings("ignore:Expected explicit VR")
def test_explicit_label_on_implicit_data_decodes_in_place(tmp_path):
    """Files labelled Explicit VR but written Implicit exist; pixel data must not start 4 bytes off."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    from fixtures.dicom_cases import decode_file

    ds = series_datasets()[0]  # file meta says Explicit VR Little Endian
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    (tmp_path / "x.dcm").write_bytes(fp.getvalue())
    np.testing.assert_array_equal(decode_file(tmp_path / "x.dcm")[0], make_hu()[:, :, 0].T)


def _rgb(dss):
    for ds in dss:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.zeros(int(ds.Rows) * int(ds.Columns) * 3, np.uint8).tobytes()


def _truncate(dss):
    dss[2].PixelData = dss[2].PixelData[:-40]


def _huge(dss):
    dss[1].Rows, dss[1].Columns = 65535, 65535


def _zero_slope(dss):
    dss[0].RescaleSlope = "0"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (_rgb, "colour image"),
        (_truncate, "truncated pixel data"),
        (_huge, "inconsistent image size"),
        (_zero_slope, "invalid rescale"),
    ],
    ids=["rgb", "truncated", "huge", "zero-slope"],
)
def test_pixel_errors(tmp_path, mutate, message):
    assert message in _error(_mutated_series(tmp_path, mutate))


def test_huge_declared_size_in_tiny_file_fails_before_allocation(tmp_path):
    datasets = series_datasets()
    datasets[0].Rows, datasets[0].Columns = 65535, 65535
    path = save_datasets(datasets[:1], tmp_path / "one")[0]
    from fixtures.dicom_cases import decode_file

    with pytest.raises(MedmmInputError, match="truncated pixel data"):
        decode_file(path)


def test_truncated_file_on_disk(tmp_path):
    files = write_series(tmp_path, make_hu())
    raw = files[3].read_bytes()
    files[3].write_bytes(raw[: len(raw) - 100])
    msg = _error(tmp_path)
    assert files[3].name in msg and "truncated" in msg


@pytest.mark.parametrize(
    "preamble, message",
    [(b"MZ" + b"\0" * 126, "Windows (MZ)"), (b"\x7fELF" + b"\0" * 124, "Linux (ELF)")],
)
def test_executable_preamble_is_refused(tmp_path, preamble, message):
    files = write_series(tmp_path, make_hu())
    files[0].write_bytes(preamble + files[0].read_bytes()[128:])
    msg = _error(tmp_path)
    assert message in msg and files[0].name in msg


def test_missing_preamble_is_not_dicom(tmp_path):
    files = write_series(tmp_path / "s", make_hu())
    raw = files[0].read_bytes()
    (tmp_path / "raw.dcm").write_bytes(raw[132:])
    assert "not a DICOM" in _error(tmp_path / "raw.dcm")


def _compress(tmp_path, syntax):
    from pydicom.uid import UID

    datasets = series_datasets()
    for ds in datasets:
        ds.compress(UID(syntax), encoding_plugin="pydicom" if syntax == "1.2.840.10008.1.2.5" else "")
    return save_datasets(datasets, tmp_path)


def test_rle_compressed_series_decodes(tmp_path):
    _compress(tmp_path, "1.2.840.10008.1.2.5")
    np.testing.assert_array_equal(load_volume(tmp_path).array, make_hu())


def test_missing_codec_names_the_package(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    _compress(tmp_path, "1.2.840.10008.1.2.5")
    # Relabel the files as JPEG Lossless SV1 (the usual CT codec); without pylibjpeg/gdcm no
    # decoder is available, with one the bytes fail to decode: both must be clean errors.
    for f in tmp_path.iterdir():
        import pydicom

        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(f, enforce_file_format=True)
    msg = _error(tmp_path)
    if not get_decoder(JPEGLosslessSV1).is_available:
        assert "medmm[codecs]" in msg and "pylibjpeg" in msg
    else:
        assert "cannot decode pixel data" in msg


# ---------------------------------------------------------------- property test

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(perm=st.permutations(list(range(8))), angle=st.sampled_from([0.0, 17.0, 90.0]))
def test_any_file_permutation_gives_the_same_volume(tmp_path_factory, perm, angle):
    root = tmp_path_factory.mktemp("perm")
    hu = make_hu()
    affine = oblique_affine(angle) if angle else AFFINE
    datasets = series_datasets(hu, affine)
    for ds in datasets:
        ds.InstanceNumber = 1  # no ordering hints other than geometry
    save_datasets([datasets[i] for i in perm], root)
    vol = load_volume(root)
    np.testing.assert_array_equal(vol.array, hu)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
