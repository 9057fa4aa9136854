"""Class 6 of issue 21: archives and hostile files never escape the error handling.

Every case goes through ``load_volume`` (API), ``medmm info`` and ``medmm infer`` (CLI) and must
end in a volume or one ``error:`` line naming the input, exit 2 - never a traceback, a
MemoryError, a RuntimeError from zipfile or bytes written outside a temporary folder.
Allocations are bounded by header sizes before anything is read; a zip's *total* expansion is
checked before extracting.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fixtures.dicom_cases import make_hu, write_series
from medmm.errors import MedmmInputError
from medmm.io import load_volume

from .realrun import one_error_line, run_cli

HU = make_hu()


# ---------------------------------------------------------------------------- builders
def _series_zip(d: Path, name_of=lambda i, f: f.name, compression=zipfile.ZIP_DEFLATED) -> Path:
    files = write_series(d / "src", HU)
    out = d / "scan.zip"
    with zipfile.ZipFile(out, "w", compression) as zf:
        for i, f in enumerate(files):
            zf.write(f, name_of(i, f))
    return out


def _corrupt_deflate(d: Path) -> Path:
    """Damage the middle of the first member's deflate stream: zlib.error while decoding."""
    out = _series_zip(d)
    raw = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as zf:
        info = zf.infolist()[0]
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    for k in range(start + 10, start + min(info.compress_size - 4, 200)):
        raw[k] ^= 0xA5
    out.write_bytes(bytes(raw))
    return out


def _crc_mismatch(d: Path) -> Path:
    """A stored (uncompressed) member whose bytes were changed after zipping: CRC check fails."""
    out = _series_zip(d, compression=zipfile.ZIP_STORED)
    raw = bytearray(out.read_bytes())
    with zipfile.ZipFile(out) as zf:
        info = zf.infolist()[2]
    raw[info.header_offset + 30 + len(info.filename) + 400] ^= 0xFF
    out.write_bytes(bytes(raw))
    return out


def _set_flag(out: Path, bit: int) -> Path:
    """Set a general-purpose flag bit in every local and central header."""
    raw = bytearray(out.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = raw.find(sig)
        while pos != -1:
            flags = struct.unpack_from("<H", raw, pos + offset)[0] | bit
            struct.pack_into("<H", raw, pos + offset, flags)
            pos = raw.find(sig, pos + 4)
    out.write_bytes(bytes(raw))
    return out


def _encrypted(d: Path) -> Path:
    return _set_flag(_series_zip(d), 0x1)


def _truncated_zip(d: Path) -> Path:
    out = _series_zip(d)
    out.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    return out


def _unknown_method(d: Path) -> Path:
    out = _series_zip(d, compression=zipfile.ZIP_STORED)
    raw = bytearray(out.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        pos = raw.find(sig)
        while pos != -1:
            struct.pack_into("<H", raw, pos + offset, 99)  # AES / unknown method id
            pos = raw.find(sig, pos + 4)
    out.write_bytes(bytes(raw))
    return out


def _bomb(d: Path, members: int = 60, size: int = 15 * 1024**2) -> Path:
    """The issue's bomb: 60 members of 15 MiB zeros (each under the per-member limit)."""
    out = d / "bomb.zip"
    d.mkdir(parents=True, exist_ok=True)
    zeros = bytes(size)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in range(members):
            zf.writestr(f"slice_{i:03d}.dcm", zeros)
    return out


def _many_small_bomb(d: Path) -> Path:
    return _bomb(d, members=400, size=1024**2)


def _member(name: str):
    def build(d: Path) -> Path:
        files = write_series(d / "src", HU)
        out = d / "evil.zip"
        with zipfile.ZipFile(out, "w") as zf:
            for f in files[:-1]:
                zf.write(f, f.name)
            zf.writestr(name, files[-1].read_bytes())
        return out

    return build


def _symlink_member(d: Path) -> Path:
    files = write_series(d / "src", HU)
    out = d / "link.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for f in files:
            zf.write(f, f.name)
        info = zipfile.ZipInfo("escape.dcm")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    return out


def _empty_zip(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(d / "empty.zip", "w"):
        pass
    return d / "empty.zip"


def _nested_zip_only(d: Path) -> Path:
    inner = _series_zip(d / "inner")
    out = d / "outer.zip"
    with zipfile.ZipFile(out, "w") as zf:
        zf.write(inner, "inner.zip")
    return out


def _nifti_header(shape, dtype_code=16, bitpix=32) -> bytes:
    """A valid NIfTI-1 header (348 bytes + 4 extension bytes) declaring ``shape``."""
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    hdr = img.header.copy()
    raw = bytearray(hdr.binaryblock)
    struct.pack_into("<8h", raw, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<hh", raw, 70, dtype_code, bitpix)
    struct.pack_into("<f", raw, 108, 352.0)  # vox_offset
    return bytes(raw) + b"\0\0\0\0"


def _huge_nifti(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "huge.nii").write_bytes(_nifti_header((30000, 30000, 30000)) + bytes(4096))
    return d / "huge.nii"


def _huge_nifti_gz(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "huge.nii.gz").write_bytes(gzip.compress(_nifti_header((30000, 30000, 30000)) + bytes(4096)))
    return d / "huge.nii.gz"


def _big_declared_gz(d: Path) -> Path:
    """Under the voxel limit (600³ float32 = 864 MB) but the gzip stream holds 4 kB of data."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "short.nii.gz").write_bytes(gzip.compress(_nifti_header((600, 600, 600)) + bytes(4096)))
    return d / "short.nii.gz"


def _big_declared_nii(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "short.nii").write_bytes(_nifti_header((600, 600, 600)) + bytes(4096))
    return d / "short.nii"


def _gzip_garbage_nifti(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    good = gzip.compress(_nifti_header((8, 8, 8)) + bytes(8 * 8 * 8 * 4))
    (d / "bad.nii.gz").write_bytes(good[:40] + bytes(b ^ 0x5A for b in good[40:120]) + good[120:])
    return d / "bad.nii.gz"


REFUSED = {
    "corrupt_deflate_stream": (_corrupt_deflate, "corrupt"),
    "crc_mismatch": (_crc_mismatch, "CRC"),
    "encrypted_flag": (_encrypted, "encrypted"),
    "truncated_zip": (_truncated_zip, "zip"),
    "unknown_compression_method": (_unknown_method, "zip"),
    "bomb_60_members_of_15_MiB": (_bomb, "zip bomb"),
    "bomb_400_members_of_1_MiB": (_many_small_bomb, "zip bomb"),
    "traversal_dotdot": (_member("../../evil.dcm"), "escapes"),
    "traversal_backslash": (_member("..\\..\\evil.dcm"), "escapes"),
    "traversal_absolute": (_member("/tmp/evil.dcm"), "escapes"),
    "traversal_drive_letter": (_member("C:/evil.dcm"), "escapes"),
    "symlink_member": (_symlink_member, "symbolic link"),
    "empty_zip": (_empty_zip, "no DICOM"),
    "nested_zip_only": (_nested_zip_only, "no DICOM"),
    "nifti_declares_30000_cubed": (_huge_nifti, "voxels"),
    "nifti_gz_declares_30000_cubed": (_huge_nifti_gz, "voxels"),
    "nifti_gz_declares_more_than_it_holds": (_big_declared_gz, "truncated"),
    "nifti_declares_more_than_it_holds": (_big_declared_nii, "truncated"),
    "nifti_gz_corrupt_stream": (_gzip_garbage_nifti, "NIfTI"),
}


@pytest.fixture(autouse=True)
def _private_tmp(tmp_path, monkeypatch):
    """Extraction goes to a temp folder this test can inspect (nothing may stay behind)."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    yield scratch
    left = [p for p in scratch.rglob("*") if p.is_file()]
    assert not left, f"extraction left files behind: {left[:3]}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_api_refuses_with_one_line(tmp_path, name):
    build, phrase = REFUSED[name]
    path = build(tmp_path / "case")
    with pytest.raises(MedmmInputError) as info:
        load_volume(path)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg and phrase.lower() in msg.lower(), msg
    assert not (tmp_path / "evil.dcm").exists() and not Path("/tmp/evil.dcm").exists()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_info_refuses_with_one_line(tmp_path, capsys, name):
    build, _ = REFUSED[name]
    path = build(tmp_path / "case")
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 2 and one_error_line(err) and path.name in err, err


def test_bomb_is_refused_before_anything_is_extracted(tmp_path, _private_tmp, monkeypatch):
    import medmm.io.archive as archive

    bomb = _bomb(tmp_path / "b")
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or real_open(self, *a, **k))
    with pytest.raises(MedmmInputError, match="zip bomb"):
        archive.extract_zip(bomb, _private_tmp / "x")
    assert opened == [], "a member was decompressed before the total-size check"


def test_info_extracts_a_zip_once(tmp_path, capsys, monkeypatch):
    import medmm.io.loader as loader

    calls = []
    real = loader.extract_zip
    monkeypatch.setattr(loader, "extract_zip", lambda *a, **k: calls.append(a) or real(*a, **k))
    path = _series_zip(tmp_path)
    code, out, err = run_cli(["info", str(path)], capsys)
    assert code == 0, err
    assert "series found (1)" in out and len(calls) == 1


@pytest.mark.parametrize(
    "label,name_of",
    [
        ("long_unicode", lambda i, f: "患者データ_" * 30 + f"{i:03d}.dcm"),
        ("long_accented_dirs", lambda i, f: "/".join(["répertoire_éèê" * 8] * 3) + f"/{i:03d}.dcm"),
        ("emoji_no_suffix", lambda i, f: "🫁" * 70 + str(i)),
        ("same_basename_in_folders", lambda i, f: f"part{i}/slice.dcm"),
    ],
)
def test_valid_zip_with_awkward_member_names_loads(tmp_path, label, name_of):
    path = _series_zip(tmp_path, name_of=name_of)
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, HU)
    assert vol.meta["source_format"] == "dicom-zip"


def test_error_about_a_member_names_the_member_not_the_extracted_copy(tmp_path):
    files = write_series(tmp_path / "src", HU)
    path = tmp_path / "cut.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in files:
            zf.writestr(f"ü/{f.name}", f.read_bytes()[:-100] if f == files[3] else f.read_bytes())
    with pytest.raises(MedmmInputError) as info:
        load_volume(path)
    assert "ü/slice_0004.dcm" in str(info.value) and "medmm-zip-" not in str(info.value)


@pytest.mark.parametrize("name", ["nifti_declares_30000_cubed", "bomb_60_members_of_15_MiB", "encrypted_flag",
                                  "corrupt_deflate_stream"])
def test_infer_refuses_before_writing_anything(tmp_path, capsys, monkeypatch, name):
    import medmm.inference

    class Untouchable:
        model_id = "x"

        def predict(self, *a, **k):  # loading happens inside predict: it must fail there
            from medmm.io import load_volume

            load_volume(a[0])
            raise AssertionError("a hostile input was loaded")

    monkeypatch.setattr(medmm.inference, "load_model", lambda *a, **k: Untouchable())
    path = REFUSED[name][0](tmp_path / "case")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["infer", str(path), "--model", "m", "--out", str(out), "-q"], capsys)
    assert code == 2 and one_error_line(err) and "Traceback" not in err, err
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize("value", [123, 4.5, b"/tmp", ["a"], "   "])
def test_api_refuses_values_that_are_not_paths(value):
    with pytest.raises(MedmmInputError):
        load_volume(value)


def test_dicom_series_allocation_is_bounded_by_declared_sizes(tmp_path, monkeypatch):
    """Compressed slices can declare any size; the series' total is checked before allocating."""
    import medmm.io.dicom_volume as dicom_volume

    write_series(tmp_path / "s", HU)
    monkeypatch.setattr(dicom_volume, "MAX_VOXELS", HU.size - 1)
    with pytest.raises(MedmmInputError, match="voxel limit"):
        load_volume(tmp_path / "s")
    monkeypatch.setattr(dicom_volume, "MAX_VOXELS", HU.size)
    assert load_volume(tmp_path / "s").shape == HU.shape
