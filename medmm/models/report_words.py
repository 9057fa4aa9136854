"""The words a report LM may write: what a re-decoded sentence is checked against.

A WordPiece LM whose phrase is banned can write around the ban by joining word pieces into a
word no report contains ("no emphysematptal type" when "emphysema" is banned). The verifier
accepts a re-decoded or forced sentence only when every word is known:

* words of the training reports (``NetworkDerived.report_words``, stored with new runs; words of
  at least :data:`MIN_REPORTS` reports, so a rare token such as a misspelt name never reaches the
  run directory);
* words of the ontology's labels, synonyms and report modifiers (the forced phrases);
* for a run saved before the word list existed: the whole-word tokens (no ``##`` piece) of the
  from-scratch decoder's compact vocabulary, the words its training reports wrote unsplit.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from rdflib import SKOS, URIRef

#: A word: two or more letters (numbers, units such as "x" in "14x11" and punctuation pass).
WORD = re.compile(r"[a-z]{2,}")
#: A word must occur in this many training reports to be stored.
MIN_REPORTS = 2
_MODIFIER = URIRef("https://w3id.org/medmm/chest-ct#reportModifier")


def words_of(text: str) -> list[str]:
    """Lower-case words of ``text`` (see :data:`WORD`)."""
    return WORD.findall((text or "").lower())


def training_words(reports: Iterable[str], min_reports: int = MIN_REPORTS) -> list[str]:
    """Sorted words found in at least ``min_reports`` of ``reports``."""
    counts = Counter(word for report in reports for word in set(words_of(report)))
    return sorted(word for word, n in counts.items() if n >= min_reports)


def ontology_words(ontology: Any) -> set[str]:
    """Words of every preferred label, synonym and report modifier of ``ontology``."""
    rdf = ontology.rdf
    literals = [o for p in (SKOS.prefLabel, SKOS.altLabel, _MODIFIER) for o in rdf.objects(None, p)]
    return {word for literal in literals for word in words_of(str(literal))}


def known_words(stored: Iterable[str] | None, generator: Any, ontology: Any) -> frozenset[str] | None:
    """The words the verifier accepts (module docstring), or None when nothing bounds them (a
    pretrained LM of a run without a stored word list: its own tokenizer writes real words)."""
    if stored is not None:
        return frozenset(stored) | ontology_words(ontology)
    vocab = getattr(generator, "to_tokenizer_ids", None)
    if vocab is None:
        return None
    tokens = generator.tokenizer.convert_ids_to_tokens([int(i) for i in vocab])
    return frozenset(t.lower() for t in tokens if t.isalpha()) | ontology_words(ontology)
