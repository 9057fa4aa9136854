"""The bundled chest-CT ontology and ontology loading/validation."""

from __future__ import annotations

import pytest
import rdflib

from medmm.errors import MedmmConfigError
from medmm.knowledge import default_ontology_path, load_ontology
from medmm.labels import CT_RATE_FINDINGS

from .conftest import CHAIN_TTL

# Codes from ../shared/reference/chest-ct-findings.md that must be present: (system, code, match).
EXPECTED_CODES = [
    ("Pleural effusion", "RadLex", "RID34539", "exact"),
    ("Pleural effusion", "SNOMED CT", "60046008", "exact"),
    ("Pericardial effusion", "RadLex", "RID38588", "exact"),
    ("Pericardial effusion", "SNOMED CT", "373945007", "exact"),
    ("Emphysema", "RadLex", "RID4799", "exact"),
    ("Emphysema", "SNOMED CT", "87433001", "exact"),
    ("Atelectasis", "RadLex", "RID28493", "exact"),
    ("Atelectasis", "SNOMED CT", "46621007", "exact"),
    ("Consolidation", "RadLex", "RID43255", "exact"),
    ("Consolidation", "SNOMED CT", "95436008", "exact"),
    ("Lymphadenopathy", "RadLex", "RID3798", "exact"),
    ("Lymphadenopathy", "SNOMED CT", "30746006", "exact"),
    ("Lymphadenopathy", "SNOMED CT", "52324001", "close"),
    ("Lung nodule", "RadLex", "RID50149", "exact"),
    ("Lung nodule", "SNOMED CT", "27925004", "close"),
    ("Lung opacity", "RadLex", "RID28530", "close"),
    ("Lung opacity", "RadLex", "RID28531", "close"),
    ("Bronchiectasis", "SNOMED CT", "12295008", "exact"),
    ("Cardiomegaly", "SNOMED CT", "8186001", "exact"),
    ("Coronary artery wall calcification", "SNOMED CT", "445512009", "exact"),
    ("Pulmonary fibrotic sequela", "RadLex", "RID35280", "close"),
    ("Pulmonary fibrotic sequela", "SNOMED CT", "51615001", "close"),
    ("Medical material", "RadLex", "RID5429", "close"),
    ("Medical material", "RadLex", "RID5425", "close"),
    ("Arterial wall calcification", "RadLex", "RID5196", "close"),
    ("Mosaic attenuation pattern", "DICOM", "112080", "close"),
    ("Mosaic attenuation pattern", "RadLex", "RID28537", "close"),
    ("Interlobular septal thickening", "DICOM", "112114", "close"),
    ("Peribronchial thickening", "RadLex", "RID28509", "close"),
    ("Hiatal hernia", "SNOMED CT", "39839004", "close"),
]
# Codes the reference marks as conflicting: must not be asserted.
CONFLICTING_CODES = [("Atelectasis", "46635009"), ("Consolidation", "233709007")]


def test_default_path_points_at_bundled_file():
    path = default_ontology_path()
    assert path.name == "chest_ct.ttl" and path.is_file()
    rdflib.Graph().parse(path)  # plain rdflib parses it


@pytest.mark.parametrize("label", CT_RATE_FINDINGS)
def test_every_ct_rate_label_is_defined_with_synonyms(onto, label):
    assert label in onto.labels
    assert len(onto.synonyms(label)) >= 3
    assert onto.definition(label) and len(onto.definition(label)) > 20
    assert onto.anatomical_site(label) is not None
    path = onto.path_to_root(label)
    assert path[0] == label and path[-1] == "Chest CT finding"


@pytest.mark.parametrize("label,system,code,match", EXPECTED_CODES)
def test_reference_codes_present(onto, label, system, code, match):
    assert (system, code, match) in {(c.system, c.code, c.match) for c in onto.codes(label)}


@pytest.mark.parametrize("label,code", CONFLICTING_CODES)
def test_conflicting_codes_not_asserted(onto, label, code):
    assert code not in {c.code for c in onto.codes(label)}


# Phrases that name two findings at once on purpose (the labeler counts them for both):
# traction bronchiectasis is bronchiectasis caused by fibrosis.
SHARED_PHRASES = {"traction bronchiectasis"}


def test_synonyms_are_unambiguous(onto):
    """A report phrase names one finding (or, deliberately, each of the findings it is listed for)."""
    owner: dict[str, str] = {}
    for label in CT_RATE_FINDINGS:
        for term in [label, *onto.synonyms(label)]:
            key = term.lower()
            if key in SHARED_PHRASES:
                continue
            assert owner.setdefault(key, label) == label, f"{term!r} used by {owner[key]} and {label}"


def test_bundled_implications_and_exclusions(onto):
    c = onto.constraints(CT_RATE_FINDINGS)
    assert sorted(c.describe()) == [
        "Consolidation ⇒ Lung opacity",
        "Coronary artery wall calcification ⇒ Arterial wall calcification",
    ]
    full = onto.constraints([*CT_RATE_FINDINGS, "No abnormality"])
    assert len(full.exclusions) == len(CT_RATE_FINDINGS)  # normal study ⊥ every finding


def test_every_implication_between_findings_is_explained(onto):
    """Each asserted implication between output labels carries an rdfs:comment saying why."""
    rows = onto.query("""
        SELECT ?a ?b ?why WHERE {
            ?x owl:annotatedSource ?s ; owl:annotatedProperty rdfs:subClassOf ;
               owl:annotatedTarget ?t ; rdfs:comment ?why .
            ?s skos:prefLabel ?a . ?t skos:prefLabel ?b . }""")
    explained = {(str(r.a), str(r.b)) for r in rows}
    c = onto.constraints(CT_RATE_FINDINGS)
    for a, b in c.implications.tolist():
        assert (c.labels[a], c.labels[b]) in explained


def test_sparql_query(onto):
    rows = onto.query("SELECT ?l WHERE { ?c skos:prefLabel ?l ; rdfs:subClassOf ct:PleuralFinding }")
    assert [str(r.l) for r in rows] == ["Pleural effusion"]


def test_sha256_is_content_hash(onto, tmp_path):
    xml = tmp_path / "chest_ct.owl"
    onto.rdf.serialize(xml, format="xml")  # same triples, other syntax
    other = load_ontology(xml)
    assert other.sha256 == onto.sha256 and len(onto.sha256) == 64
    assert onto.check_compatible(onto.sha256)


def test_check_compatible_mismatch(onto):
    with pytest.raises(MedmmConfigError, match="chest_ct.ttl: the model was trained with ontology"):
        onto.check_compatible("0" * 64)
    assert onto.check_compatible("0" * 64, allow_mismatch=True) is False


@pytest.mark.parametrize(
    "body,message",
    [
        ("ex:A a owl:Class ; skos:prefLabel 'A' \n ex:B", "cannot parse ontology as turtle"),
        ("ex:A rdfs:subClassOf ex:B . ex:B rdfs:subClassOf ex:C . ex:C rdfs:subClassOf ex:A .",
         "cycle among implications"),
        ("ex:A ct:implies ex:B . ex:B ct:implies ex:A .", "cycle among implications"),
        ("ex:A rdfs:subClassOf ex:B . ex:A owl:disjointWith ex:B .",
         "contradictory constraints: 'A' implies 'B' but is declared disjoint"),
        ("ex:A rdfs:subClassOf ex:X . ex:X ct:implies ex:B . ex:B owl:disjointWith ex:A .",
         "contradictory constraints: 'A' implies 'B'"),
        ("ex:A rdfs:subClassOf ex:B , ex:C . ex:B owl:disjointWith ex:C .",
         "'A' implies both 'B' and 'C', which are declared disjoint"),
        ("ex:A skos:prefLabel 'Same' . ex:B skos:prefLabel 'Same' . ex:A rdfs:subClassOf ex:B .",
         "label 'Same' is used by two concepts"),
    ],
    ids=["malformed", "cycle", "implies-cycle", "contradiction", "transitive-contradiction",
         "unsatisfiable", "duplicate-label"],
)
def test_invalid_ontologies_raise_clear_errors(write_ttl, body, message):
    path = write_ttl(body, name="bad.ttl")
    with pytest.raises(MedmmConfigError) as info:
        load_ontology(path)
    text = str(info.value)
    assert "bad.ttl" in text and message in text and "\n" not in text


def test_missing_file():
    with pytest.raises(MedmmConfigError, match="ontology file not found"):
        load_ontology("/nonexistent/onto.ttl")


def test_missing_labels_suggest_a_fix(onto):
    with pytest.raises(MedmmConfigError, match=r"'Lung nodle' \(did you mean 'Lung nodule'\?\)"):
        load_ontology(labels=["Lung nodle", "Emphysema"])
    with pytest.raises(MedmmConfigError, match="labels not in the ontology: 'Xyzzy'$"):
        onto.constraints(["Xyzzy"])


def test_user_ontology_in_rdf_xml_and_unknown_suffix(write_ttl, tmp_path):
    onto = load_ontology(write_ttl(CHAIN_TTL))
    xml = tmp_path / "user.rdf"
    onto.rdf.serialize(xml, format="xml")
    assert load_ontology(xml).labels == onto.labels == ["A", "B", "C", "D", "X"]
    odd = tmp_path / "user.onto"  # unknown suffix: tried as Turtle, then RDF/XML
    odd.write_bytes(xml.read_bytes())
    assert load_ontology(odd).sha256 == onto.sha256


def test_graph_view(onto):
    g = onto.graph
    assert g.edges["Consolidation", "Lung opacity"]["relation"] == "subClassOf"
    assert onto.disjoint.has_edge("No abnormality", "Emphysema")
    assert onto.ancestors("Coronary artery wall calcification") >= {"Arterial wall calcification",
                                                                      "Cardiovascular finding"}
    assert "Consolidation" in onto.descendants("Lung parenchyma finding")


def test_report_modifiers_belong_to_findings_with_a_site(onto):
    """ct:reportModifier words only make sense next to the finding's anatomical site terms."""
    from medmm.knowledge.labeler import REPORT_MODIFIER

    with_modifiers = {str(s) for s in onto.rdf.subjects(REPORT_MODIFIER, None)}
    assert len(with_modifiers) >= 8
    for label in CT_RATE_FINDINGS:
        if onto.graph.nodes[label]["iri"] in with_modifiers:
            site = onto.anatomical_site(label)
            assert site is not None and onto.synonyms(site), label
