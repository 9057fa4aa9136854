"""Load a findings ontology (Turtle, RDF/XML, OWL) with rdflib and validate its logic.

The ontology is the authority on what the model's labels mean: their synonyms (used by the report
labeler), terminology codes, place in a grouping hierarchy, and the implications/exclusions that
predictions must respect. rdflib parses the file and answers SPARQL; networkx holds the
implication graph (child -> parent edges from ``rdfs:subClassOf`` and ``ct:implies``) so cycles,
contradictions and transitive closures are library calls rather than hand-written graph code.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import networkx as nx
import rdflib
from rdflib import OWL, RDF, RDFS, SKOS, Literal, URIRef
from rdflib.collection import Collection
from rdflib.compare import to_canonical_graph
from rdflib.util import guess_format

from medmm.errors import MedmmConfigError
from medmm.knowledge.constraints import Constraints

log = logging.getLogger(__name__)

CT = rdflib.Namespace("https://w3id.org/medmm/chest-ct#")
#: Non-taxonomic implication property (A ct:implies B).
IMPLIES = CT.implies
#: Anatomical site property.
ANATOMICAL_SITE = CT.anatomicalSite

# Terminology systems recognised in skos:*Match IRIs, by IRI prefix.
_CODE_SYSTEMS = {
    "http://radlex.org/RID/": "RadLex",
    "http://snomed.info/id/": "SNOMED CT",
    "http://dicom.nema.org/resources/ontology/DCM/": "DICOM",
}
_MATCHES = {SKOS.exactMatch: "exact", SKOS.closeMatch: "close"}


def default_ontology_path() -> Path:
    """Path of the bundled chest-CT ontology (``ontologies/chest_ct.ttl``).

    Looked up next to the source tree first (editable installs, a git checkout) and then under
    ``sys.prefix/share/medmm/ontologies`` (wheel installs ship it as data files).

    Raises:
        MedmmConfigError: when neither location holds the file.
    """
    import medmm

    candidates = [
        Path(medmm.__file__).resolve().parents[1] / "ontologies" / "chest_ct.ttl",
        Path(sys.prefix) / "share" / "medmm" / "ontologies" / "chest_ct.ttl",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise MedmmConfigError(
        "ontology", f"bundled chest_ct.ttl not found (looked in {', '.join(map(str, candidates))}); "
        "pass the path of an ontology file explicitly"
    )


@dataclass(frozen=True)
class Code:
    """A terminology mapping of one concept."""

    system: str  # "RadLex", "SNOMED CT", "DICOM" or the IRI's namespace
    code: str
    match: str  # "exact" or "close"
    iri: str


@dataclass
class Ontology:
    """A validated findings ontology.

    Attributes:
        path: the file it was loaded from.
        rdf: the rdflib graph (for SPARQL and anything else rdflib offers).
        graph: networkx DiGraph of concepts keyed by label; an edge ``a -> b`` means a => b
            (``relation`` attribute: ``"subClassOf"`` or ``"implies"``); node attribute ``iri``.
        disjoint: undirected networkx Graph of asserted ``owl:disjointWith`` pairs.
        sha256: hex digest of the canonical N-Triples serialisation (see :func:`canonical_sha256`).
    """

    path: Path
    rdf: rdflib.Graph
    graph: nx.DiGraph
    disjoint: nx.Graph
    sha256: str
    _closure: nx.DiGraph = field(repr=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self._closure is None:
            # Transitive closure computed once per ontology; every constraint query reads it.
            self._closure = nx.transitive_closure_dag(self.graph)

    def __repr__(self) -> str:
        return f"Ontology({self.path.name!r}, concepts={self.graph.number_of_nodes()}, sha256={self.sha256[:12]}...)"

    @property
    def labels(self) -> list[str]:
        """Every concept label, sorted."""
        return sorted(self.graph.nodes)

    def iri(self, label: str) -> URIRef:
        """The IRI of the concept labelled ``label``."""
        self.require([label])
        return URIRef(self.graph.nodes[label]["iri"])

    def require(self, labels: Iterable[str], where: str | None = None) -> None:
        """Raise unless every label names a concept (with a "did you mean" suggestion).

        Raises:
            MedmmConfigError: naming the ontology file (or ``where``) and the missing labels.
        """
        missing = [lab for lab in labels if lab not in self.graph]
        if not missing:
            return
        parts = []
        for lab in missing:
            close = difflib.get_close_matches(lab, self.graph.nodes, n=1, cutoff=0.6)
            parts.append(f"{lab!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise MedmmConfigError(where or self.path, f"labels not in the ontology: {', '.join(parts)}")

    def synonyms(self, label: str) -> list[str]:
        """The concept's alternative labels and report phrasings (``skos:altLabel``/``hiddenLabel``)."""
        node = self.iri(label)
        out = {str(o) for p in (SKOS.altLabel, SKOS.hiddenLabel) for o in self.rdf.objects(node, p)}
        return sorted(out - {label})

    def definition(self, label: str) -> str | None:
        """The concept's ``skos:definition`` (or ``rdfs:comment``), if any."""
        node = self.iri(label)
        value = self.rdf.value(node, SKOS.definition) or self.rdf.value(node, RDFS.comment)
        return None if value is None else str(value)

    def codes(self, label: str) -> list[Code]:
        """Terminology mappings (``skos:exactMatch`` / ``skos:closeMatch``), exact ones first."""
        node = self.iri(label)
        out = []
        for prop, kind in _MATCHES.items():
            for target in sorted(self.rdf.objects(node, prop), key=str):
                system, code = _split_code(str(target))
                out.append(Code(system, code, kind, str(target)))
        return out

    def anatomical_site(self, label: str) -> str | None:
        """Label of the concept's ``ct:anatomicalSite`` (inherited from the nearest ancestor)."""
        for concept in [label, *self.ancestors(label)]:
            site = self.rdf.value(self.iri(concept), ANATOMICAL_SITE)
            if site is not None:
                return _label_of(self.rdf, site)
        return None

    # -------------------------------------------------------------------------------- hierarchy
    def parents(self, label: str) -> list[str]:
        """Direct consequents of ``label`` (its superclasses and ``implies`` targets)."""
        self.require([label])
        return sorted(self.graph.successors(label))

    def ancestors(self, label: str) -> set[str]:
        """Everything ``label`` implies, transitively (excluding itself)."""
        self.require([label])
        return set(self._closure.successors(label))

    def descendants(self, label: str) -> set[str]:
        """Everything that implies ``label``, transitively (excluding itself)."""
        self.require([label])
        return set(self._closure.predecessors(label))

    def implies(self, a: str, b: str) -> bool:
        """True when a => b follows from the ontology (transitively)."""
        return self._closure.has_edge(a, b)

    def excludes(self, a: str, b: str) -> bool:
        """True when a and b can never hold together (inherited disjointness included)."""
        up_a = {a} | self.ancestors(a)
        up_b = {b} | self.ancestors(b)
        return any(self.disjoint.has_edge(x, y) for x in up_a for y in up_b)

    def path_to_root(self, label: str) -> list[str]:
        """``[label, parent, ..., root]`` following ``rdfs:subClassOf`` (first parent in label order)."""
        self.require([label])
        path = [label]
        while True:
            parents = [p for p in sorted(self.graph.successors(path[-1]))
                       if self.graph.edges[path[-1], p]["relation"] == "subClassOf"]
            if not parents:
                return path
            path.append(parents[0])

    # ------------------------------------------------------------------------------ constraints
    def constraints(self, labels: Sequence[str]) -> Constraints:
        """Implication and exclusion pairs among ``labels`` as index tensors.

        Implications are closed transitively, also through concepts that are not in ``labels``
        (A => X => B gives A => B). Exclusions are inherited: A ⊥ B and C => A give C ⊥ B.

        Args:
            labels: the model's output labels, in output order.

        Returns:
            :class:`Constraints` with ``implications`` [K, 2] (a => b) and ``exclusions`` [M, 2].

        Raises:
            MedmmConfigError: if a label is not in the ontology or labels repeat.

        >>> onto = load_ontology()
        >>> c = onto.constraints(["Lung opacity", "Consolidation"])
        >>> c.implications.tolist()
        [[1, 0]]
        """
        labels = list(labels)
        self.require(labels)
        if len(set(labels)) != len(labels):
            dup = sorted({lab for lab in labels if labels.count(lab) > 1})
            raise MedmmConfigError(self.path, f"labels repeat: {dup}")
        implications = [(i, j) for i, a in enumerate(labels) for j, b in enumerate(labels)
                        if i != j and self.implies(a, b)]
        exclusions = [(i, j) for (i, a), (j, b) in combinations(enumerate(labels), 2)
                      if self.excludes(a, b)]
        return Constraints.from_pairs(labels, implications, exclusions)

    # ------------------------------------------------------------------------------- SPARQL etc.
    def query(self, sparql: str, **kwargs):
        """Run a SPARQL query with rdflib (prefixes ``ct:``, ``skos:``, ``owl:``, ``rdfs:`` bound).

        >>> rows = load_ontology().query(
        ...     'SELECT ?l WHERE { ?c skos:prefLabel ?l ; rdfs:subClassOf ct:AirwayFinding }')
        >>> sorted(str(r.l) for r in rows)
        ['Bronchiectasis', 'Peribronchial thickening']
        """
        init_ns = {"ct": CT, "skos": SKOS, "owl": OWL, "rdfs": RDFS, "rdf": RDF}
        init_ns.update(kwargs.pop("initNs", {}))
        return self.rdf.query(sparql, initNs=init_ns, **kwargs)

    def check_compatible(self, stored_sha256: str | None, allow_mismatch: bool = False) -> bool:
        """True when a run's stored ontology hash is this ontology's; on a mismatch a
        `MedmmConfigError`, or (``allow_mismatch``) a logged warning and False."""
        if stored_sha256 == self.sha256:
            return True
        reason = (f"the model was trained with ontology sha256 {str(stored_sha256)[:12]}... but this "
                  f"ontology is {self.sha256[:12]}...; use the training ontology or allow the mismatch "
                  "explicitly (allow_ontology_mismatch)")
        if not allow_mismatch:
            raise MedmmConfigError(self.path, reason)
        log.warning("%s: %s", self.path, reason)
        return False


def load_ontology(path: str | Path | None = None, labels: Sequence[str] | None = None) -> Ontology:
    """Load and validate an ontology file.

    The format is guessed from the suffix (``.ttl`` Turtle, ``.owl``/``.rdf`` RDF/XML, ``.nt``,
    ``.jsonld`` ...); unknown suffixes are tried as Turtle, then RDF/XML.

    Args:
        path: ontology file; ``None`` for the bundled chest-CT ontology.
        labels: optional workflow labels that must all be concepts of the ontology.

    Returns:
        The validated :class:`Ontology`.

    Raises:
        MedmmConfigError: naming the file, for an unreadable or malformed file, duplicate labels,
            a cycle among implications, contradictory constraints (A => B and A ⊥ B, also through
            the transitive closure) or labels missing from the ontology.

    >>> onto = load_ontology()
    >>> onto.path_to_root("Consolidation")
    ['Consolidation', 'Lung opacity', 'Lung parenchyma finding', 'Chest CT finding']
    """
    path = Path(path) if path is not None else default_ontology_path()
    rdf = _parse(path)
    graph, disjoint = _build_graphs(rdf, path)
    _check_acyclic(graph, path)
    onto = Ontology(path=path, rdf=rdf, graph=graph, disjoint=disjoint, sha256=canonical_sha256(rdf))
    _check_consistent(onto)
    if labels is not None:
        onto.require(labels)
    return onto


def canonical_sha256(rdf: rdflib.Graph) -> str:
    """SHA-256 of the graph's canonical form (sorted N-Triples of rdflib's canonical graph).

    Hashing the RDF content rather than the file bytes means re-formatting the file, editing
    comments or converting Turtle to RDF/XML keeps the hash; any change of a triple changes it.
    """
    canonical = to_canonical_graph(rdf)
    lines = sorted(line for line in canonical.serialize(format="nt").splitlines() if line.strip())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------ internals
def _parse(path: Path) -> rdflib.Graph:
    if not path.is_file():
        raise MedmmConfigError(path, "ontology file not found")
    guessed = guess_format(str(path))
    formats = [guessed] if guessed else ["turtle", "xml"]
    error: Exception | None = None
    for fmt in formats:
        rdf = rdflib.Graph()
        try:
            rdf.parse(path, format=fmt)
            break
        except Exception as exc:  # rdflib raises parser-specific types (BadSyntax, SAX, ...)
            error = exc
    else:
        detail = " ".join(str(error).split())[:300]
        raise MedmmConfigError(path, f"cannot parse ontology as {'/'.join(formats)}: {detail}")
    rdf.bind("ct", CT)
    return rdf


def _label_of(rdf: rdflib.Graph, node) -> str:
    for prop in (SKOS.prefLabel, RDFS.label):
        values = [o for o in rdf.objects(node, prop) if isinstance(o, Literal)]
        english = [v for v in values if v.language in (None, "en")]
        if english or values:
            return str(sorted(english or values)[0])
    text = str(node)
    return text.rsplit("#", 1)[-1].rsplit("/", 1)[-1]


def _split_code(iri: str) -> tuple[str, str]:
    for prefix, system in _CODE_SYSTEMS.items():
        if iri.startswith(prefix):
            return system, iri[len(prefix):]
    head, _, tail = iri.rpartition("#") if "#" in iri else iri.rpartition("/")
    return head, tail


def _concepts(rdf: rdflib.Graph) -> set:
    nodes = set()
    for kind in (OWL.Class, RDFS.Class, SKOS.Concept):
        nodes.update(s for s in rdf.subjects(RDF.type, kind) if isinstance(s, URIRef))
    for prop in (RDFS.subClassOf, IMPLIES, OWL.disjointWith):
        for s, o in rdf.subject_objects(prop):
            nodes.update(n for n in (s, o) if isinstance(n, URIRef))
    return nodes - {OWL.Thing, OWL.Nothing}


def _build_graphs(rdf: rdflib.Graph, path: Path) -> tuple[nx.DiGraph, nx.Graph]:
    label = {node: _label_of(rdf, node) for node in _concepts(rdf)}
    seen: dict[str, object] = {}
    for node, lab in label.items():
        if lab in seen:
            raise MedmmConfigError(path, f"label {lab!r} is used by two concepts: {seen[lab]} and {node}")
        seen[lab] = node
    graph = nx.DiGraph()
    for node, lab in label.items():
        graph.add_node(lab, iri=str(node))
    for prop, relation in ((RDFS.subClassOf, "subClassOf"), (IMPLIES, "implies")):
        for s, o in rdf.subject_objects(prop):
            if s in label and o in label and s != o:  # skips OWL restrictions (blank nodes)
                graph.add_edge(label[s], label[o], relation=relation)
    disjoint = nx.Graph()
    for s, o in rdf.subject_objects(OWL.disjointWith):
        if s in label and o in label:
            disjoint.add_edge(label[s], label[o])
    for group in rdf.subjects(RDF.type, OWL.AllDisjointClasses):
        members = [label[m] for m in Collection(rdf, rdf.value(group, OWL.members)) if m in label]
        disjoint.add_edges_from(combinations(members, 2))
    return graph, disjoint


def _check_acyclic(graph: nx.DiGraph, path: Path) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    chain = " => ".join([edge[0] for edge in cycle] + [cycle[0][0]])
    raise MedmmConfigError(path, f"cycle among implications/subclasses: {chain}")


def _check_consistent(onto: Ontology) -> None:
    """Reject concepts that would have to be both present and absent."""
    for concept in sorted(onto.graph.nodes):
        up = [concept, *sorted(onto.ancestors(concept))]
        for x, y in combinations(up, 2):
            if onto.disjoint.has_edge(x, y):
                if x == concept:
                    why = f"{x!r} implies {y!r} but is declared disjoint with it"
                else:
                    why = f"{concept!r} implies both {x!r} and {y!r}, which are declared disjoint"
                raise MedmmConfigError(onto.path, f"contradictory constraints: {why}")
        if onto.disjoint.has_edge(concept, concept):
            raise MedmmConfigError(onto.path, f"contradictory constraints: {concept!r} is disjoint with itself")
