"""Rule-based report labeler: findings from radiology report text, driven by the ontology.

CT-RATE's own labels were extracted from report text, so medmm needs the same step: to label a
data set that has reports but no label columns, and to score generated reports (clinical-efficacy
F1). The labeler is a NegEx-style matcher (Chapman et al., J Biomed Inform 2001;34:301), in the
spirit of the NIH/CheXpert labelers (Irvin et al., AAAI 2019):

1. split the report into sentences; normalise case, hyphens and whitespace;
2. find concept mentions with one regular expression over every ``prefLabel``/``altLabel`` of the
   labels and of every concept that implies a label (longest phrase first, word boundaries,
   plural forms of each word);
   A phrase listed for two findings counts for both ("traction bronchiectasis");
3. find *split mentions*: a finding's ``ct:reportModifier`` word and a term of its anatomical site
   in the same clause, in either order, at most :data:`SCOPE_WORDS` words apart with no other
   mention between ("heart size increased", "thickening is observed in the interlobular
   septa", "fluid in the pericardial space"); each modifier/site pairs with its nearest partner.
   A single-word phrase of another finding used as the modifier yields ("pericardial thickening
   and effusion" is not a pleural effusion);
4. decide each mention's status with :mod:`medmm.knowledge.negex` (NegEx triggers before/after
   within a clause, normal-size statements, a trigger between the two parts of a split mention);
5. a generic mention is specialised when the clause also names (un-negated) the anatomical site
   of a more specific concept ("calcified plaques in the coronary arteries" -> coronary artery
   wall calcification);
6. per label: 1 if some concept implying it (or itself) is mentioned positively, else
   ``uncertain_as`` if mentioned with uncertainty, else 0. Implications therefore hold on the
   output (a positive consolidation is a positive lung opacity). When both sides of an exclusion
   are positive, the label excluded by more labels (the global "No abnormality" statement) yields
   to the specific finding.

Regular expressions are hand-written here rather than taken from a library (negspacy, pyConText)
because those need spaCy models that medmm cannot download at run time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rdflib import URIRef

from medmm.knowledge import negex
from medmm.knowledge.label_scores import clinical_efficacy_f1, label_f1  # noqa: F401  (re-exported)
from medmm.knowledge.negex import NEGATED, POSITIVE, SCOPE_WORDS, UNCERTAIN  # noqa: F401  (re-exported)
from medmm.knowledge.normal_statements import NormalStatements, SiteRule
from medmm.knowledge.ontology import Ontology
from medmm.labels import CT_RATE_FINDINGS

#: ``ct:reportModifier``: words that report a finding when written in the same clause as its
#: anatomical site, in either order ("heart size increased", "interlobular septa are thickened").
REPORT_MODIFIER = URIRef("https://w3id.org/medmm/chest-ct#reportModifier")


@dataclass(frozen=True)
class Mention:
    """One concept mention in a report."""

    sentence: int  # index of the sentence in the report
    start: int  # character span in the normalised sentence
    end: int
    concept: str  # ontology label of the concept mentioned
    status: str  # "positive", "uncertain" or "negated"
    trigger: str | None  # the trigger phrase that set the status


def normalise(text: str) -> str:
    """Lower-case, hyphens/dashes to spaces, single spaces (the form all matching runs on)."""
    return " ".join(re.sub(r"[-\u2010-\u2015]", " ", text.lower()).split())


def split_sentences(text: str) -> list[str]:
    """Split report text at sentence ends (. ! ? followed by space), newlines and bullets."""
    parts = re.split(r"(?<=[.!?])\s+|\n+|(?<=\.)$", text or "")
    return [p.strip(" .!?\t") for p in parts if p and p.strip(" .!?\t")]


def _word_pattern(word: str) -> str:
    """Regex for one word with its plural forms (nodule/nodules, opacity/opacities, ...)."""
    if len(word) < 3 or not word.isalpha():
        return re.escape(word)
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("is"):
        forms.add(word[:-2] + "es")  # atelectasis -> atelectases
    if word.endswith("a"):
        forms.add(word + "e")  # bulla -> bullae
    return "(?:" + "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)) + ")"


def phrase_pattern(phrase: str) -> str:
    """Regex for a normalised phrase: every word may be plural, any whitespace between words."""
    return r"\s+".join(_word_pattern(w) for w in phrase.split())


def _alternation(phrases: Sequence[str]) -> str:
    """Longest phrases first so the regex engine prefers the longest match at a position."""
    pats = [phrase_pattern(p) for p in sorted(set(phrases), key=len, reverse=True)]
    return r"(?<![a-z0-9])(?:" + "|".join(pats) + r")(?![a-z0-9])"


class ReportLabeler:
    """Label radiology report text with ontology findings (NegEx-style negation and uncertainty).

    Args:
        ontology: the :class:`Ontology` whose labels, synonyms, sites and report modifiers drive matching.
        labels: output labels (default: the 18 CT-RATE findings).
        uncertain_as: value for findings only mentioned with uncertainty: 1 (positive, the CT-RATE
            convention), 0 (negative) or -1 (unknown).

    Raises:
        MedmmConfigError: if a label is missing from the ontology.
        ValueError: for an ``uncertain_as`` other than 1, 0, -1.

    >>> from medmm.knowledge import load_ontology
    >>> labeler = ReportLabeler(load_ontology())
    >>> out = labeler("Right lower lobe consolidation. No pleural effusion. Heart size increased.")
    >>> out["Consolidation"], out["Lung opacity"], out["Pleural effusion"], out["Cardiomegaly"]
    (1, 1, 0, 1)
    """

    def __init__(self, ontology: Ontology, labels: Sequence[str] = CT_RATE_FINDINGS, uncertain_as: int = 1):
        if uncertain_as not in (1, 0, -1):
            raise ValueError(f"uncertain_as must be 1, 0 or -1, got {uncertain_as!r}")
        ontology.require(labels)
        self.ontology = ontology
        self.labels = tuple(labels)
        self.uncertain_as = uncertain_as
        # concept -> labels it counts for (itself and every label it implies)
        self._targets: dict[str, list[str]] = {}
        for concept in ontology.graph.nodes:
            hits = [lab for lab in self.labels if lab == concept or ontology.implies(concept, lab)]
            if hits:
                self._targets[concept] = hits
        self._phrase_concepts = self._phrases()
        self._mention_re = re.compile(_alternation(list(self._phrase_concepts)))
        self._phrase_res = [(p, re.compile(phrase_pattern(p)))
                            for p in sorted(self._phrase_concepts, key=len, reverse=True)]
        # Coordinated modifiers sharing a head noun: "pleural and pericardial effusions".
        modifiers = {p.rsplit(" ", 1)[0] for p in self._phrase_concepts if " " in p}
        mods = "|".join(phrase_pattern(m) for m in sorted(modifiers, key=len, reverse=True))
        self._ellipsis_re = re.compile(rf"(?<![a-z0-9])(?P<mod>{mods})\s*(?:and/or|and|or|nor|,)\s+(?:and\s+|or\s+)?")
        self._specialise = self._site_rules()
        self._split_rules = self._split_mention_rules()
        sites = {ontology.anatomical_site(c) for c in self._targets} - {None}
        anatomy = {term for site in sites for term in self._site_terms(site)}
        self._normal = NormalStatements(self._split_rules, re.compile(_alternation(sorted(anatomy))))
        excluded_by = {lab: sum(ontology.excludes(lab, other) for other in self.labels) for lab in self.labels}
        self._exclusions = [(a, b) if excluded_by[a] >= excluded_by[b] else (b, a)
                            for i, a in enumerate(self.labels) for b in self.labels[i + 1:]
                            if ontology.excludes(a, b)]  # (yields, wins)

    def __repr__(self) -> str:
        return (f"ReportLabeler(labels={len(self.labels)}, phrases={len(self._phrase_concepts)}, "
                f"split_rules={len(self._split_rules)}, uncertain_as={self.uncertain_as})")

    def _phrases(self) -> dict[str, tuple[str, ...]]:
        """phrase -> concepts it names. The same phrase on two concepts names both, unless one
        implies the other (then the more specific one is enough)."""
        found: dict[str, set[str]] = {}
        for concept in sorted(self._targets):
            for term in [concept, *self.ontology.synonyms(concept)]:
                found.setdefault(normalise(term), set()).add(concept)
        return {phrase: tuple(sorted(c for c in concepts
                                     if not any(o != c and self.ontology.implies(o, c) for o in concepts)))
                for phrase, concepts in found.items()}

    def _site_terms(self, site: str) -> list[str]:
        onto = self.ontology
        return [normalise(t) for s in [site, *onto.descendants(site)] for t in [s, *onto.synonyms(s)]]

    def _site_rules(self) -> dict[str, list[tuple[str, re.Pattern]]]:
        """generic concept -> [(specific concept, regex of its anatomical site terms)]."""
        onto = self.ontology
        rules: dict[str, list[tuple[str, re.Pattern]]] = {}
        for specific in self._targets:
            site = onto.anatomical_site(specific)
            for generic in onto.ancestors(specific) & set(self._targets):
                general_site = onto.anatomical_site(generic)
                if site is None or general_site is None or not onto.implies(site, general_site):
                    continue  # only a strictly narrower site identifies the specific concept
                rules.setdefault(generic, []).append((specific, re.compile(_alternation(self._site_terms(site)))))
        return rules

    def _split_mention_rules(self) -> list[SiteRule]:
        """One rule per finding with ``ct:reportModifier`` words and an anatomical site. Terms of a
        narrower site that belongs to a more specific finding name that finding ("calcification
        ... coronary arteries" is coronary, "calcification ... aorta" arterial)."""
        onto = self.ontology
        rules = []
        for concept in sorted(self._targets):
            words = sorted({normalise(str(o)) for o in onto.rdf.objects(onto.iri(concept), REPORT_MODIFIER)})
            site = onto.anatomical_site(concept)
            if not words or site is None:
                continue
            narrower = [(specific, onto.anatomical_site(specific)) for specific in onto.descendants(concept) & set(self._targets)]
            narrower = [(c, s) for c, s in narrower if s is not None and s != site and onto.implies(s, site)]
            own = set(self._site_terms(site)) - {t for _, s in narrower for t in self._site_terms(s)}
            sites = [(c, re.compile(_alternation(self._site_terms(s)))) for c, s in narrower]
            sites.append((concept, re.compile(_alternation(sorted(own)))))
            rules.append(SiteRule(concept, re.compile(_alternation(words)), frozenset(words), tuple(sites)))
        return rules

    # ------------------------------------------------------------------------------ matching
    def mentions(self, text: str | None) -> list[Mention]:
        """Every concept mention in ``text`` with its status (for debugging and explanations)."""
        out = []
        for index, sentence in enumerate(split_sentences(text or "")):
            out.extend(self._sentence_mentions(index, normalise(sentence)))
        return out

    def _sentence_mentions(self, index: int, sentence: str) -> list[Mention]:
        spans = [(m.start(), m.end(), concept) for m in self._mention_re.finditer(sentence)
                 for concept in self._phrase_concepts[self._key(m.group(0))]]
        spans = sorted(spans + self._elliptic(sentence, spans))
        triggers = negex.find_triggers(sentence, [(s, e) for s, e, _ in spans])
        split = self._split_mentions(index, sentence, spans, triggers)
        # a one-word phrase of another finding that a split mention uses as its modifier yields to it
        modifier_of = {(ms, me): m.concept for m, (ms, me, _) in split}
        spans = [(s, e, c) for s, e, c in spans if modifier_of.get((s, e), c) == c]
        blocked = [(m.start, m.end) for m, _ in split if m.status == NEGATED]
        out = []
        for start, end, concept in spans:
            status, trigger = negex.status(sentence, start, end, triggers, spans)
            if status != NEGATED and concept in self._specialise:
                concept = self._specialised(sentence, start, end, concept, triggers, spans, blocked)
            out.append(Mention(index, start, end, concept, status, trigger))
        for mention, _ in split:
            concept = mention.concept
            if mention.status != NEGATED and concept in self._specialise:
                concept = self._specialised(sentence, mention.start, mention.end, concept, triggers, spans, blocked)
            out.append(Mention(index, mention.start, mention.end, concept, mention.status, mention.trigger))
        for start, end, concept, words in self._normal.find(sentence, spans, triggers):
            if not any(m.concept == concept and m.start < end and start < m.end for m in out):
                out.append(Mention(index, start, end, concept, NEGATED, words))  # "heart size is normal"
        return sorted(out, key=lambda m: (m.start, m.end, m.concept))

    def _split_mentions(self, index, sentence, spans, triggers) -> list[tuple[Mention, tuple[int, int, str]]]:
        """Split mentions (modifier + site term in one clause) with their status and modifier span."""
        def inside_phrase(s: int, e: int) -> bool:
            return any(ps <= s and e <= pe and (ps, pe) != (s, e) for ps, pe, _ in spans)

        def gap_ok(a: tuple[int, int], b: tuple[int, int]) -> bool:
            lo, hi = min(a[1], b[1]), max(a[0], b[0])
            if lo > hi:
                return False  # overlapping
            if any(kind.startswith("term") and lo <= s and e <= hi for s, e, kind, _ in triggers):
                return False
            if any(lo <= s and e <= hi for s, e, _ in spans):
                return False  # another finding is named in between
            return negex.words_between(sentence, lo, hi, spans) <= SCOPE_WORDS

        out = []
        for rule in self._split_rules:
            mods = [(m.start(), m.end()) for m in rule.modifier_re.finditer(sentence)]
            mods = [m for m in mods if not inside_phrase(*m)]
            if not mods:
                continue
            sites = [(m.start(), m.end(), c) for c, rx in rule.sites for m in rx.finditer(sentence)]
            sites = [s for s in sites if not inside_phrase(s[0], s[1])]
            pairs = set()
            for mod in mods:
                near = [(abs(mod[0] - s[0]), s) for s in sites if gap_ok(mod, s[:2])]
                if near:
                    pairs.add((mod, min(near)[1]))
            for site in sites:
                near = [(abs(m[0] - site[0]), m) for m in mods if gap_ok(m, site[:2])]
                if near:
                    pairs.add((min(near)[1], site))
            for mod, (ss, se, concept) in sorted(pairs):
                start, end = min(mod[0], ss), max(mod[1], se)
                if any(s < end and start < e and (c == concept or self.ontology.implies(c, concept))
                       for s, e, c in spans):
                    continue  # a phrase mention of the finding already covers it
                status, trigger = negex.status(sentence, start, end, triggers, spans, parts=[mod, (ss, se)])
                out.append((Mention(index, start, end, concept, status, trigger), (mod[0], mod[1], rule.concept)))
        return out

    def _elliptic(self, sentence: str, spans) -> list[tuple[int, int, str]]:
        """Mentions whose head noun is shared with the next mention ("pleural [effusion] or pericardial effusion")."""
        starts = {start: end for start, end, _ in spans}
        out = []
        for m in self._ellipsis_re.finditer(sentence):
            end = starts.get(m.end())
            if end is None or any(s < m.end() and m.start() < e for s, e, _ in spans):
                continue
            head = self._key(sentence[m.end():end]).rsplit(" ", 1)[-1]
            phrase = f"{m.group('mod')} {head}"
            for concept in self._phrase_concepts.get(phrase, ()):
                out.append((m.start(), m.end("mod"), concept))
        return out

    def _key(self, matched: str) -> str:
        """Map a matched surface form (maybe plural) back to its phrase."""
        matched = " ".join(matched.split())
        if matched in self._phrase_concepts:
            return matched
        for phrase, regex in self._phrase_res:
            if regex.fullmatch(matched):
                return phrase
        raise KeyError(matched)  # unreachable: every match comes from one of the phrases

    def _specialised(self, sentence, start, end, concept, triggers, spans, blocked=()) -> str:
        lo, hi = negex.clause(sentence, start, end, triggers)
        for specific, regex in self._specialise[concept]:
            for m in regex.finditer(sentence, lo, hi):
                if any(s <= m.start() and m.end() <= e for s, e in blocked):
                    continue  # the site is inside a negated split mention ("coronaries free of calcification")
                if negex.status(sentence, m.start(), m.end(), triggers, spans)[0] != NEGATED:
                    return specific
        return concept

    # -------------------------------------------------------------------------------- labels
    def label(self, text: str | None) -> dict[str, int]:
        """Labels for one report: 1 positive, 0 negative/absent, ``uncertain_as`` if only uncertain."""
        best: dict[str, str] = {}
        rank = {NEGATED: 0, UNCERTAIN: 1, POSITIVE: 2}
        for mention in self.mentions(text):
            for lab in self._targets.get(mention.concept, []):
                if rank[mention.status] > rank[best.get(lab, NEGATED)]:
                    best[lab] = mention.status
        out = {lab: 1 if best.get(lab) == POSITIVE else (self.uncertain_as if best.get(lab) == UNCERTAIN else 0)
               for lab in self.labels}
        for yields, wins in self._exclusions:
            if out[yields] == 1 and out[wins] == 1:
                out[yields] = 0
        return out

    __call__ = label
