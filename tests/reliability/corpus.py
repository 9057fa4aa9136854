"""The bad-input corpus: unusual or hostile inputs and what medmm must do with each.

Each `CorpusCase` builds its input inside a temporary folder and states the expected outcome:
a volume (with its shape and, where it matters, its values) or a `MedmmInputError` whose one-line
message names the input and contains a given phrase. Every case is meant to be run through every
entry point that accepts a path (``load_volume``, ``medmm info``, later ``medmm infer``)::

    from reliability.corpus import CORPUS
    for case in CORPUS:
        path = case.build(tmp_path / case.name)
        ...  # assert case.expect against your entry point

All DICOM here carries planted PHI (`PHI_STRINGS`) that must never appear in any output.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fixtures.dicom_cases import (
    AFFINE,
    PHI_STRINGS,
    make_hu,
    patch_nifti_scaling,
    pydicom_ct_mr_files,
    series_datasets,
    write_enhanced,
    write_series,
)
from medmm.io.volume import Volume
from medmm.io.writers import save_datasets, write_nifti

__all__ = ["CORPUS", "CorpusCase", "Expect", "PHI_STRINGS", "pydicom_cases", "synthetic_cases"]

HU = make_hu()  # the volume every loadable synthetic case holds (10 x 12 x 8)


@dataclass(frozen=True)
class Expect:
    """Expected outcome of loading a corpus input.

    Attributes:
        outcome: "volume" (must load), "error" (must raise MedmmInputError) or "either"
            (one of the two, never anything else; used for third-party files).
        shape: expected ``(X, Y, Z)`` of the volume.
        message: phrase the error's one-line reason must contain.
        check: extra assertions on the loaded volume (values, warnings).
    """

    outcome: str
    shape: tuple[int, int, int] | None = None
    message: str | None = None
    check: Callable[[Volume], None] | None = None


def loads(shape=HU.shape, check=None) -> Expect:
    return Expect("volume", shape=tuple(shape), check=check)


def fails(message: str) -> Expect:
    return Expect("error", message=message)


@dataclass(frozen=True)
class CorpusCase:
    """One input: ``build(tmp_dir) -> path`` to hand to medmm, and what must happen."""

    name: str
    build: Callable[[Path], Path]
    expect: Expect


# ------------------------------------------------------------------ value checks


def equals_hu(vol: Volume) -> None:
    np.testing.assert_array_equal(vol.array, HU)


def warns(phrase: str) -> Callable[[Volume], None]:
    def check(vol: Volume) -> None:
        equals_hu(vol)
        assert any(phrase in w for w in vol.meta.get("warnings", [])), vol.meta.get("warnings")

    return check


def mr_inverted(vol: Volume) -> None:
    np.testing.assert_array_equal(vol.array, (65535 - (HU + 1024)) - 1024)


# ------------------------------------------------------------------ builders


def _series(d: Path, mutate: Callable[[list], object] | None = None, **kw) -> Path:
    datasets = series_datasets(HU, **kw)
    if mutate:
        mutate(datasets)
    save_datasets(datasets, d / "series")
    return d / "series"


def _valid_series(d: Path) -> Path:
    write_series(d / "series", HU)
    return d / "series"


def _empty_folder(d: Path) -> Path:
    (d / "empty").mkdir(parents=True)
    return d / "empty"


def _non_dicom_folder(d: Path) -> Path:
    f = d / "docs"
    f.mkdir(parents=True)
    (f / "notes.txt").write_text("radiology notes\n")
    (f / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (f / "data.json").write_text('{"a": 1}')
    (f / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    return f


def _zero_byte(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "zero.dcm").write_bytes(b"")
    return d / "zero.dcm"


def _truncated_header(d: Path) -> Path:
    files = write_series(d / "src", HU)
    out = d / "cut.dcm"
    out.write_bytes(files[0].read_bytes()[:300])
    return out


def _truncated_pixels_in_series(d: Path) -> Path:
    files = write_series(d / "series", HU)
    raw = files[4].read_bytes()
    files[4].write_bytes(raw[:-64])
    return d / "series"


def _missing_preamble(d: Path) -> Path:
    files = write_series(d / "src", HU)
    out = d / "nopreamble.dcm"
    out.write_bytes(files[0].read_bytes()[132:])
    return out


def _series_without_preambles(d: Path) -> Path:
    files = write_series(d / "series", HU)
    for f in files:
        f.write_bytes(f.read_bytes()[132:])
    return d / "series"


def _two_series(d: Path) -> Path:
    write_series(d / "all" / "a", HU, uid_seed="one", description="lung")
    write_series(d / "all" / "b", make_hu(seed=5), uid_seed="two", description="mediastinum")
    return d / "all"


def _localizer(d: Path) -> Path:
    write_series(d / "series", HU)
    scout = series_datasets(make_hu((16, 16, 4)))[0]
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    save_datasets([scout], d / "series", stem="scout")
    return d / "series"


def _shuffled(d: Path) -> Path:
    files = write_series(d / "src", HU)
    out = d / "shuffled"
    out.mkdir()
    order = np.random.default_rng(7).permutation(len(files))
    for i, f in zip(order, files):
        shutil.copy(f, out / f"IMG{(i * 37) % 101:05d}")
    return out


def _pos(ds) -> list[float]:
    return [float(v) for v in ds.ImagePositionPatient]


def _missing_slice(dss):
    dss.pop(3)


def _duplicate(dss):
    dss[5].ImagePositionPatient = dss[4].ImagePositionPatient


def _tilt(dss):
    for k, ds in enumerate(dss):
        x, y, z = _pos(ds)
        ds.ImagePositionPatient = [x, y + 0.35 * k, z]


def _orientation(dss):
    dss[3].ImageOrientationPatient = [1, 0, 0, 0, 0.9848, 0.1736]


def _pixel_spacing(dss):
    dss[6].PixelSpacing = [0.45, 0.45]


def _non_uniform(dss):
    x, y, z = _pos(dss[2])
    dss[2].ImagePositionPatient = [x, y, z + 0.7]


def _monochrome1(dss):
    for ds in dss:
        ds.PhotometricInterpretation = "MONOCHROME1"


def _rgb(dss):
    for ds in dss:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(int(ds.Rows) * int(ds.Columns) * 3)


def _huge(dss):
    for ds in dss:
        ds.Rows, ds.Columns = 65535, 65535


def _three_slices(dss):
    del dss[3:]


def _no_pixel_data(dss):
    del dss[3].PixelData


def _lone_slice(d: Path) -> Path:
    files = write_series(d / "src", HU)
    (d / "lone").mkdir()
    shutil.copy(files[2], d / "lone" / "slice.dcm")
    return d / "lone" / "slice.dcm"


def _one_file_of_series(d: Path) -> Path:
    return write_series(d / "series", HU)[4]


def _junk_beside_series(d: Path) -> Path:
    write_series(d / "series", HU)
    (d / "series" / "Thumbs.db").write_bytes(b"\0" * 64)
    (d / "series" / "readme.txt").write_text("exported")
    return d / "series"


def _executable_preamble(magic: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        files = write_series(d / "series", HU)
        raw = files[0].read_bytes()
        files[0].write_bytes((magic + raw[len(magic):128]) + raw[128:])
        return d / "series"

    return build


def _relabel_transfer_syntax(d: Path) -> Path:
    """RLE-compressed series relabelled JPEG Lossless: needs a codec, and the bytes are not JPEG."""
    import pydicom
    from pydicom.uid import JPEGLosslessSV1, RLELossless

    datasets = series_datasets(HU)
    for ds in datasets:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    files = save_datasets(datasets, d / "series")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.save_as(f, enforce_file_format=True)
    return d / "series"


def _rle_series(d: Path) -> Path:
    from pydicom.uid import RLELossless

    datasets = series_datasets(HU)
    for ds in datasets:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    save_datasets(datasets, d / "series")
    return d / "series"


def _multiframe(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return write_enhanced(d / "enhanced.dcm", HU, shuffle_frames=True)


def _legacy_multiframe(d: Path) -> Path:
    path = _multiframe(d)
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    del ds.SharedFunctionalGroupsSequence
    ds.save_as(path, enforce_file_format=True)
    return path


# NIfTI ---------------------------------------------------------------------------


def _nifti(name: str, array=None, edit=None, scaling=None) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        import nibabel as nib

        d.mkdir(parents=True, exist_ok=True)
        data = HU if array is None else array
        if edit is None and scaling is None:
            return write_nifti(data, AFFINE, d / name)
        dtype = np.int16 if scaling is not None else np.float32
        img = nib.Nifti1Image(np.asarray(data).astype(dtype), AFFINE)
        if edit:
            edit(img)
        nib.save(img, d / name)
        if scaling is not None:
            patch_nifti_scaling(d / name, *scaling)
        return d / name

    return build


def _codes_zero(img):
    img.set_sform(img.affine, code=0)
    img.set_qform(img.affine, code=0)


def _truncated_gz(d: Path) -> Path:
    path = write_nifti(make_hu((16, 16, 16)), AFFINE, d / "cut.nii.gz")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


# zip -----------------------------------------------------------------------------


def _zip(members: Callable[[zipfile.ZipFile, Path], None], name: str = "scan.zip") -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(d / name, "w", zipfile.ZIP_DEFLATED) as zf:
            members(zf, d)
        return d / name

    return build


def _zip_ok(zf: zipfile.ZipFile, d: Path) -> None:
    for f in write_series(d / "src", HU):
        zf.write(f, f"DICOM/S1/{f.name}")


def _zip_dotdot(zf: zipfile.ZipFile, d: Path) -> None:
    _zip_ok(zf, d)
    zf.writestr("../../evil.sh", "#!/bin/sh\necho owned\n")


def _zip_absolute(zf: zipfile.ZipFile, d: Path) -> None:
    zf.writestr("/etc/cron.d/evil", "* * * * * root true\n")


def _zip_symlink(zf: zipfile.ZipFile, d: Path) -> None:
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = (0o120777 << 16)
    zf.writestr(info, "/etc/passwd")


def _zip_bomb(zf: zipfile.ZipFile, d: Path) -> None:
    info = zipfile.ZipInfo("bomb.dcm")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w") as out:
        chunk = bytes(1024 * 1024)
        for _ in range(32):  # 32 MiB of zeros -> ~32 kB compressed (ratio ~1000)
            out.write(chunk)


def _not_a_zip(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "scan.zip").write_bytes(b"PK\x03\x04" + bytes(100))  # local-header magic, then nothing
    return d / "scan.zip"


def _dicom_zip_polyglot(d: Path) -> Path:
    """A DICOM slice with a zip appended, named .zip: must be read as DICOM, never unpacked."""
    files = write_series(d / "src", HU)
    import io as _io

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../payload.sh", "echo owned")
    out = d / "innocent.zip"
    out.write_bytes(files[0].read_bytes() + buf.getvalue())
    return out


def _missing(d: Path) -> Path:
    return d / "does-not-exist"


def synthetic_cases() -> list[CorpusCase]:
    """Hand-built bad and unusual inputs (all tiny)."""
    c = CorpusCase
    return [
        c("valid_series", _valid_series, loads(check=equals_hu)),
        c("missing_path", _missing, fails("no such file")),
        c("empty_folder", _empty_folder, fails("no DICOM images")),
        c("non_dicom_folder", _non_dicom_folder, fails("no DICOM images")),
        c("zero_byte_file", _zero_byte, fails("empty file")),
        c("truncated_header", _truncated_header, fails("corrupt or truncated DICOM header")),
        c("truncated_pixels_in_series", _truncated_pixels_in_series, fails("truncated pixel data")),
        c("missing_preamble_file", _missing_preamble, fails("not a DICOM")),
        c("series_without_preambles", _series_without_preambles, fails("no DICOM images")),
        c("two_series", _two_series, fails("2 CT/MR series found")),
        c("localizer_mixed_in", _localizer, loads(check=warns("localizer"))),
        c("shuffled_file_names", _shuffled, loads(check=equals_hu)),
        c("missing_slice", lambda d: _series(d, _missing_slice), fails("missing slice")),
        c("duplicate_positions", lambda d: _series(d, _duplicate), fails("duplicate slice position")),
        c("gantry_tilt", lambda d: _series(d, _tilt), fails("gantry tilt")),
        c("inconsistent_orientation", lambda d: _series(d, _orientation), fails("inconsistent ImageOrientationPatient")),
        c("inconsistent_pixel_spacing", lambda d: _series(d, _pixel_spacing), fails("inconsistent PixelSpacing")),
        c("non_uniform_spacing", lambda d: _series(d, _non_uniform), fails("non-uniform slice spacing")),
        c("monochrome1_ct_keeps_hu", lambda d: _series(d, _monochrome1), loads(check=equals_hu)),
        c("monochrome1_mr_inverted", lambda d: _series(d, _monochrome1, modality="MR"), loads(check=mr_inverted)),
        c("rgb_series", lambda d: _series(d, _rgb), fails("colour image")),
        c("huge_rows_columns_tiny_files", lambda d: _series(d, _huge), fails("truncated pixel data")),
        c("three_slices", lambda d: _series(d, _three_slices), fails("only 3 slices")),
        c("slice_without_pixel_data", lambda d: _series(d, _no_pixel_data), fails("without pixel data")),
        c("lone_slice", _lone_slice, fails("single 2D slice")),
        c("one_file_of_series", _one_file_of_series, loads(check=warns("whole series"))),
        c("junk_beside_series", _junk_beside_series, loads(check=warns("non-DICOM"))),
        c("mz_executable_preamble", _executable_preamble(b"MZ"), fails("Windows (MZ) executable")),
        c("elf_executable_preamble", _executable_preamble(b"\x7fELF"), fails("Linux (ELF) executable")),
        c("rle_compressed_series", _rle_series, loads(check=equals_hu)),
        c("undecodable_compressed_series", _relabel_transfer_syntax, fails("pixel data")),
        c("enhanced_multiframe_shuffled", _multiframe, loads(check=equals_hu)),
        c("multiframe_without_groups", _legacy_multiframe, fails("without per-frame functional groups")),
        c("nifti_ok", _nifti("ok.nii.gz"), loads(check=equals_hu)),
        c("nifti_codes_zero", _nifti("nocodes.nii", edit=_codes_zero), loads(check=warns("both 0"))),
        c("nifti_nan_voxels", _nifti("nan.nii", array=np.where(HU > 1000, np.nan, HU), edit=lambda i: None),
          fails("NaN or Inf")),
        c("nifti_inf_voxels", _nifti("inf.nii", array=np.where(HU > 1000, np.inf, HU), edit=lambda i: None),
          fails("NaN or Inf")),
        c("nifti_scl_slope_0_with_inter", _nifti("s0.nii", scaling=(0.0, -1024.0)), fails("scl_slope is 0")),
        c("nifti_scl_slope_0_plain", _nifti("s0plain.nii", array=HU + 1024, scaling=(0.0, 0.0)),
          loads(check=lambda v: np.testing.assert_array_equal(v.array, HU + 1024))),
        c("nifti_scl_slope_inf", _nifti("sinf.nii", scaling=(np.inf, 0.0)), fails("non-finite intensity scaling")),
        c("nifti_truncated_gz", _truncated_gz, fails("NIfTI")),
        c("nifti_2d", _nifti("flat.nii", array=HU[:, :, 0], edit=lambda i: None), fails("one 3D volume")),
        c("zip_ok", _zip(_zip_ok), loads(check=equals_hu)),
        c("zip_dotdot_member", _zip(_zip_dotdot), fails("escapes the archive")),
        c("zip_absolute_member", _zip(_zip_absolute), fails("escapes the archive")),
        c("zip_symlink_member", _zip(_zip_symlink), fails("symbolic link")),
        c("zip_bomb", _zip(_zip_bomb), fails("zip bomb")),
        c("corrupt_zip", _not_a_zip, fails("zip")),
        c("dicom_zip_polyglot", _dicom_zip_polyglot, fails("single 2D slice")),
    ]


def pydicom_cases() -> list[CorpusCase]:
    """Every CT/MR file shipped in pydicom's test data, each alone in a folder: load or clean error."""
    cases = []
    for f in pydicom_ct_mr_files():
        rel = str(f).split("test_files/")[-1]

        def build(d: Path, src=f) -> Path:
            d.mkdir(parents=True, exist_ok=True)
            return Path(shutil.copy(src, d / src.name))

        cases.append(CorpusCase(f"pydicom:{rel}", build, Expect("either")))
    return cases


CORPUS: list[CorpusCase] = synthetic_cases() + pydicom_cases()
