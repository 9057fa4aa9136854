"""Normal statements about a finding's site: "Heart size is normal." denies cardiomegaly.

Reports deny many findings without naming them: "Heart size is within normal limits", "heart
contour and size are normal", "the pleural spaces are unremarkable", "normal heart size". For a
finding that is reported as a change of its site (the ontology gives it ``ct:reportModifier``
words and an ``ct:anatomicalSite``), a *normal word* (``normal``, ``unremarkable``, ``natural``)
written in the same clause as a term of that site is a negated mention of the finding, when:

* the statement names no aspect ("the heart is normal"), or an aspect the finding's modifiers
  describe: size for "enlarged/increased", calibre for "dilated/ectatic", thickness for
  "thickened" ("the aorta is normal in calibre" says nothing about calcification; "bronchial
  walls are of normal thickness" denies peribronchial thickening, not bronchiectasis);
* nothing else stands between site and normal word: no terminator, no other finding mention, no
  modifier of the finding ("heart size increased, pleural spaces normal"), no other anatomical
  site unless the sites are a list ("heart contour and size are normal");
* the clause gives no measurement (a structure reported with a size is reported) and the normal
  word is not negated ("heart size is not normal").

Findings reported only by their own phrases (lymphadenopathy: "lymph nodes of normal size") are
already decided by NegEx's normal-statement triggers (:mod:`medmm.knowledge.negex`), which keep the
CT-RATE convention that a lymph node reported with a size counts. Hand-written: no library reads
site-level normal statements.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medmm.knowledge import negex

#: Words that state a site is normal ("natural" is how translated CT-RATE reports write it).
NORMAL_WORD = re.compile(r"(?<![a-z0-9])(?:normal|unremarkable|natural)(?![a-z0-9])")
#: Aspect words of a normal statement -> the report modifiers whose finding that aspect covers.
_SIZE = {"enlarged", "enlargement", "increased", "increase", "large", "larger"}
_CALIBRE = {"dilatation", "dilatations", "dilation", "dilated", "ectatic", "ectasia", *_SIZE}
_THICKNESS = {"thickening", "thickenings", "thickened", "thickness", "thickness increase", "increased thickness"}
ASPECTS: dict[str, set[str]] = {
    "size": _SIZE, "sized": _SIZE, "dimension": _SIZE, "dimensions": _SIZE, "volume": _SIZE, "contour": _SIZE,
    "contours": _SIZE, "silhouette": _SIZE, "caliber": _CALIBRE, "calibre": _CALIBRE, "diameter": _CALIBRE,
    "width": _CALIBRE, "thickness": _THICKNESS,
}
_ASPECT_RE = re.compile(r"(?<![a-z0-9])(?:" + "|".join(sorted(ASPECTS, key=len, reverse=True)) + r")(?![a-z0-9])")
#: Words a normal statement may have after the normal word ("normal in size", "normal in calibre").
_AFTER = re.compile(r"\s*(?:in |of )?(?:" + "|".join(ASPECTS) + r")?(?![a-z0-9])")
#: "normal heart size": the normal word reaches at most this many words forward.
PRE_SCOPE_WORDS = 3


@dataclass(frozen=True)
class SiteRule:
    """A finding reported as a change of its site: its ``ct:reportModifier`` words and its site
    terms (each with the concept it names: a narrower site names a more specific finding)."""

    concept: str
    modifier_re: re.Pattern
    modifiers: frozenset[str]
    sites: tuple[tuple[str, re.Pattern], ...]  # (concept named when this site is used, site regex)


class NormalStatements:
    """Negated mentions from normal statements about findings' sites (see module docstring).

    Args:
        rules: one :class:`SiteRule` per finding with report modifiers and a site.
        anatomy: regex of every site term of every rule (a site between blocks a pairing).
    """

    def __init__(self, rules: Sequence[SiteRule], anatomy: re.Pattern):
        self.rules = list(rules)
        self.anatomy = anatomy

    def covers(self, modifiers: frozenset[str], aspects: set[str]) -> bool:
        """True when a statement naming ``aspects`` (empty: none) speaks about a finding with ``modifiers``."""
        return not aspects or any(modifiers & ASPECTS[a] for a in aspects)

    def find(self, sentence: str, spans, triggers) -> list[tuple[int, int, str, str]]:
        """``(start, end, concept, normal words)`` of each normal statement denying a finding."""
        normals = [m for m in NORMAL_WORD.finditer(sentence)
                   if not any(s < m.end() and m.start() < e for s, e, *_ in spans)]
        if not normals:
            return []
        sites = [(m.start(), m.end()) for m in self.anatomy.finditer(sentence)]
        out = []
        for rule in self.rules:
            own = [(m.start(), m.end(), concept) for concept, rx in rule.sites for m in rx.finditer(sentence)]
            own = [s for s in own if not any(ps <= s[0] and s[1] <= pe for ps, pe, *_ in spans)]
            for normal in normals:
                pairs = [(self._distance(sentence, s, normal, rule, spans, triggers, sites), s) for s in own]
                pairs = [(d, s) for d, s in pairs if d is not None]
                if not pairs:
                    continue
                start, end, concept = min(pairs)[1]
                lo, hi = min(start, normal.start()), max(end, normal.end())
                hi += len(_AFTER.match(sentence, hi).group(0).rstrip())
                aspects = set(_ASPECT_RE.findall(sentence, lo, hi))
                if self.covers(rule.modifiers, aspects):
                    out.append((lo, hi, concept, sentence[normal.start():hi].strip()))
        return out

    def _distance(self, sentence, site, normal, rule, spans, triggers, sites) -> int | None:
        """Characters between a site term and a normal word that may pair, else None."""
        (ss, se, _), (ns, ne) = site, normal.span()
        lo, hi = (se, ns) if se <= ns else (ne, ss)
        if lo > hi:
            return None
        if any(kind.startswith("term") and lo <= s and e <= hi for s, e, kind, _ in triggers):
            return None  # a terminator stands between them
        clause_lo, clause_hi = negex.clause(sentence, min(ss, ns), max(se, ne), triggers)
        if negex.MEASUREMENT.search(sentence, clause_lo, clause_hi):
            return None
        if any(kind == "pre_neg" and 0 <= ns - e <= 1 for s, e, kind, _ in triggers):
            return None  # "not normal"
        if any(lo <= s and e <= hi for s, e, *_ in spans) or rule.modifier_re.search(sentence, lo, hi):
            return None
        limit = negex.SCOPE_WORDS if se <= ns else PRE_SCOPE_WORDS
        if negex.words_between(sentence, lo, hi, spans) > limit:
            return None
        others = [(s, e) for s, e in sites if lo <= s and e <= hi]
        if others and se <= ns:  # "heart contour and size are normal": sites in a list only
            gap = sentence[lo:max(s for s, _ in others)]
            for s, e in sorted(others, reverse=True):
                gap = gap[: s - lo] + " " + gap[e - lo:]
            if not negex.LIST_GAP.fullmatch(gap):
                return None
        elif others:
            return None
        return hi - lo
