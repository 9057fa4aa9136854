"""`Predictor`: a trained run directory turned into a scan → :class:`Result` function.

Like nnU-Net's ``nnUNetPredictor.initialize_from_trained_model_folder``, everything needed to
predict comes from the run directory's `medmm.models.RunMeta` (and weights): labels,
preprocessing, per-finding thresholds, the sliding-window settings, the fusion-text settings and
the ontology's hash — read from that one typed record, without fallbacks, so inference can never
silently disagree with training.

Pipeline of :meth:`Predictor.predict`: load → preprocess exactly as training (a MetaTensor whose
affine follows every step) → encoder feature map (direct pass, or MONAI sliding window when the
volume exceeds the ROI) → :meth:`medmm.models.MedMM.predict_step` (report, fusion text, logits)
→ sigmoid → ontology consistency (raw probabilities kept) → thresholds.

>>> model = load_model("runs/ct_chest_demo")            # doctest: +SKIP
>>> result = model.predict("scan_dir/", indication="dyspnea")  # doctest: +SKIP
>>> result.to_dataframe()                                # doctest: +SKIP
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from medmm.errors import MedmmInputError
from medmm.inference.explain import GradCamExplainer
from medmm.inference.result import Result
from medmm.inference.result_rows import finding_rows, input_info, repair_text, weights_id
from medmm.inference.sliding import compute_feature_map, needs_sliding_window
from medmm.knowledge.hierarchy import group_rows
from medmm.models.run_meta import RunMeta

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


class Predictor:
    """Diagnose scans with one trained model (see module docstring).

    Build it with :func:`load_model`. Attributes: ``labels``, ``thresholds`` (label → float),
    ``meta`` (the run's `RunMeta`), ``preprocessing``, ``inferer`` (`InfererConfig`),
    ``ontology``, ``device``, ``model_id``.
    """

    def __init__(self, model: torch.nn.Module, meta: RunMeta, run_dir: Path, checkpoint: str,
                 device: torch.device, ontology: Any):
        self.model = model.to(device).eval()
        self.meta = meta
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        self.device = device
        self.ontology = ontology
        self.labels: list[str] = meta.labels
        self.thresholds = dict(meta.thresholds)
        self.preprocessing = meta.preprocessing
        self.inferer = meta.inferer
        self.constraints = ontology.constraints(self.labels)
        self.use_generated_report = meta.text.use_generated_report
        self.use_indication = meta.text.use_indication
        self.model_id = f"{meta.name}@{weights_id(run_dir, checkpoint)}"
        self._init_report_checks(ontology)

    def _init_report_checks(self, ontology: Any) -> None:
        """Calibration of the logits and the report verifier (issue 16; medmm.models.calibration/report_verifier)."""
        from medmm.knowledge import ReportLabeler
        from medmm.models.calibration import Calibration
        from medmm.models.report_verifier import ReportVerifier

        self.calibration = Calibration(self.meta.calibration, self.labels)
        from medmm.models.report_words import known_words

        generator = getattr(self.model, "report_generator", None)
        words = known_words(self.model.derived.report_words, generator, ontology) if generator is not None else None
        self.verifier = ReportVerifier(ReportLabeler(ontology, self.labels), self.labels, generator, words=words)

    def verified_reports(self, tokens: torch.Tensor, decisions: torch.Tensor, drafts: list[str]) -> list[Any]:
        """Reports grounded on (and verified against) ``decisions`` (``medmm.models.report_verifier``).

        ``drafts``: the reports `predict_step` decoded (ungrounded models); a grounded model writes
        its report here, from the decisions.
        """
        from medmm.models.report_verifier import is_grounded, write_verified_reports

        return write_verified_reports(self.model, tokens, decisions.bool(), self.verifier,
                                      None if is_grounded(self.model) else drafts)

    # --------------------------------------------------------------- stages
    def preprocess(self, path_or_volume: Any, series: str | None = None) -> torch.Tensor:
        """The exact training-time preprocessing of a path or Volume → ``MetaTensor [1, X, Y, Z]``."""
        from medmm.data.transforms import preprocess_volume

        volume = self._load(path_or_volume, series)
        return preprocess_volume(volume, self.preprocessing)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """Encoder feature map of ``[B, 1, X, Y, Z]`` (sliding window when larger than the ROI)."""
        sw_device, stitch_device = self._devices(image)
        return compute_feature_map(self.model.feature_map, image, self.inferer, sw_device, stitch_device).to(
            self.device
        )

    def step(self, x: torch.Tensor, indications: list[str | None] | None = None,
             text_emb: torch.Tensor | None = None, generate: bool = True) -> Any:
        """`MedMM.predict_step` on preprocessed images (sliding window when larger than the ROI).

        ``generate=False`` decodes no draft report unless the fusion head reads one.
        """
        x = torch.as_tensor(x).to(self.device)
        needs_report = self.use_generated_report and self.model.uses_text
        return self.model.predict_step(feature_map=self.feature_map(x), indications=indications,
                                       use_generated_report=self.use_generated_report,
                                       use_indication=self.use_indication, text_emb=text_emb,
                                       generate=generate or needs_report)

    def forward_tensor(self, x: torch.Tensor, texts: list[str] | None = None,
                       indications: list[str | None] | None = None) -> torch.Tensor:
        """Differentiable logits ``[B, L]`` for preprocessed images ``x`` ``[B, 1, X, Y, Z]``.

        Gradients flow to ``x`` (robustness evaluation / adversarial attacks). ``texts``: fixed
        fusion-head texts (e.g. those of the clean prediction); None = generate them for ``x``.
        """
        x = torch.as_tensor(x).to(self.device)
        if texts is None:
            return self.calibration.logits(self.step(x, indications).logits)
        if len(texts) != x.shape[0]:
            raise ValueError(f"got {len(texts)} texts for a batch of {x.shape[0]} images")
        if not self.model.uses_text:  # an image-only head reads no text: nothing to generate
            return self.calibration.logits(self.model.predict_step(
                feature_map=self.feature_map(x), generate=False, use_generated_report=False,
                use_indication=False).logits)
        return self.calibration.logits(self.step(x, text_emb=self.model.encode_text(list(texts))).logits)

    def predict_tensor(self, x: torch.Tensor, indications: list[str | None] | None = None,
                       reports: bool = True) -> TensorPrediction:
        """Batch prediction on preprocessed images (no gradient): logits, raw/consistent probs.

        ``reports=False`` skips writing and verifying reports (empty strings): probabilities only,
        e.g. for the many counterfactual twins of a faithfulness evaluation.
        """
        from medmm.knowledge import make_consistent

        with torch.inference_mode():
            out = self.step(x, indications, generate=reports)
            logits = self.calibration.logits(out.logits)
            probs_raw = torch.sigmoid(logits)
            probs = make_consistent(probs_raw.cpu(), self.constraints, track_repairs=False).probs
            if not reports:
                return TensorPrediction(logits.cpu(), probs_raw.cpu(), probs.cpu(), [""] * len(probs), out.texts)
            checked = self.verified_reports(out.tokens, self.decide(probs), out.reports)
        return TensorPrediction(logits.cpu(), probs_raw.cpu(), probs.cpu(), [c.text for c in checked], out.texts,
                                [c.to_json() for c in checked])

    # -------------------------------------------------------------- predict
    def predict(self, path_or_volume: Any, indication: str | None = None, series: str | None = None,
                force: bool = False) -> Result:
        """Diagnose one scan (DICOM file/folder/zip, NIfTI, or a :class:`medmm.io.Volume`).

        Args:
            path_or_volume: what to diagnose.
            indication: optional clinical indication, given to the text encoder with the report.
            series: DICOM series UID (suffix) when a folder holds several series.
            force: diagnose an input the plausibility gate refuses (its reasons become warnings).

        Returns:
            :class:`Result` with raw and ontology-consistent probabilities, decisions, the
            generated report and a Grad-CAM explainer.

        Raises:
            MedmmInputError: the input cannot be read, or is clearly not a chest CT
                (``inference/plausibility.py``; ``force=True`` overrides).
        """
        from medmm.data.transforms import grid_affine, preprocess_volume
        from medmm.knowledge import make_consistent

        start = time.perf_counter()
        volume = self._load(path_or_volume, series)
        input_warnings = _plausibility(volume, self.meta, force, path_or_volume)  # i21 hook: input gate
        input_facts = input_info(volume)
        input_grid = (tuple(int(n) for n in volume.shape), np.asarray(volume.affine, dtype=np.float64))
        source_files = list(volume.source_files)
        image = preprocess_volume(volume, self.preprocessing)
        del volume  # the caller may still hold it; ours goes before the model runs
        gc.collect()
        image_affine = grid_affine(image)
        image_shape = tuple(int(s) for s in image.shape[1:])
        sliding = needs_sliding_window(image_shape, self.inferer.roi_size)

        with torch.inference_mode():
            out = self.step(image.as_tensor()[None], [indication])
            fm, text_emb, tokens, drafts = out.feature_map, out.text_emb, out.tokens, out.reports
            probs_raw = torch.sigmoid(self.calibration.logits(out.logits)).cpu()
        consistent = make_consistent(probs_raw, self.constraints)
        probs = consistent.probs
        repairs = list(consistent.repairs[0])
        # per-finding thresholds differ, so thresholding consistent probabilities could still give
        # inconsistent decisions; consistent_decisions guarantees them (docs/knowledge.md)
        decisions = self.decide(probs)[0].tolist()
        checked = self.verified_reports(tokens, torch.tensor([decisions]), drafts)[0]

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
            input_grid=input_grid,
            **self._evidence_args(image, image_affine, sliding),  # i20 hook: evidence method + site check
        )
        image_np = np.asarray(image[0], dtype=np.float32)
        del image
        return Result(
            findings=findings,
            report=checked.text,
            report_check=checked.to_json(),
            indication=indication,
            model=self.model_info(),
            input=input_facts,
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
                "repairs": [repair_text(r) for r in repairs],
                "max_change": float((probs - probs_raw).abs().max()),
            },
            image=image_np,
            image_affine=image_affine,
            source_files=source_files,
            warnings=input_warnings,
            groups=group_rows(getattr(self.model, "hierarchy", None), out.group_logits, probs),  # issue 20 hook
            _explainer=explainer,
        )

    # ------------------------------------------------------------- helpers
    def model_info(self) -> dict[str, Any]:
        """Identity of the model written into every output (no paths beyond the run's name)."""
        from medmm import __version__

        return {
            "id": self.model_id,
            "run": self.meta.name,
            "checkpoint": self.checkpoint,
            "labels": list(self.labels),
            "ontology_sha256": self.meta.ontology.sha256,
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
        return finding_rows(self.labels, self.thresholds, self.ontology, self.calibration.unreliable,
                            raw, probs, repairs, decisions)

    def _evidence_args(self, image: Any, image_affine: np.ndarray, sliding: bool) -> dict[str, Any]:
        """Explainer settings of issue 20 (``medmm.inference.evidence``): the image the evidence
        methods re-run, the method (``self.evidence_method``) and the anatomical-site check."""
        from medmm.inference.evidence import DEFAULT_METHOD
        from medmm.inference.explain import site_checker

        return dict(image=image.as_tensor()[None], sliding=sliding,  # host memory; moved per explanation
                    method=getattr(self, "evidence_method", DEFAULT_METHOD),
                    calibrate=self.calibration.logits, feature_fn=self.feature_map,
                    min_shape=tuple(int(r) for r in self.inferer.roi_size),
                    site_check_fn=site_checker(np.asarray(image[0], dtype=np.float32), image_affine,
                                               self.preprocessing, self.ontology))

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
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedmmInputError(None, "--device cuda requested but no CUDA device is available; use --device cpu")
    if checkpoint == "best" and not (run_dir / "best.safetensors").is_file() and (run_dir / "last.safetensors").is_file():
        checkpoint = "last"  # a run interrupted before its first validation has only ``last``
    model, meta = load_checkpoint(run_dir, name=checkpoint)
    onto = ontology if ontology is not None else _load_ontology(run_dir, meta)
    onto.check_compatible(meta.ontology.sha256, allow_mismatch=allow_ontology_mismatch)
    return Predictor(model, meta, run_dir, checkpoint, device, onto)


# ----------------------------------------------------------------- helpers
def _load_ontology(run_dir: Path, meta: RunMeta):
    """The run's ontology file (relative paths are tried inside the run dir first), else medmm's."""
    from medmm.knowledge import load_ontology

    path = meta.ontology.path
    if path is None:
        return load_ontology()
    for candidate in ([run_dir / path] if not Path(path).is_absolute() else []) + [Path(path)]:
        if candidate.is_file():
            return load_ontology(candidate)
    return load_ontology()


def _plausibility(volume: Any, meta: Any, force: bool, source: Any) -> list[str]:
    """Refuse a clearly implausible input, else its warnings (see ``inference/plausibility.py``)."""
    from medmm.inference.plausibility import check_input
    from medmm.io import Volume

    return check_input(volume, meta, force=force, where=None if isinstance(source, Volume) else source)
