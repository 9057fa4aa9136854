"""`Predictor`: a trained run directory turned into a scan → :class:`Result` function.

Like nnU-Net's ``nnUNetPredictor.initialize_from_trained_model_folder``, everything needed to
predict comes from the run directory (``medmm.json`` + weights): labels, preprocessing,
per-finding thresholds, the sliding-window settings and the ontology's hash, so inference can
never silently disagree with training.

Pipeline of :meth:`Predictor.predict`: load → preprocess exactly as training → encoder feature map
(direct pass, or MONAI sliding window when the volume exceeds the ROI) → pooled embedding + tokens
→ generated report → text encoder(report + indication) → fusion classifier → sigmoid → ontology
consistency (raw probabilities kept) → thresholds.

>>> model = load_model("runs/ct_chest_demo")            # doctest: +SKIP
>>> result = model.predict("scan_dir/", indication="dyspnea")  # doctest: +SKIP
>>> result.to_dataframe()                                # doctest: +SKIP
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medmm.errors import MedmmConfigError, MedmmInputError
from medmm.inference.explain import GradCamExplainer
from medmm.inference.result import Result
from medmm.inference.sliding import InfererSettings, compute_feature_map, needs_sliding_window

# Above this many voxels a CUDA run keeps the stitched feature map and the input on the CPU.
_CPU_STITCH_VOXELS = 2**25


class TensorPrediction(NamedTuple):
    """Batch outputs of :meth:`Predictor.predict_tensor` (all ``[B, L]`` except ``reports``)."""

    logits: torch.Tensor
    probs_raw: torch.Tensor
    probs: torch.Tensor
    reports: list[str]
    texts: list[str]
    report_checks: list[dict[str, Any]] = []


def _weights_id(run_dir: Path, checkpoint: str) -> str:
    """Short content hash of the checkpoint weights: the model's identity in outputs/resume."""
    path = run_dir / f"{checkpoint}.safetensors"
    if not path.exists():
        return "unknown"
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


class Predictor:
    """Diagnose scans with one trained model (see module docstring).

    Build it with :func:`load_model`. Attributes: ``labels``, ``thresholds`` (label → float),
    ``meta`` (the run's ``medmm.json``), ``preprocessing``, ``inferer`` (:class:`InfererSettings`),
    ``ontology``, ``device``, ``model_id``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        meta: dict[str, Any],
        run_dir: Path,
        checkpoint: str,
        device: torch.device,
        ontology: Any,
    ):
        from medmm.data.transforms import PreprocessingConfig

        self.model = model.to(device).eval()
        self.meta = meta
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.device = device
        self.ontology = ontology
        self.labels: list[str] = list(meta.get("labels") or getattr(model, "labels"))
        self.thresholds = _read_thresholds(meta.get("thresholds"), self.labels, run_dir)
        workflow = meta.get("workflow") or {}
        prep = meta.get("preprocessing") or workflow.get("preprocessing")
        if prep is None:
            raise MedmmConfigError(run_dir / "medmm.json", "no 'preprocessing' stored; re-train with this medmm")
        self.preprocessing = prep if isinstance(prep, PreprocessingConfig) else PreprocessingConfig(**prep)
        self.inferer = InfererSettings.from_meta(meta, where=str(run_dir / "medmm.json"))
        self.constraints = ontology.constraints(self.labels)
        text = meta.get("text") or (workflow.get("training") or {}).get("text") or {}
        self.use_generated_report = bool(text.get("use_generated_report", True))
        self.use_indication = bool(text.get("use_indication", True))
        self.model_id = f"{meta.get('name') or run_dir.name}@{_weights_id(run_dir, checkpoint)}"
        self._init_report_checks(ontology)

    def _init_report_checks(self, ontology: Any) -> None:
        """Calibration of the logits and the report verifier (issue 16; medmm.models.calibration/report_verifier)."""
        from medmm.knowledge import ReportLabeler
        from medmm.models.calibration import Calibration
        from medmm.models.report_verifier import ReportVerifier

        self.calibration = Calibration(self.meta.get("calibration"), self.labels)
        self.verifier = ReportVerifier(ReportLabeler(ontology, self.labels), self.labels,
                                       getattr(self.model, "report_generator", None))

    # --------------------------------------------------------------- stages
    def preprocess(self, path_or_volume: Any, series: str | None = None) -> torch.Tensor:
        """The exact training-time preprocessing of a path or Volume → ``[1, X, Y, Z]`` tensor."""
        from medmm.data.transforms import preprocess_volume

        volume = self._load(path_or_volume, series)
        return preprocess_volume(volume, self.preprocessing)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """Encoder feature map of ``[B, 1, X, Y, Z]`` (sliding window when larger than the ROI)."""
        sw_device, stitch_device = self._devices(image)
        return compute_feature_map(self.model.feature_map, image, self.inferer, sw_device, stitch_device).to(
            self.device
        )

    def forward_tensor(
        self,
        x: torch.Tensor,
        texts: list[str] | None = None,
        indications: list[str | None] | None = None,
    ) -> torch.Tensor:
        """Differentiable logits ``[B, L]`` for preprocessed images ``x`` ``[B, 1, X, Y, Z]``.

        Gradients flow to ``x`` (for robustness evaluation / adversarial attacks). ``texts`` are
        the fusion-head texts; when None they are made from reports generated for ``x`` (without
        gradient, since decoding is discrete) plus ``indications``.
        """
        x = x.to(self.device)
        fm = self.feature_map(x)
        pooled, tokens = self.model.embed(fm)
        if texts is None:
            texts = self.fusion_texts(tokens, indications)
        if len(texts) != x.shape[0]:
            raise ValueError(f"got {len(texts)} texts for a batch of {x.shape[0]} images")
        return self.calibration.logits(self.model.classify(pooled, self.text_embedding(texts), tokens))

    def text_embedding(self, texts: list[str]) -> torch.Tensor | None:
        """Fusion-head text embeddings, or None for an image-only model."""
        if not getattr(self.model, "uses_text", True):
            return None
        return self.model.encode_text(list(texts))

    def fusion_texts(self, tokens: torch.Tensor, indications: list[str | None] | None = None) -> list[str]:
        """Generate reports from image tokens and combine each with its indication."""
        with torch.no_grad():
            reports = self._drafts(tokens.detach())
        return self.texts_for(reports, indications)

    def _drafts(self, tokens: torch.Tensor) -> list[str]:
        """Reports the fusion head reads (ungrounded drafts); a grounded model's head reads none."""
        from medmm.models.report_verifier import is_grounded

        if is_grounded(self.model) or not self.use_generated_report:
            return [""] * tokens.shape[0]
        return list(self.model.generate_reports(tokens))

    def verified_reports(self, tokens: torch.Tensor, decisions: torch.Tensor, drafts: list[str]) -> list[Any]:
        """Reports grounded on (and verified against) ``decisions`` (``medmm.models.report_verifier``)."""
        from medmm.models.report_verifier import is_grounded, write_verified_reports

        grounded = is_grounded(self.model) or not self.use_generated_report
        return write_verified_reports(self.model, tokens, decisions.bool(), self.verifier,
                                      None if grounded else drafts)

    def texts_for(self, reports: list[str], indications: list[str | None] | None = None) -> list[str]:
        """Fusion-head texts exactly as in training (the run's ``text`` settings decide the parts)."""
        from medmm.training.validation import fusion_texts

        indications = [i or "" for i in (indications or [None] * len(reports))]
        return fusion_texts(reports, indications, self.use_generated_report, self.use_indication)

    def predict_tensor(
        self, x: torch.Tensor, indications: list[str | None] | None = None
    ) -> TensorPrediction:
        """Batch prediction on preprocessed images (no gradient): logits, raw/consistent probs."""
        from medmm.knowledge import make_consistent

        with torch.inference_mode():
            x = x.to(self.device)
            fm = self.feature_map(x)
            pooled, tokens = self.model.embed(fm)
            drafts = self._drafts(tokens)
            texts = self.texts_for(drafts, indications)
            logits = self.calibration.logits(self.model.classify(pooled, self.text_embedding(texts), tokens))
            probs_raw = torch.sigmoid(logits)
            probs = make_consistent(probs_raw.cpu(), self.constraints, track_repairs=False).probs
            checked = self.verified_reports(tokens, self.decide(probs), drafts)
        return TensorPrediction(logits.cpu(), probs_raw.cpu(), probs.cpu(), [c.text for c in checked], texts,
                                [c.to_json() for c in checked])

    # -------------------------------------------------------------- predict
    def predict(self, path_or_volume: Any, indication: str | None = None, series: str | None = None) -> Result:
        """Diagnose one scan (DICOM file/folder/zip, NIfTI, or a :class:`medmm.io.Volume`).

        Args:
            path_or_volume: what to diagnose.
            indication: optional clinical indication, given to the text encoder with the report.
            series: DICOM series UID (suffix) when a folder holds several series.

        Returns:
            :class:`Result` with raw and ontology-consistent probabilities, decisions, the
            generated report and a Grad-CAM explainer.

        Raises:
            MedmmInputError: the input cannot be read.
        """
        from medmm.data.transforms import preprocess_volume
        from medmm.knowledge import make_consistent

        start = time.perf_counter()
        volume = self._load(path_or_volume, series)
        input_info = _input_info(volume)
        volume_affine = volume.affine
        source_files = list(volume.source_files)
        image = preprocess_volume(volume, self.preprocessing)
        del volume  # the caller may still hold it; ours goes before the model runs
        gc.collect()
        image_affine = _affine_of(image, volume_affine, self.preprocessing)
        image_shape = tuple(int(s) for s in image.shape[1:])
        sliding = needs_sliding_window(image_shape, self.inferer.roi_size)

        with torch.inference_mode():
            fm = self.feature_map(image.as_tensor()[None] if hasattr(image, "as_tensor") else image[None])
            pooled, tokens = self.model.embed(fm)
            draft = self._drafts(tokens)
            text_emb = self.text_embedding(self.texts_for(draft, [indication]))
            logits = self.calibration.logits(self.model.classify(pooled, text_emb, tokens))
            probs_raw = torch.sigmoid(logits).cpu()
        consistent = make_consistent(probs_raw, self.constraints)
        probs = consistent.probs
        repairs = list(consistent.repairs[0])
        # per-finding thresholds differ, so thresholding consistent probabilities could still give
        # inconsistent decisions; consistent_decisions guarantees them (docs/knowledge.md)
        decisions = self.decide(probs)[0].tolist()
        checked = self.verified_reports(tokens, torch.tensor([decisions]), draft)[0]

        findings = self._findings(probs_raw[0].tolist(), probs[0].tolist(), repairs, decisions)
        by_name = {row["finding"]: row for row in findings}
        explainer = GradCamExplainer(
            self.model,
            fm,
            text_emb,
            self.labels,
            image_shape,
            image_affine,
            by_name,
            details_fn=lambda label: self._explain_details(label, repairs),
        )
        image_np = np.asarray(image[0], dtype=np.float32)
        del image
        return Result(
            findings=findings,
            report=checked.text,
            report_check=checked.to_json(),
            indication=indication,
            model=self.model_info(),
            input=input_info,
            preprocessed={
                "shape": list(image_shape),
                "spacing": [round(float(s), 4) for s in np.linalg.norm(image_affine[:3, :3], axis=0)],
                "feature_shape": list(int(s) for s in fm.shape[2:]),
            },
            inference={
                "sliding_window": bool(sliding),
                "roi_size": list(self.inferer.roi_size),
                "overlap": self.inferer.overlap,
                "mode": self.inferer.mode,
                "device": str(self.device),
                "text": {"use_generated_report": self.use_generated_report, "use_indication": self.use_indication},
                "seconds": round(time.perf_counter() - start, 3),
            },
            consistency={
                "n_repairs": len(repairs),
                "repairs": [_repair_text(r) for r in repairs],
                "max_change": float((probs - probs_raw).abs().max()),
            },
            image=image_np,
            image_affine=image_affine,
            source_files=source_files,
            _explainer=explainer,
        )

    # ------------------------------------------------------------- helpers
    def model_info(self) -> dict[str, Any]:
        """Identity of the model written into every output (no paths beyond the run's name)."""
        from medmm import __version__

        return {
            "id": self.model_id,
            "run": self.meta.get("name") or self.run_dir.name,
            "checkpoint": self.checkpoint,
            "labels": list(self.labels),
            "ontology_sha256": getattr(self.ontology, "sha256", None),
            "medmm_version": __version__,
        }

    def _load(self, path_or_volume: Any, series: str | None):
        from medmm.io import Volume

        if isinstance(path_or_volume, Volume):
            return path_or_volume
        from medmm.io import load_volume

        return load_volume(path_or_volume, series=series)

    def _devices(self, image: torch.Tensor) -> tuple[torch.device, torch.device]:
        """(window device, stitching device).

        Windows run on the predictor's device. On CUDA the stitched map goes where the run's
        ``inferer.device`` says, else to the CPU for big volumes (those that may not fit).
        """
        if self.device.type != "cuda":
            return self.device, self.device
        if self.inferer.device:
            return self.device, torch.device(self.inferer.device)
        if image.numel() > _CPU_STITCH_VOXELS:
            return self.device, torch.device("cpu")
        return self.device, self.device

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Ontology-consistent positive/negative decisions ``[B, L]`` at the stored thresholds."""
        from medmm.knowledge import consistent_decisions

        thresholds = torch.tensor([float(self.thresholds[label]) for label in self.labels], dtype=probs.dtype)
        decisions, _ = consistent_decisions(probs.cpu(), self.constraints, thresholds)
        return decisions

    def _findings(self, raw: list[float], probs: list[float], repairs: list[Any],
                  decisions: list[bool]) -> list[dict[str, Any]]:
        rows = []
        for label, p_raw, p, positive in zip(self.labels, raw, probs, decisions):
            thr = float(self.thresholds[label])
            rows.append(
                {
                    "finding": label,
                    "probability_raw": round(float(p_raw), 6),
                    "probability": round(float(p), 6),
                    "threshold": thr,
                    "positive": bool(positive),
                    "codes": _codes(self.ontology, label),
                    "ontology_path": _path(self.ontology, label),
                    "repaired": [_repair_text(r) for r in repairs if getattr(r, "label", None) == label],
                    "reliable": label not in self.calibration.unreliable,
                    "unreliable_reason": self.calibration.unreliable.get(label),
                }
            )
        return rows

    def _explain_details(self, label: str, repairs: list[Any]) -> dict[str, Any]:
        from medmm.knowledge import explain_finding

        return explain_finding(self.ontology, label, repairs, labels=self.labels)

    def __repr__(self) -> str:
        return f"Predictor(model={self.model_id!r}, labels={len(self.labels)}, device={self.device})"


def load_model(
    run_dir: str | Path,
    device: str | torch.device | None = None,
    checkpoint: str = "best",
    allow_ontology_mismatch: bool = False,
    ontology: Any = None,
) -> Predictor:
    """Build a :class:`Predictor` from a run directory (``medmm.json`` + ``<checkpoint>.safetensors``).

    Args:
        run_dir: a directory written by ``medmm train``.
        device: ``"cpu"``, ``"cuda"``; default CUDA when available.
        checkpoint: checkpoint name inside the run (``best``, ``last``).
        allow_ontology_mismatch: use the current ontology even if its sha256 differs from the one
            the model was trained with (consistency constraints may then differ from training).
        ontology: an already loaded :class:`medmm.knowledge.Ontology` (default: the run's).

    Raises:
        MedmmInputError: ``run_dir`` is not a run directory.
        MedmmConfigError: the ontology differs from training (unless allowed), bad stored config.
    """
    from medmm.models import load_checkpoint

    run_dir = Path(run_dir)
    meta_path = run_dir / "medmm.json"
    if not meta_path.is_file():
        raise MedmmInputError(run_dir, "not a medmm run directory (no medmm.json); train one with `medmm train`")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedmmInputError(None, "--device cuda requested but no CUDA device is available; use --device cpu")
    if not (run_dir / f"{checkpoint}.safetensors").is_file() and checkpoint == "best":
        if (run_dir / "last.safetensors").is_file():
            checkpoint = "last"
    model, meta = load_checkpoint(run_dir, name=checkpoint)
    if not meta:
        meta = json.loads(meta_path.read_text())
    onto = ontology if ontology is not None else _load_ontology(run_dir, meta)
    _check_ontology(onto, meta, run_dir, allow_ontology_mismatch)
    return Predictor(model, meta, run_dir, checkpoint, device, onto)


# ----------------------------------------------------------------- helpers
def _load_ontology(run_dir: Path, meta: dict[str, Any]):
    from medmm.knowledge import load_ontology

    stored = meta.get("ontology")
    path = None
    if isinstance(stored, dict):
        path = stored.get("path")
    elif isinstance(stored, str):
        path = stored
    path = path or meta.get("ontology_path") or ((meta.get("workflow") or {}).get("ontology") or {}).get("path")
    candidates = [Path(path)] if path else []
    if path and not Path(path).is_absolute():
        candidates.insert(0, run_dir / path)
    for candidate in candidates:
        if candidate.is_file():
            return load_ontology(candidate)
    return load_ontology()


def _check_ontology(onto: Any, meta: dict[str, Any], run_dir: Path, allow: bool) -> None:
    stored = meta.get("ontology_sha256")
    if stored is None and isinstance(meta.get("ontology"), dict):
        stored = meta["ontology"].get("sha256")
    if stored is None:
        return
    if hasattr(onto, "check_compatible"):
        onto.check_compatible(stored, allow_mismatch=allow)
        return
    if onto.sha256 != stored and not allow:
        raise MedmmConfigError(
            run_dir / "medmm.json",
            f"ontology sha256 {onto.sha256[:12]}... differs from the one used in training ({stored[:12]}...); "
            "pass allow_ontology_mismatch=True to use it anyway",
        )


def _read_thresholds(stored: Any, labels: list[str], run_dir: Path) -> dict[str, float]:
    if stored is None:
        return {label: 0.5 for label in labels}
    if isinstance(stored, (list, tuple)):
        if len(stored) != len(labels):
            raise MedmmConfigError(run_dir / "medmm.json", f"thresholds has {len(stored)} values for {len(labels)} labels")
        return {label: float(t) for label, t in zip(labels, stored)}
    return {label: float(stored.get(label, 0.5)) for label in labels}


def _affine_of(image: Any, volume_affine: np.ndarray, cfg: Any) -> np.ndarray:
    """Voxel → RAS affine of the preprocessed grid.

    Taken from the MetaTensor when preprocessing keeps it; otherwise rebuilt: the input affine
    reoriented to RAS (nibabel) with columns rescaled to the target spacing. The rebuilt origin
    ignores a foreground crop, which only shifts where the heatmap sits in world space.
    """
    affine = getattr(image, "affine", None)
    if affine is not None:
        return np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    import nibabel as nib

    ornt = nib.orientations.io_orientation(volume_affine)
    target = nib.orientations.axcodes2ornt(tuple(cfg.orientation), labels=(("L", "R"), ("P", "A"), ("I", "S")))
    transform = nib.orientations.ornt_transform(ornt, target)
    ras = volume_affine @ nib.orientations.inv_ornt_aff(transform, image.shape[1:])
    if cfg.spacing is not None:
        norms = np.linalg.norm(ras[:3, :3], axis=0)
        ras[:3, :3] = ras[:3, :3] / norms * np.asarray(cfg.spacing, dtype=np.float64)
    return ras


def _input_info(volume: Any) -> dict[str, Any]:
    """Geometry and de-identified acquisition facts (the io module already strips PHI from meta)."""
    keep = ("modality", "manufacturer", "slice_thickness", "source_format", "n_files")
    info: dict[str, Any] = {
        "shape": list(volume.shape),
        "spacing": [round(float(s), 4) for s in volume.spacing],
        "orientation": volume.orientation,
    }
    info.update({k: volume.meta[k] for k in keep if k in volume.meta and volume.meta[k] is not None})
    return info


def _codes(ontology: Any, label: str) -> list[dict[str, str]]:
    """Terminology codes of a label as plain dicts (``system``, ``code``, ``match``)."""
    try:
        codes = ontology.codes(label)
    except (KeyError, ValueError):  # a label unknown to the ontology has no codes
        return []
    return [{"system": c.system, "code": c.code, "match": c.match} for c in codes]


def _path(ontology: Any, label: str) -> list[str]:
    try:
        return [str(p) for p in ontology.path_to_root(label)]
    except (KeyError, ValueError):
        return [label]


def _repair_text(repair: Any) -> str:
    """A consistency repair as one line, e.g. ``Consolidation ⇒ Lung opacity: Lung opacity 0.20→0.90``."""
    return f"{repair.constraint}: {repair.label} {repair.before:.3f}→{repair.after:.3f}"
