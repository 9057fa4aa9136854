"""Fixtures for the knowledge tests: the bundled ontology and tiny hand-made ones."""

from __future__ import annotations

import pytest

from medmm.knowledge import load_ontology

PREFIXES = """
@prefix ct: <https://w3id.org/medmm/chest-ct#> .
@prefix owl: <http://www.w3.org/2002/07/owl#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
@prefix ex: <http://example.org/> .
"""


@pytest.fixture(scope="session")
def onto():
    return load_ontology()


@pytest.fixture
def write_ttl(tmp_path):
    """Write a Turtle snippet (prefixes added) to a file and return its path."""

    def _write(body: str, name: str = "test.ttl"):
        path = tmp_path / name
        path.write_text(PREFIXES + body, encoding="utf-8")
        return path

    return _write


# A => X => B, where X is not an output label; C ⊥ B; D is unrelated.
CHAIN_TTL = """
ex:A a owl:Class ; skos:prefLabel "A" ; rdfs:subClassOf ex:X .
ex:X a owl:Class ; skos:prefLabel "X" ; ct:implies ex:B .
ex:B a owl:Class ; skos:prefLabel "B" .
ex:C a owl:Class ; skos:prefLabel "C" ; owl:disjointWith ex:B .
ex:D a owl:Class ; skos:prefLabel "D" .
"""
