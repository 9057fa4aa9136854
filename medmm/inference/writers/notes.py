"""Input warnings (``Result.warnings``, from the plausibility gate) in every output format.

``result.json`` carries them as ``warnings``; this module renders them for the HTML page, the
FHIR DiagnosticReport (an extension per warning: R4 has no ``note`` on DiagnosticReport) and the
DICOM SR (a TEXT "Comment" item per warning in the root container).
"""

from __future__ import annotations

import html
from typing import Any

WARNING_EXTENSION = "urn:medmm:input-warning"
COMMENT = ("121106", "DCM", "Comment")


def warnings_of(result: Any) -> list[str]:
    return [str(w) for w in (getattr(result, "warnings", None) or [])]


def html_block(result: Any) -> str:
    """A highlighted list of the warnings, or nothing."""
    items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings_of(result))
    if not items:
        return ""
    return ('<div class="warn" style="border:2px solid #c60;background:#fff4e5;padding:0.5em 1em">'
            f"<b>Input warnings: read the findings with care</b><ul>{items}</ul></div>")


def fhir_extensions(result: Any) -> list[dict[str, str]]:
    return [{"url": WARNING_EXTENSION, "valueString": w} for w in warnings_of(result)]


def add_sr_comments(sr: Any, result: Any) -> None:
    """Append one TEXT content item (DCM 121106 "Comment") per warning to the SR's root container."""
    warnings = warnings_of(result)
    if not warnings:
        return
    import highdicom as hd

    concept = hd.sr.CodedConcept(value=COMMENT[0], scheme_designator=COMMENT[1], meaning=COMMENT[2])
    for w in warnings:
        item = hd.sr.TextContentItem(name=concept, value=w[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        sr.ContentSequence.append(item)
