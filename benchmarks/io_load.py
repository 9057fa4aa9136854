"""Benchmark: medmm.load_volume vs SimpleITK ImageSeriesReader vs MONAI LoadImage(PydicomReader).

Generates a 200×512×512 CT series with medmm's own writer in a temporary folder, loads it with
the three readers (best of ``--repeat`` runs each, series discovery and sorting included), checks
that the voxels (in the same axis order) and the voxel → RAS affines agree, and prints the times,
the ratios medmm/SimpleITK and MONAI/medmm, and ``identical: True/False``. Wall-clock and CPU
seconds (all threads) are both shown: on a shared machine CPU time is the steadier comparison.

Goal (issue 2): medmm/SimpleITK ≤ 1.0 and MONAI/medmm ≥ 4.

    python benchmarks/io_load.py [--slices 200] [--size 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def make_series(out: Path, n_slices: int, size: int) -> np.ndarray:
    """Write a deterministic phantom CT series; return its HU array (X, Y, Z)."""
    from medmm.io.writers import write_dicom_series

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.7) ** 2 < 1
    lungs = (((x - 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1) | (((x + 0.4) / 0.3) ** 2 + (y / 0.45) ** 2 < 1)
    base = np.where(body, 40.0, -1000.0)
    base[lungs] = -850.0
    hu = np.empty((size, size, n_slices), dtype=np.float32)
    for k in range(n_slices):
        hu[:, :, k] = np.rint(base + rng.normal(0, 15, size=(size, size))).clip(-1024, 3071)
    affine = np.array([[-0.7, 0, 0, 180.0], [0, -0.7, 0, 200.0], [0, 0, 1.25, -300.0], [0, 0, 0, 1]])
    write_dicom_series(
        hu, affine, out, patient_name="Bench^Mark", patient_id="BENCH1", birth_date="19600101",
        study_date="20240101", series_description="benchmark", uid_seed="medmm-benchmark",
    )
    return hu


def time_best(fn, repeat: int):
    """Best wall-clock and best CPU (all threads) seconds over ``repeat`` calls, and the result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        result = None
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu, result


# Each loader is timed on the call that reads the series; conversion to (array, affine) in one
# convention (X, Y, Z) + voxel -> RAS happens after the clock stops.


def load_medmm(folder: Path):
    import medmm

    return medmm.load_volume(folder)


def to_common_medmm(vol):
    return vol.array, vol.affine


def load_sitk(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def to_common_sitk(img):
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    affine = np.eye(4)
    affine[:3, :3] = np.array(img.GetDirection()).reshape(3, 3) * np.array(img.GetSpacing())
    affine[:3, 3] = img.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


def load_monai(folder: Path):
    from monai.transforms import LoadImage

    return LoadImage(reader="PydicomReader", image_only=True)(str(folder))


def to_common_monai(img):
    return np.asarray(img), np.asarray(img.affine, dtype=np.float64)


def warm_up() -> None:
    """Import every library before timing so no loader pays for imports."""
    import warnings

    import pydicom  # noqa: F401
    import SimpleITK  # noqa: F401
    from monai.transforms import LoadImage

    import medmm.io  # noqa: F401

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LoadImage(reader="PydicomReader", image_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medmm-bench-") as tmp:
        folder = Path(tmp) / "series"
        t0 = time.perf_counter()
        truth = make_series(folder, args.slices, args.size)
        print(f"wrote {args.slices}x{args.size}x{args.size} CT series in {time.perf_counter() - t0:.1f} s")
        warm_up()
        results = {}
        loaders = (
            ("medmm", load_medmm, to_common_medmm),
            ("SimpleITK", load_sitk, to_common_sitk),
            ("MONAI PydicomReader", load_monai, to_common_monai),
        )
        for name, load, convert in loaders:
            seconds, cpu, raw = time_best(lambda: load(folder), args.repeat)
            arr, affine = convert(raw)
            del raw
            results[name] = (seconds, arr, affine, cpu)
            print(f"{name:22s} {seconds:7.3f} s wall  {cpu:7.3f} s CPU  shape={tuple(arr.shape)}")
        ref_arr, ref_aff = results["medmm"][1], results["medmm"][2]
        identical = np.array_equal(ref_arr, truth)
        for name, (_, arr, affine, _) in results.items():
            same_vox = arr.shape == ref_arr.shape and np.array_equal(np.asarray(arr, np.float32), ref_arr)
            same_aff = np.allclose(affine, ref_aff, atol=1e-4)
            print(f"{name:22s} voxels equal medmm: {same_vox}  affine equal medmm: {same_aff}")
            identical &= same_vox and same_aff
        names = ("medmm", "SimpleITK", "MONAI PydicomReader")
        t_medmm, t_sitk, t_monai = (results[k][0] for k in names)
        c_medmm, c_sitk, c_monai = (results[k][3] for k in names)
        print(f"medmm/SimpleITK = {t_medmm / t_sitk:.2f} wall, {c_medmm / c_sitk:.2f} CPU  (goal <= 1.0)")
        print(f"MONAI/medmm     = {t_monai / t_medmm:.2f} wall, {c_monai / c_medmm:.2f} CPU  (goal >= 4)")
        print(f"identical: {bool(identical)}")


if __name__ == "__main__":
    main()
