"""DICOM Comprehensive 3D SR (TID 1500 Measurement Report) of a Result, via highdicom.

One measurement group (TID 1501) per finding: the finding's concept as *finding type*, a
qualitative evaluation *<finding> = Present/Absent* (the thresholded decision) and the consistent
probability as a unitless measurement (DCM 122157 *Probability*), all attributed to the medmm
algorithm (name, version, model id). Finding codes come from the ontology: an *exact* SNOMED CT
(``SCT``), RadLex (``RADLEX``) or DICOM (``DCM``) code first, then a *close* one in the same order
(result.json says which kind of match it is); only a finding with no standard code at all uses the
local scheme ``99MEDMM`` (declared in CodingSchemeIdentificationSequence). The SR passes
``dciodvfy`` with 0 errors (``tests/inference/test_sr_dciodvfy.py``).

Source series often lack optional or Type 2 attributes (PatientSex, PatientBirthDate, StudyID,
AccessionNumber, ReferringPhysicianName, ...); they are added empty — Type 2 means "present, may
be empty" — so the SR is still built and still valid.

The SR references the source series: every source SOP instance is listed in the evidence
sequence (that is how a PACS attaches the SR to its study) and each group names the central
slice as its source image.

Patient identity — decided here, documented in ``docs/inference.md``:

* default: the SR is **de-identified** in the spirit of the DICOM PS3.15 Basic Profile. Patient
  name/ID become ``ANONYMOUS``; birth date, sex, age, study/series dates and times, accession
  number, physician and institution are emptied (all Type 2 or 3 in the SR); the SR's own
  ContentDate/ContentTime (Type 1) are the time medmm wrote the report, never a source date; every source UID (study, series, SOP instance,
  frame of reference) is replaced by a deterministic pseudonym ``generate_uid(entropy_srcs=
  [UID_SALT, uid])``. The SR therefore references the instances of a de-identified copy of the
  series made with the same mapping (the same source always maps to the same pseudonyms), and
  nothing in it links back to the source study.
* ``keep_phi=True`` (CLI ``--keep-phi``): patient and study modules and all UIDs are copied
  unchanged, so a clinical PACS files the SR with its source study. Use only inside the
  clinical environment.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from medmm.errors import MedmmInputError
from medmm.io.writers import atomic_write_bytes

LOCAL_SCHEME = "99MEDMM"
# ontology Code.system -> DICOM coding scheme designator, in order of preference
SCHEME_DESIGNATORS = {"SNOMED CT": "SCT", "RadLex": "RADLEX", "DICOM": "DCM"}

# Attributes emptied in the de-identified SR (patient and study identity, dates and people).
_PHI_REPLACE = {"PatientName": "ANONYMOUS^", "PatientID": "ANONYMOUS"}
_PHI_EMPTY = (
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "InstitutionName",
    "InstitutionAddress",
    "StudyDescription",
)


def finding_concept(finding: str, codes: list[dict[str, str]]):
    """The finding's coded concept: a standard code from the ontology, else a local code.

    Preference: exact SNOMED CT, RadLex, DICOM; then close matches in the same order (a close
    standard code is more useful to a PACS than a private one; result.json keeps the match kind).
    """
    from highdicom.sr import CodedConcept

    for match in ("exact", "close"):
        found = {c["system"]: c["code"] for c in reversed(codes or []) if c.get("match") == match}
        for system, designator in SCHEME_DESIGNATORS.items():
            if system in found:
                return CodedConcept(value=found[system], scheme_designator=designator, meaning=finding)
    return CodedConcept(value=local_code(finding), scheme_designator=LOCAL_SCHEME, meaning=finding)


def local_code(finding: str) -> str:
    """medmm's local code of a finding (≤ 16 characters, stable), e.g. ``LUNG-NODULE``."""
    return "-".join(finding.upper().split())[:16]


# UIDs that identify the source study/series/instances (pseudonymised when de-identifying).
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
UID_SALT = "medmm-sr-deid-v1"


def pseudonym_uid(uid: str) -> str:
    """Deterministic replacement UID for ``uid`` (same input → same pseudonym)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[UID_SALT, str(uid)])


def _pseudonymise_uids(ds):
    ds = copy.deepcopy(ds)
    for keyword in _UID_KEYWORDS:
        if keyword in ds:
            setattr(ds, keyword, pseudonym_uid(getattr(ds, keyword)))
    if "file_meta" in ds.__dict__ and ds.file_meta is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


# Patient/study attributes the SR copies from the first source instance (all Type 2 in the SR).
_TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _with_type2(ds):
    """A copy of ``ds`` with every Type 2 attribute the SR copies present (empty when missing)."""
    ds = copy.deepcopy(ds)
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in ds or ds[keyword].value is None:
            setattr(ds, keyword, "")
    return ds


def _deidentify(ds):
    ds = copy.deepcopy(ds)
    for keyword, value in _PHI_REPLACE.items():
        setattr(ds, keyword, value)
    for keyword in _PHI_EMPTY:
        if keyword in ds:
            setattr(ds, keyword, "")
    return ds


def read_evidence(source_files: list[Any]) -> list[Any]:
    """Headers (no pixels) of the source DICOM instances (files, or ``<archive.zip>/<member>``).

    Raises:
        MedmmInputError: the input was not DICOM, or its files are gone.
    """
    from medmm.io import read_dicom_header

    if not source_files:
        raise MedmmInputError(None, "--dicom-sr needs a DICOM input (this scan was not DICOM)")
    return [read_dicom_header(path) for path in source_files]


def build_sr(result: Any, evidence: list[Any], keep_phi: bool = False):
    """The highdicom ``Comprehensive3DSR`` dataset for ``result`` referencing ``evidence``."""
    import highdicom as hd
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    from medmm import __version__

    evidence = [_with_type2(ds) for ds in evidence]
    if not keep_phi:
        evidence = [_deidentify(_pseudonymise_uids(ds)) for ds in evidence]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="medmm", model_name=str(result.model.get("id"))
        ),
    )
    algorithm = hd.sr.AlgorithmIdentification(
        name="medmm", version=__version__, parameters=[str(result.model.get("id"))]
    )
    central = evidence[len(evidence) // 2]
    probability = codes.DCM.Probability  # DCM 122157
    groups = []
    for row in result.findings:
        concept = finding_concept(row["finding"], row.get("codes") or {})
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=row["finding"]),
                finding_type=concept,
                algorithm_id=algorithm,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(
                        name=concept, value=codes.SCT.Present if row["positive"] else codes.SCT.Absent
                    )
                ],
                measurements=[
                    hd.sr.Measurement(
                        name=probability, value=float(row["probability"]), unit=codes.UCUM.NoUnits, algorithm_id=algorithm
                    )
                ],
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(central)],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=CodedConcept(value="24627-2", scheme_designator="LN", meaning="CT Chest"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=9901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medmm",
        is_complete=True,
    )
    if not keep_phi:
        sr = _deidentify(sr)
    from medmm.inference.writers.notes import add_sr_comments  # i21 hook: input warnings as TEXT items

    add_sr_comments(sr, result)
    if any(finding_concept(r["finding"], r.get("codes") or []).scheme_designator == LOCAL_SCHEME
           for r in result.findings):
        _declare_local_scheme(sr)
    return sr


def _declare_local_scheme(sr) -> None:
    """List the private coding scheme in CodingSchemeIdentificationSequence (PS3.3 C.12.1.1.2)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "medmm local finding codes"
    item.CodingSchemeResponsibleOrganization = "medmm"
    existing = list(getattr(sr, "CodingSchemeIdentificationSequence", []))
    if all(getattr(e, "CodingSchemeDesignator", None) != LOCAL_SCHEME for e in existing):
        sr.CodingSchemeIdentificationSequence = Sequence([*existing, item])


def write_dicom_sr(result: Any, path: str | Path, keep_phi: bool = False) -> Path:
    """Build the SR and write it atomically as a DICOM Part 10 file (128-byte zero preamble)."""
    sr = build_sr(result, read_evidence(list(result.source_files)), keep_phi=keep_phi)
    buf = io.BytesIO()
    sr.preamble = b"\x00" * 128
    sr.save_as(buf, enforce_file_format=True)
    return atomic_write_bytes(path, buf.getvalue())
