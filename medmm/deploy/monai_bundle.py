"""A MONAI bundle of the image path: the native format of MONAI Deploy / MONAI Label users.

Layout (MONAI bundle specification)::

    configs/metadata.json     versions, required packages, input/output format, labels
    configs/inference.json    LoadImage → the run's deterministic preprocessing → TorchScript → JSON
    configs/labels.json, configs/thresholds.json, configs/preprocessing.json
    models/model.ts           the traced image path (`medmm.deploy.image_path`)
    ontology/<file>.ttl       the run's ontology (codes and hierarchy of the labels)
    docs/README.md            what the model computes and how to run it

``python -m monai.bundle run --config_file configs/inference.json --image scan.nii.gz`` (run
inside the bundle folder, or add ``--bundle_root PATH``) writes ``eval/probabilities.json``
(raw probability per finding; decisions = probability >= thresholds.json). It needs only MONAI,
PyTorch and nibabel — not medmm. The preprocessing is the run's own MONAI transform chain
(`medmm.data.transforms.deterministic_transforms`) written as bundle config; runs that crop to the
foreground use MONAI's ``CropForegroundd`` with the same intensity threshold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medmm.errors import MedmmInputError


def _preprocessing_config(prep: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's deterministic preprocessing (`medmm.data.transforms`) as MONAI bundle components."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "reader": "NibabelReader"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": prep.get("orientation", "RAS"),
         "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
    ]
    if prep.get("spacing") is not None:
        steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": prep["spacing"],
                      "mode": prep.get("interpolation", "bilinear"), "dtype": "$np.float32"})
    (a_min, a_max), (b_min, b_max) = prep["hu_window"], prep.get("intensity_range", [0.0, 1.0])
    steps.append({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": a_min, "a_max": a_max,
                  "b_min": b_min, "b_max": b_max, "clip": bool(prep.get("clip", True))})
    if prep.get("crop_foreground"):
        from medmm.config import hu_to_intensity

        threshold = float(hu_to_intensity(prep["foreground_hu"], _prep_model(prep)))
        steps.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                      "margin": prep.get("foreground_margin", 0), "allow_smaller": True,
                      "select_fn": f"$lambda x: x > {threshold!r}"})
    if prep.get("fit_at_inference") and prep.get("roi_size") is not None:
        if prep.get("fit") == "resize":
            steps.append({"_target_": "Resized", "keys": "image", "spatial_size": prep["roi_size"], "mode": "trilinear"})
        else:
            steps.append({"_target_": "ResizeWithPadOrCropd", "keys": "image", "spatial_size": prep["roi_size"],
                          "constant_values": b_min})
    steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": False})
    return steps


def _prep_model(prep: dict[str, Any]) -> Any:
    from medmm.config import PreprocessingConfig

    return PreprocessingConfig.model_validate(prep)


def inference_config(prep: dict[str, Any]) -> dict[str, Any]:
    """``configs/inference.json``: preprocessing → TorchScript image path → ``eval/probabilities.json``."""
    return {
        "imports": ["$import json", "$import os", "$import numpy as np", "$import torch"],
        "bundle_root": ".",
        "image": "",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "labels": "$json.load(open(os.path.join(@bundle_root, 'configs', 'labels.json')))",
        "network": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location='cpu').eval()",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing_config(prep)},
        "input": "$@preprocessing({'image': @image})['image'][None]",
        "probabilities": "$@network(@input)[0].tolist()",
        "run": [
            "$os.makedirs(@output_dir, exist_ok=True)",
            "$json.dump(dict(zip(@labels, @probabilities)), open(os.path.join(@output_dir, 'probabilities.json'), 'w'), indent=2)",
        ],
    }


def metadata(meta: Any, prep: dict[str, Any], labels: list[str]) -> dict[str, Any]:
    """``configs/metadata.json`` (MONAI bundle metadata schema fields)."""
    import monai
    import nibabel
    import numpy
    import torch

    import medmm
    from medmm.deploy.provenance import history

    roi = prep.get("roi_size")
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medmm {medmm.__version__} from run {meta.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": nibabel.__version__},
        "task": "Multi-label chest CT finding classification (image path of a medmm model)",
        "description": "Raw probability per finding from a chest CT; see docs/README.md for what the image path is.",
        "authors": "medmm",
        "copyright": "see the training data's licence",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": roi, "dtype": "float32", "value_range": prep.get("hu_window"),
                                 "is_patch_data": False, "channel_def": {"0": "image"}}},
            "outputs": {"pred": {"type": "probabilities", "format": "classification", "num_channels": len(labels),
                                 "spatial_shape": [len(labels)], "dtype": "float32", "value_range": [0, 1],
                                 "is_onehot": False, "channel_def": {str(i): name for i, name in enumerate(labels)}}},
        },
        "model_history": history(meta),
    }


def _readme(meta: Any, labels: list[str], parity: float) -> str:
    from medmm.deploy.image_path import __doc__ as image_path_doc

    return "\n".join([
        f"# {meta.name} — medmm image path as a MONAI bundle", "",
        "Run inside this folder (needs monai, torch, nibabel; not medmm):", "",
        "```", "python -m monai.bundle run --config_file configs/inference.json --image /path/to/scan.nii.gz", "```", "",
        "Writes `eval/probabilities.json`: one raw probability per finding. A finding is called positive when its",
        "probability is >= its value in `configs/thresholds.json` (chosen on the validation split at training).",
        "medmm's ontology-consistency step and report generation are not part of the bundle.", "",
        "## What the model computes", "", (image_path_doc or "").strip(), "",
        f"TorchScript vs PyTorch max abs probability difference at export: {parity:.2e}.", "",
        "## Findings", "", *[f"- {name}" for name in labels], "",
    ])


def write_bundle(run_dir: Path, out: Path) -> dict[str, Any]:
    """Write the MONAI bundle of ``run_dir`` into ``out`` (a new or empty folder).

    Raises:
        MedmmInputError: ``out`` is not empty, ``run_dir`` is not a usable run.
    """
    from medmm.deploy.export_formats import export_file
    from medmm.deploy.image_path import load_image_path

    if out.exists() and any(out.iterdir()):
        raise MedmmInputError(out, "bundle folder exists and is not empty; choose a new folder")
    module, meta = load_image_path(run_dir)
    prep = meta.preprocessing.model_dump(mode="json")
    labels = list(module.labels)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("configs", "models", "docs", "ontology"):
        (tmp / sub).mkdir(parents=True)
    record = export_file(module, meta, "torchscript", tmp / "models" / "model.ts")
    (tmp / "models" / "model.ts.json").unlink(missing_ok=True)
    files = {
        "configs/inference.json": inference_config(prep),
        "configs/metadata.json": metadata(meta, prep, labels),
        "configs/labels.json": labels,
        "configs/thresholds.json": {name: float(meta.thresholds[name]) for name in labels},
        "configs/preprocessing.json": prep,
    }
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    (tmp / "docs" / "README.md").write_text(_readme(meta, labels, record["max_abs_prob_diff"]), encoding="utf-8")
    ontology = _ontology_file(run_dir, meta)
    if ontology is not None:
        shutil.copyfile(ontology, tmp / "ontology" / ontology.name)
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return {"format": "monai-bundle", "path": str(out), "max_abs_prob_diff": record["max_abs_prob_diff"],
            "dynamic_spatial": record["dynamic_spatial"]}


def _ontology_file(run_dir: Path, meta: Any) -> Path | None:
    """The ontology file the run was trained with (the packaged default when it names none)."""
    from medmm.knowledge import load_ontology

    path = meta.ontology.path
    for candidate in ([run_dir / path, Path(path)] if path else []):
        if candidate.is_file():
            return candidate
    onto = load_ontology()
    source = getattr(onto, "path", None)
    return Path(source) if source and Path(source).is_file() else None
