"""Explanations: what the ontology says about a finding and which constraints touched it.

Used by ``Result.explain(finding)`` at inference: for a positive finding, its path up the grouping
hierarchy, its terminology codes, the constraints that involve it and the repairs the consistency
operator made to it for this study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from medmm.knowledge.consistency import Repair
from medmm.knowledge.ontology import Ontology


def explain_finding(ontology: Ontology, label: str, repairs: Sequence[Repair] | None = None,
                    labels: Sequence[str] | None = None) -> dict:
    """Describe one finding: hierarchy path, codes, definition, constraints and repairs.

    Args:
        ontology: the ontology the model was trained with.
        label: the finding's label.
        repairs: one sample's repairs from :func:`make_consistent` (optional).
        labels: the model's output labels; restricts ``implies``/``implied_by``/``excludes`` to them
            (default: every concept of the ontology).

    Returns:
        dict with ``label``, ``definition``, ``path`` (label up to the root), ``site``, ``codes``
        (list of dicts), ``implies``, ``implied_by``, ``excludes`` (label lists) and ``repairs``
        (the repairs whose label or constraint names this finding).

    Raises:
        MedmmConfigError: if the label is not in the ontology (with a suggestion).

    >>> from medmm.knowledge import load_ontology
    >>> explain_finding(load_ontology(), "Consolidation")["implies"]
    ['Lung opacity']
    """
    ontology.require([label])
    pool = list(labels) if labels is not None else [n for n in ontology.labels if ontology.synonyms(n)]
    others = [o for o in pool if o != label]
    touched = [r._asdict() for r in (repairs or [])
               if r.label == label or _names(r.constraint, label)]
    return {
        "label": label,
        "definition": ontology.definition(label),
        "path": ontology.path_to_root(label),
        "site": ontology.anatomical_site(label),
        "codes": [asdict(c) for c in ontology.codes(label)],
        "implies": sorted(o for o in others if ontology.implies(label, o)),
        "implied_by": sorted(o for o in others if ontology.implies(o, label)),
        "excludes": sorted(o for o in others if ontology.excludes(label, o)),
        "repairs": touched,
    }


def _names(constraint: str, label: str) -> bool:
    """Whether a constraint string ('A ⇒ B', 'A ⊥ B', 'A ⇒ B (after C ⊥ D)') names ``label``."""
    head = constraint.split(" (after ", 1)[0]
    for sep in (" ⇒ ", " ⊥ "):
        if sep in head:
            return label in head.split(sep)
    return False
