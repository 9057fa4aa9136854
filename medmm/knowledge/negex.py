"""NegEx-style status of a concept mention in one normalised sentence: positive, negated or uncertain.

Trigger phrases before (``no``, ``without``, ``possible`` ...) or after (``... not seen``,
``... cannot be excluded``) a mention set its status when no scope terminator (``but``, ``;``,
``except`` ...) lies between them and they are within :data:`SCOPE_WORDS` words; the nearest
applicable trigger decides; pseudo-triggers (``no change``) are consumed without effect (Chapman
et al., J Biomed Inform 2001;34:301). Two additions for how chest-CT reports are written:

* *normal-statement* triggers (``... are of normal size``, ``... within normal limits``,
  ``normal-sized ...``) negate, unless the clause gives a measurement (``8 mm``, ``millimetric``):
  a structure reported with a size is reported, whatever adjective follows;
* a mention made of two separated parts ("interlobular septa *are* thickened", "coronary arteries
  *are free of* calcification") is also decided by a trigger lying between its parts.

Hand-written rather than taken from negspacy/pyConText, which need spaCy models that cannot be
downloaded at run time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

POSITIVE, UNCERTAIN, NEGATED = "positive", "uncertain", "negated"
#: A trigger reaches at most this many words (a mention counts as one word).
SCOPE_WORDS = 8
#: A normal-statement after a mention reaches back fewer words, and not over "and" or a comma
#: ("effusion and the heart is normal in size" says nothing normal about the effusion).
NORM_SCOPE_WORDS = 4

PRE_NEG = [
    "no", "without", "negative for", "free of", "absence of", "no evidence of",
    "no sign of", "no signs of", "no finding of", "no findings of", "no definite", "no suspicious",
    "resolution of", "interval resolution of", "clear of", "nor", "neither",
    "rules out", "excludes", "not", "none of",
]
PRE_UNC = [
    "possible", "possibly", "probable", "probably", "cannot exclude", "can not exclude",
    "could not exclude", "cannot rule out", "can not rule out", "may represent", "may be",
    "might represent", "might be", "could represent", "could be", "questionable", "equivocal",
    "suspicious for", "suspected", "suspicion of", "suspicion for", "concern for", "concerning for",
    "suggestive of", "suggesting", "differential diagnosis includes", "differential includes",
    "rule out", "to rule out", "evaluate for", "versus", "vs", "or less likely",
    "indeterminate", "not excluded",
]
SEEN = (r"(?:seen|identified|detected|observed|present|evident|visuali[sz]ed|appreciated|"
        r"demonstrated|noted|found|shown|visible|recognized)")
POST_NEG = [
    rf"(?:is|are|was|were|has been|have been)? ?not {SEEN}", rf"no longer {SEEN}",
    "no longer", "has resolved", "have resolved", "resolved", "is absent", "are absent", "absent",
    "was excluded", "were excluded", "is excluded", "ruled out", "has disappeared", "disappeared",
]
POST_UNC = [
    "cannot be excluded", "can not be excluded", "could not be excluded", "cannot be ruled out",
    "can not be ruled out", "is not excluded", "not excluded", "not ruled out", "is suspected",
    "are suspected", "was suspected", "is questioned", "is possible", "are possible",
    "is not certain", "cannot be differentiated", "may be present", "to be excluded",
]
_NORMAL_ASPECT = r"(?:size|dimensions?|thickness|caliber|calibre|appearance|limits)"
PRE_NORM = [r"normal (?:sized?|appearing|looking)", r"normal in " + _NORMAL_ASPECT, r"normal " + _NORMAL_ASPECT + " of"]
POST_NORM = [
    rf"(?:is|are|was|were|appears?|appeared) (?:of |in |within )?(?:normal|natural)(?: in)?(?: {_NORMAL_ASPECT})?",
    rf"(?:is|are|was|were) unremarkable", rf"(?:of|in|with|within) normal {_NORMAL_ASPECT}",
    "normal in size", "within normal limits",
    r"(?:(?:is|are|was|were) )?not (?:pathologically )?(?:enlarged|increased|thickened|dilated)",
]
PSEUDO = [
    "no change", "no interval change", "no significant change", "no significant interval change",
    "no increase", "no significant increase", "without change", "without interval change",
    "without significant change", "not only", "no further", "not change", "not changed",
    "gram negative",
]
TERMINATORS = [
    "but", "however", "although", "though", "except", "except for", "aside from", "apart from",
    "other than", "whereas", "while", "which", "nevertheless", "with the exception of",
    "there is", "there are", "there was", "there were",
]
# Punctuation ends a scope too, and so does a comma that opens a new, positively described item
# ("no effusion, mild atelectasis"); a bare comma does not, so lists stay negated ("no effusion,
# nodule or consolidation").
PUNCT_TERMINATORS = [
    r"[;:()]",
    r", (?:and |with )?(?:mild|moderate|severe|small|large|minimal|minor|trace|extensive|diffuse|"
    r"scattered|bilateral|multiple|several|few|a|an|marked|prominent|significant)(?![a-z0-9])",
]
# Triggers that work in both directions ("resolved consolidation" / "consolidation has resolved",
# "no longer any effusion" / "effusion no longer", "atelectasis versus consolidation").
BIDIRECTIONAL = {"resolved", "absent", "ruled out", "no longer", "versus", "vs"}
#: A size in a clause: "8 mm", "14x11 mm", "2.5 cm", "millimetric", "subcentimetric".
MEASUREMENT = re.compile(r"(?<![a-z0-9])(?:\d+(?:[.,]\d+)?\s*(?:x\s*\d+(?:[.,]\d+)?\s*)?(?:mm|cm)|"
                         r"millimetric|subcentimetric|subcentimetre|subcentimeter|sub centimetric)(?![a-z0-9])")

Trigger = tuple[int, int, str, str]  # (start, end, kind, text); kind e.g. "pre_neg", "post_norm", "term"


def _trigger_regex() -> re.Pattern:
    """One regex for all triggers; at a position the first group that matches wins, so groups run
    from most to least specific ("no change" before "no", "cannot be excluded" before "excluded")."""
    groups = []
    for name, items in (("pseudo", PSEUDO), ("post_unc", POST_UNC), ("pre_unc", PRE_UNC),
                        ("post_norm", POST_NORM), ("pre_norm", PRE_NORM),
                        ("post_neg", POST_NEG), ("pre_neg", PRE_NEG), ("term", TERMINATORS)):
        alts = "|".join(sorted(items, key=len, reverse=True))
        groups.append(f"(?P<{name}>{alts})")
    words = r"(?<![a-z0-9])(?:" + "|".join(groups) + r")(?![a-z0-9])"
    punct = "(?P<term_punct>" + "|".join(PUNCT_TERMINATORS) + ")"
    return re.compile(words + "|" + punct)


_TRIGGERS = _trigger_regex()
_WORD = re.compile(r"[a-z0-9]+")
_COPULA = re.compile(r"(?<![a-z])(?:is|are|was|were|been)(?![a-z])")
LIST_GAP = re.compile(r"(?:\s|,|/|and|or|nor|as well as)*")


def find_triggers(sentence: str, spans: Sequence[tuple[int, int]]) -> list[Trigger]:
    """Triggers of a sentence that do not overlap a concept mention."""
    out = []
    for m in _TRIGGERS.finditer(sentence):
        if any(m.start() < e and s < m.end() for s, e in spans):
            continue
        out.append((m.start(), m.end(), m.lastgroup, m.group(0)))
    return out


def words_between(sentence: str, lo: int, hi: int, spans) -> int:
    """Words in ``sentence[lo:hi]``, a mention inside counting as one word."""
    inner = [(s, e) for s, e, *_ in spans if lo <= s and e <= hi]
    text = sentence[lo:hi]
    for s, e in sorted(inner, reverse=True):
        text = text[: s - lo] + " x " + text[e - lo:]
    return len(_WORD.findall(text))


def clause(sentence: str, start: int, end: int, triggers: Sequence[Trigger]) -> tuple[int, int]:
    """Character range of the clause (between terminators) holding ``sentence[start:end]``."""
    lo, hi = 0, len(sentence)
    for s, e, kind, _ in triggers:
        if not kind.startswith("term"):
            continue
        if e <= start:
            lo = max(lo, e)
        elif s >= end:
            hi = min(hi, s)
    return lo, hi


def _polarity(kind: str) -> str:
    return NEGATED if kind.endswith(("neg", "norm")) else UNCERTAIN


def status(sentence: str, start: int, end: int, triggers: Sequence[Trigger], spans,
           parts: Sequence[tuple[int, int]] = ()) -> tuple[str, str | None]:
    """(status, deciding trigger) of the mention ``sentence[start:end]``.

    ``parts`` are the pieces of a mention written in two separated parts; a negation or
    uncertainty trigger between them decides first.
    """
    lo, hi = clause(sentence, start, end, triggers)
    measured = MEASUREMENT.search(sentence, lo, hi) is not None
    usable = [t for t in triggers if not (measured and t[2].endswith("norm"))]
    if parts:
        for s, e, kind, text in usable:
            if start < s < end and not any(ps <= s and e <= pe for ps, pe in parts) and kind[:3] in ("pre", "pos"):
                return _polarity(kind), text
    terms = [(s, e) for s, e, kind, _ in usable if kind.startswith("term")]
    best = None
    for s, e, kind, text in usable:
        both = text in BIDIRECTIONAL
        if (kind.startswith("pre") or both) and e <= start:
            if any(e <= ts and te <= start for ts, te in terms):
                continue
            if words_between(sentence, e, start, spans) > SCOPE_WORDS:
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
            # ... and only through a list of mentions: "effusion and atelectasis are not seen", not
            # "heart size is increased and pericardial effusion was not observed". A mention that is
            # a whole clause ("septa are thickened") takes no trigger from beyond a comma or mention.
            between = [ms for ms, me, *_ in spans if end <= ms and me <= s]
            if between and not LIST_GAP.fullmatch(sentence[end:min(between)]):
                continue
            if (between or comma >= 0) and _COPULA.search(sentence, start, end):
                continue
            scope = NORM_SCOPE_WORDS if kind.endswith("norm") else SCOPE_WORDS
            if words_between(sentence, end, s, spans) > scope:
                continue
            if kind.endswith("norm") and re.search(r"(?<![a-z])and(?![a-z])|,", sentence[end:s]):
                continue  # "heart size increased, lungs are normal" says nothing normal about the heart
            distance = s - end
        else:
            continue
        if best is None or distance < best[0]:
            best = (distance, kind, text)
    if best is None:
        return POSITIVE, None
    return _polarity(best[1]), best[2]
