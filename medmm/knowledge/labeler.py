"""Rule-based report labeler: findings from radiology report text, driven by the ontology.

CT-RATE's own labels were extracted from report text, so medmm needs the same step: to label a
data set that has reports but no label columns, and to score generated reports (clinical-efficacy
F1). The labeler is a NegEx-style matcher (Chapman et al., J Biomed Inform 2001;34:301), in the
spirit of the NIH/CheXpert labelers (Irvin et al., AAAI 2019):

1. split the report into sentences; normalise case, hyphens and whitespace;
2. find concept mentions with one regular expression over every ``prefLabel``/``altLabel`` of the
   labels and of every concept that implies a label (longest phrase first, word boundaries,
   plural forms of each word);
3. find negation / uncertainty triggers before (``no``, ``without``, ``negative for``,
   ``possible``, ``cannot exclude`` ...) or after (``... not seen``, ``... has resolved``,
   ``... cannot be excluded``) a mention; a trigger applies when no scope terminator (``but``,
   ``however``, ``;``, ``:`` ...) lies between them and it is within :data:`SCOPE_WORDS` words.
   The nearest applicable trigger decides; pseudo-triggers (``no change``, ``not only``) are
   consumed without effect;
4. a generic mention is specialised when the clause also names (un-negated) the anatomical site
   of a more specific concept ("calcified plaques in the coronary arteries" -> coronary artery
   wall calcification);
5. per label: 1 if some concept implying it (or itself) is mentioned positively, else
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

from medmm.knowledge.label_scores import clinical_efficacy_f1, label_f1  # noqa: F401  (re-exported)
from medmm.knowledge.ontology import Ontology
from medmm.labels import CT_RATE_FINDINGS

POSITIVE, UNCERTAIN, NEGATED = "positive", "uncertain", "negated"
#: A pre-mention trigger reaches at most this many words forward (a mention counts as one word).
SCOPE_WORDS = 8

_PRE_NEG = [
    "no", "without", "negative for", "free of", "absence of", "no evidence of",
    "no sign of", "no signs of", "no finding of", "no findings of", "no definite", "no suspicious",
    "resolution of", "interval resolution of", "clear of", "nor", "neither",
    "rules out", "excludes", "not", "none of",
]
_PRE_UNC = [
    "possible", "possibly", "probable", "probably", "cannot exclude", "can not exclude",
    "could not exclude", "cannot rule out", "can not rule out", "may represent", "may be",
    "might represent", "might be", "could represent", "could be", "questionable", "equivocal",
    "suspicious for", "suspected", "suspicion of", "suspicion for", "concern for", "concerning for",
    "suggestive of", "suggesting", "differential diagnosis includes", "differential includes",
    "rule out", "to rule out", "evaluate for", "versus", "vs", "or less likely",
    "indeterminate", "not excluded",
]
_SEEN = (r"(?:seen|identified|detected|observed|present|evident|visuali[sz]ed|appreciated|"
         r"demonstrated|noted|found|shown|visible|recognized)")
_POST_NEG = [
    rf"(?:is|are|was|were|has been|have been)? ?not {_SEEN}", rf"no longer {_SEEN}",
    "no longer", "has resolved", "have resolved", "resolved", "is absent", "are absent", "absent",
    "was excluded", "were excluded", "is excluded", "ruled out", "has disappeared", "disappeared",
]
_POST_UNC = [
    "cannot be excluded", "can not be excluded", "could not be excluded", "cannot be ruled out",
    "can not be ruled out", "is not excluded", "not excluded", "not ruled out", "is suspected",
    "are suspected", "was suspected", "is questioned", "is possible", "are possible",
    "is not certain", "cannot be differentiated", "may be present", "to be excluded",
]
_PSEUDO = [
    "no change", "no interval change", "no significant change", "no significant interval change",
    "no increase", "no significant increase", "without change", "without interval change",
    "without significant change", "not only", "no further", "not change", "not changed",
    "gram negative",
]
_TERMINATORS = [
    "but", "however", "although", "though", "except", "except for", "aside from", "apart from",
    "other than", "whereas", "while", "which", "nevertheless", "with the exception of",
    "there is", "there are", "there was", "there were",
]
# Punctuation ends a scope too, and so does a comma that opens a new, positively described item
# ("no effusion, mild atelectasis"); a bare comma does not, so lists stay negated ("no effusion,
# nodule or consolidation").
_PUNCT_TERMINATORS = [
    r"[;:()]",
    r", (?:and |with )?(?:mild|moderate|severe|small|large|minimal|minor|trace|extensive|diffuse|"
    r"scattered|bilateral|multiple|several|few|a|an|marked|prominent|significant)(?![a-z0-9])",
]
# Triggers that work in both directions ("resolved consolidation" / "consolidation has resolved",
# "no longer any effusion" / "effusion no longer", "atelectasis versus consolidation").
_BIDIRECTIONAL = {"resolved", "absent", "ruled out", "no longer", "versus", "vs"}


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


def _trigger_regex() -> re.Pattern:
    """One regex for all triggers; at a position the first group that matches wins, so groups run
    from most to least specific ("no change" before "no", "cannot be excluded" before "excluded")."""
    groups = []
    for name, items in (("pseudo", _PSEUDO), ("post_unc", _POST_UNC), ("pre_unc", _PRE_UNC),
                        ("post_neg", _POST_NEG), ("pre_neg", _PRE_NEG), ("term", _TERMINATORS)):
        alts = "|".join(sorted(items, key=len, reverse=True))
        groups.append(f"(?P<{name}>{alts})")
    words = r"(?<![a-z0-9])(?:" + "|".join(groups) + r")(?![a-z0-9])"
    punct = "(?P<term_punct>" + "|".join(_PUNCT_TERMINATORS) + ")"
    return re.compile(words + "|" + punct)


_TRIGGERS = _trigger_regex()
_WORD = re.compile(r"[a-z0-9]+")


class ReportLabeler:
    """Label radiology report text with ontology findings (NegEx-style negation and uncertainty).

    Args:
        ontology: the :class:`Ontology` whose labels and synonyms drive matching.
        labels: output labels (default: the 18 CT-RATE findings).
        uncertain_as: value for findings only mentioned with uncertainty: 1 (positive, the CT-RATE
            convention), 0 (negative) or -1 (unknown).

    Raises:
        MedmmConfigError: if a label is missing from the ontology.
        ValueError: for an ``uncertain_as`` other than 1, 0, -1.

    >>> from medmm.knowledge import load_ontology
    >>> labeler = ReportLabeler(load_ontology())
    >>> out = labeler("Right lower lobe consolidation. No pleural effusion.")
    >>> out["Consolidation"], out["Lung opacity"], out["Pleural effusion"]
    (1, 1, 0)
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
        self._phrase_concept = self._phrases()
        self._mention_re = re.compile(_alternation(list(self._phrase_concept)))
        self._phrase_res = [(p, re.compile(phrase_pattern(p)))
                            for p in sorted(self._phrase_concept, key=len, reverse=True)]
        # Coordinated modifiers sharing a head noun: "pleural and pericardial effusions".
        modifiers = {p.rsplit(" ", 1)[0] for p in self._phrase_concept if " " in p}
        mods = "|".join(phrase_pattern(m) for m in sorted(modifiers, key=len, reverse=True))
        self._ellipsis_re = re.compile(rf"(?<![a-z0-9])(?P<mod>{mods})\s*(?:and/or|and|or|nor|,)\s+(?:and\s+|or\s+)?")
        self._specialise = self._site_rules()
        excluded_by = {lab: sum(ontology.excludes(lab, other) for other in self.labels) for lab in self.labels}
        self._exclusions = [(a, b) if excluded_by[a] >= excluded_by[b] else (b, a)
                            for i, a in enumerate(self.labels) for b in self.labels[i + 1:]
                            if ontology.excludes(a, b)]  # (yields, wins)

    def __repr__(self) -> str:
        return f"ReportLabeler(labels={len(self.labels)}, phrases={len(self._phrase_concept)}, uncertain_as={self.uncertain_as})"

    def _phrases(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for concept in sorted(self._targets):
            for term in [concept, *self.ontology.synonyms(concept)]:
                key = normalise(term)
                other = out.get(key)
                # The same phrase on two concepts: the more specific one (the one implying the other) wins.
                if other is None or self.ontology.implies(concept, other):
                    out[key] = concept
        return out

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
                terms = [t for s in [site, *onto.descendants(site)] for t in [s, *onto.synonyms(s)]]
                regex = re.compile(_alternation([normalise(t) for t in terms]))
                rules.setdefault(generic, []).append((specific, regex))
        return rules

    # ------------------------------------------------------------------------------ matching
    def mentions(self, text: str | None) -> list[Mention]:
        """Every concept mention in ``text`` with its status (for debugging and explanations)."""
        out = []
        for index, sentence in enumerate(split_sentences(text or "")):
            out.extend(self._sentence_mentions(index, normalise(sentence)))
        return out

    def _sentence_mentions(self, index: int, sentence: str) -> list[Mention]:
        spans = [(m.start(), m.end(), self._phrase_concept[self._key(m.group(0))])
                 for m in self._mention_re.finditer(sentence)]
        spans = sorted(spans + self._elliptic(sentence, spans))
        triggers = _triggers(sentence, [(s, e) for s, e, _ in spans])
        out = []
        for start, end, concept in spans:
            status, trigger = _status(sentence, start, end, triggers, spans)
            if status != NEGATED and concept in self._specialise:
                concept = self._specialised(sentence, start, end, concept, triggers, spans)
            out.append(Mention(index, start, end, concept, status, trigger))
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
            if phrase in self._phrase_concept:
                out.append((m.start(), m.end("mod"), self._phrase_concept[phrase]))
        return out

    def _key(self, matched: str) -> str:
        """Map a matched surface form (maybe plural) back to its phrase."""
        matched = " ".join(matched.split())
        if matched in self._phrase_concept:
            return matched
        for phrase, regex in self._phrase_res:
            if regex.fullmatch(matched):
                return phrase
        raise KeyError(matched)  # unreachable: every match comes from one of the phrases

    def _specialised(self, sentence, start, end, concept, triggers, spans) -> str:
        lo, hi = _clause(sentence, start, end, triggers)
        for specific, regex in self._specialise[concept]:
            for m in regex.finditer(sentence, lo, hi):
                if _status(sentence, m.start(), m.end(), triggers, spans)[0] != NEGATED:
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


def _triggers(sentence: str, spans: list[tuple[int, int]]) -> list[tuple[int, int, str, str]]:
    """(start, end, kind, text) of triggers not overlapping a concept mention."""
    out = []
    for m in _TRIGGERS.finditer(sentence):
        if any(m.start() < e and s < m.end() for s, e in spans):
            continue
        out.append((m.start(), m.end(), m.lastgroup, m.group(0)))
    return out


def _words_between(sentence: str, lo: int, hi: int, spans) -> int:
    inner = [(s, e) for s, e, *_ in spans if lo <= s and e <= hi]
    text = sentence[lo:hi]
    for s, e in sorted(inner, reverse=True):  # a mention counts as one word
        text = text[: s - lo] + " x " + text[e - lo:]
    return len(_WORD.findall(text))


def _status(sentence, start, end, triggers, spans) -> tuple[str, str | None]:
    terms = [(s, e) for s, e, kind, _ in triggers if kind.startswith("term")]
    best = None
    for s, e, kind, text in triggers:
        both = text in _BIDIRECTIONAL
        if (kind.startswith("pre") or both) and e <= start:
            if any(e <= ts and te <= start for ts, te in terms):
                continue
            if _words_between(sentence, e, start, spans) > SCOPE_WORDS:
                continue
            distance = start - e
        elif (kind.startswith("post") or both) and s >= end:
            if any(end <= ts and te <= s for ts, te in terms):
                continue
            # Backwards over a comma only from a list item ("consolidation, effusion ... not seen"),
            # not from a finished clause ("opacities in both lungs, consolidation cannot be excluded").
            comma = sentence.find(",", end, s)
            if comma >= 0 and sentence[end:comma].strip():
                continue
            if _words_between(sentence, end, s, spans) > SCOPE_WORDS:
                continue
            distance = s - end
        else:
            continue
        if best is None or distance < best[0]:
            best = (distance, kind, text)
    if best is None:
        return POSITIVE, None
    return (NEGATED if best[1].endswith("neg") else UNCERTAIN), best[2]


def _clause(sentence, start, end, triggers) -> tuple[int, int]:
    """Character range of the clause (between terminators) holding a mention."""
    lo, hi = 0, len(sentence)
    for s, e, kind, _ in triggers:
        if not kind.startswith("term"):
            continue
        if e <= start:
            lo = max(lo, e)
        elif s >= end:
            hi = min(hi, s)
    return lo, hi
