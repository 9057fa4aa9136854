"""JSON Schema (draft 2020-12) of ``result.json`` (``medmm.result/1``), as data.

Documented in ``docs/inference.md``; tests validate every written ``result.json`` against it
(``jsonschema``, a dev dependency through nbformat). No property may carry patient identity:
``input`` holds geometry and de-identified acquisition facts only.
"""

from __future__ import annotations

_NUM3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_INT3 = {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3}

FINDING_SCHEMA = {
    "type": "object",
    "required": ["finding", "probability_raw", "probability", "threshold", "positive", "codes", "ontology_path", "repaired"],
    "additionalProperties": False,
    "properties": {
        "finding": {"type": "string"},
        "probability_raw": {"type": "number", "minimum": 0, "maximum": 1},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1},
        "positive": {"type": "boolean"},
        "codes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["system", "code", "match"],
                "properties": {
                    "system": {"type": "string"},
                    "code": {"type": "string"},
                    "match": {"enum": ["exact", "close"]},
                },
            },
        },
        "ontology_path": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "repaired": {"type": "array", "items": {"type": "string"}},
        "reliable": {"type": "boolean"},
        "unreliable_reason": {"type": ["string", "null"]},
    },
}

# What the report verifier did (medmm.models.report_verifier): agreement and sentence repairs.
REPORT_CHECK_SCHEMA = {
    "type": "object",
    "required": ["agrees", "disagreements", "draft", "n_repairs", "repairs"],
    "additionalProperties": False,
    "properties": {
        "agrees": {"type": "boolean"},
        "disagreements": {"type": "array", "items": {"type": "string"}},
        "draft": {"type": "string"},
        "n_repairs": {"type": "integer", "minimum": 0},
        "repairs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["section", "action", "finding", "reason", "before", "after"],
                "additionalProperties": False,
                "properties": {
                    "section": {"enum": ["findings", "impression"]},
                    "action": {"enum": ["removed truncated", "removed repeat", "re-decoded", "removed",
                                        "forced mention", "ontology sentence"]},
                    "finding": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                    "before": {"type": ["string", "null"]},
                    "after": {"type": ["string", "null"]},
                },
            },
        },
    },
}

EVIDENCE_SCHEMA = {
    "type": "object",
    "required": ["finding", "method", "localised", "statement", "localisation", "site_check"],
    "additionalProperties": False,
    "properties": {
        "finding": {"type": "string"},
        "method": {"type": "string"},
        "localised": {"type": "boolean"},
        "statement": {"type": "string"},  # "localised evidence" / "no localised evidence" / the site flag
        "localisation": {
            "type": ["object", "null"],
            "required": ["localised", "reason", "peak", "peak_to_mean", "half_max_fraction"],
            "properties": {"localised": {"type": "boolean"}, "reason": {"type": "string"},
                           "peak": {"type": ["array", "null"], "items": {"type": "integer"}},
                           "peak_to_mean": {"type": "number"}, "half_max_fraction": {"type": "number"}},
        },
        "site_check": {
            "type": ["object", "null"],
            "required": ["site", "regions", "fraction_in_site", "main_region", "flag"],
            "properties": {"site": {"type": ["string", "null"]},
                           "regions": {"type": ["array", "null"], "items": {"type": "string"}},
                           "fraction_in_site": {"type": ["number", "null"]},
                           "main_region": {"type": ["string", "null"]}, "flag": {"type": ["string", "null"]}},
        },
    },
}

# One ontology group output (issue 20, medmm.knowledge.hierarchy): never below its findings.
GROUP_SCHEMA = {
    "type": "object",
    "required": ["group", "probability", "findings"],
    "additionalProperties": False,
    "properties": {
        "group": {"type": "string"},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "findings": {"type": "array", "items": {"type": "string"}},
    },
}

RESULT_JSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "medmm result",
    "type": "object",
    "required": ["schema", "model", "input", "preprocessed", "inference", "indication", "report", "findings", "consistency"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": "medmm.result/1"},
        "model": {
            "type": "object",
            "required": ["id", "run", "checkpoint", "labels", "ontology_sha256", "medmm_version"],
            "properties": {
                "id": {"type": "string"},
                "run": {"type": "string"},
                "checkpoint": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "ontology_sha256": {"type": ["string", "null"]},
                "medmm_version": {"type": "string"},
            },
        },
        "input": {
            "type": "object",
            "required": ["shape", "spacing", "orientation"],
            "additionalProperties": False,
            "properties": {
                "shape": _INT3,
                "spacing": _NUM3,
                "orientation": {"type": "string", "pattern": "^[LRAPSI]{3}$"},
                "modality": {"type": "string"},
                "manufacturer": {"type": "string"},
                "slice_thickness": {"type": ["number", "null"]},
                "source_format": {"type": "string"},
                "n_files": {"type": "integer"},
            },
        },
        "preprocessed": {
            "type": "object",
            "required": ["shape", "spacing", "feature_shape"],
            "properties": {"shape": _INT3, "spacing": _NUM3, "feature_shape": _INT3},
        },
        "inference": {
            "type": "object",
            "required": ["sliding_window", "roi_size", "overlap", "mode", "device", "seconds"],
            "properties": {
                "sliding_window": {"type": "boolean"},
                "roi_size": _INT3,
                "overlap": {"type": "number"},
                "mode": {"enum": ["constant", "gaussian"]},
                "device": {"type": "string"},
                "seconds": {"type": "number"},
            },
        },
        "indication": {"type": ["string", "null"]},
        "report": {"type": "string"},
        "report_check": REPORT_CHECK_SCHEMA,
        "findings": {"type": "array", "items": FINDING_SCHEMA, "minItems": 1},
        "consistency": {
            "type": "object",
            "required": ["n_repairs", "repairs", "max_change"],
            "properties": {
                "n_repairs": {"type": "integer", "minimum": 0},
                "repairs": {"type": "array", "items": {"type": "string"}},
                "max_change": {"type": "number", "minimum": 0},
            },
        },
        # why the input is doubtful (plausibility gate); absent in results of medmm < 0.x
        "warnings": {"type": "array", "items": {"type": "string"}},
        # evidence of the positive findings (medmm.inference.evidence / anatomy); absent when not explained
        "evidence": {"type": "array", "items": EVIDENCE_SCHEMA},
        # issue 20: ontology group outputs of a model with network.hierarchy (absent otherwise)
        "groups": {"type": "array", "items": GROUP_SCHEMA},
    },
}
