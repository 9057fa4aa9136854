"""Medical knowledge: ontology, constraints, knowledge loss, consistency, report labeler.

>>> from medmm.knowledge import load_ontology
>>> onto = load_ontology()                      # ontologies/chest_ct.ttl
>>> c = onto.constraints(onto_labels := ["Consolidation", "Lung opacity"])
>>> c.describe()
['Consolidation ⇒ Lung opacity']
"""

from medmm.knowledge.consistency import (
    ConsistencyResult,
    Repair,
    consistent_decisions,
    make_consistent,
    threshold_scores,
    violation_rate,
    violations,
)
from medmm.knowledge.constraints import Constraints
from medmm.knowledge.explain import explain_finding
from medmm.knowledge.label_scores import clinical_efficacy_f1, label_f1
from medmm.knowledge.labeler import Mention, ReportLabeler
from medmm.knowledge.loss import constraint_terms, knowledge_loss
from medmm.knowledge.ontology import Code, Ontology, canonical_sha256, default_ontology_path, load_ontology

__all__ = [
    "Code",
    "ConsistencyResult",
    "Constraints",
    "Mention",
    "Ontology",
    "Repair",
    "ReportLabeler",
    "canonical_sha256",
    "clinical_efficacy_f1",
    "consistent_decisions",
    "constraint_terms",
    "default_ontology_path",
    "explain_finding",
    "knowledge_loss",
    "label_f1",
    "load_ontology",
    "make_consistent",
    "threshold_scores",
    "violation_rate",
    "violations",
]
