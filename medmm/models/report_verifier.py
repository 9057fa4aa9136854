"""Report verifier: a generated report is repaired until it states exactly the decided findings.

The report labeler (:class:`medmm.knowledge.ReportLabeler`, the one that defines clinical-efficacy
F1) reads every sentence. Where the report disagrees with a decision it is repaired, in order:

1. a sentence cut off by the length limit is dropped, a repeated sentence is dropped;
2. a sentence that denies a finding decided *present* is removed ("Heart size is normal." when
   cardiomegaly is decided: the labeler reads normal statements about a finding's site as
   negations, :mod:`medmm.knowledge.normal_statements`);
3. a sentence that states a finding decided *absent* is re-decoded by the LM from the report
   before it, with the contradicting phrases banned (transformers' ``bad_words_ids``); if the
   new sentence is not acceptable, a FINDINGS sentence becomes the ontology's negative sentence
   ("No emphysema.") and an IMPRESSION item is removed;
4. a finding decided *present* that no sentence states gets a forced mention: the LM continues
   the FINDINGS section from the finding's preferred label (or a synonym it can write), i.e.
   constrained decoding with a forced prefix; if that sentence is not acceptable, the last
   resort is a sentence built from the ontology's preferred label.
5. a final pass over the whole report removes/adds sentences the same way, so the result agrees
   by construction (``agrees`` is checked, never assumed).

A decoded sentence is *acceptable* only when it is well formed (ends a sentence, every word is
one the LM's training reports or the ontology use: :mod:`medmm.models.report_words`; a WordPiece
LM writing around a banned phrase can glue pieces into "emphysematptal") and the labeler reads in
it the intended finding, no finding decided absent and no denial of a finding decided present.

Every change is a :class:`Repair` (which sentence, what was done, why) in ``result.json`` and the
HTML report. Sentence splitting and the FINDINGS/IMPRESSION layout follow the reference reports
(``medmm.data.synth.reports``): ``FINDINGS: ...`` then ``IMPRESSION:`` with numbered items.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from medmm.knowledge.negex import NEGATED
from medmm.models.report_words import words_of

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_ITEM = re.compile(r"(?:^|\s)\d{1,2}\.(?:\s+|$)")
_WORDY = re.compile(r"[A-Za-z]{2}")
_IMPRESSION = re.compile(r"\bIMPRESSION\s*:", re.IGNORECASE)
_FINDINGS = re.compile(r"^\s*FINDINGS\s*:\s*", re.IGNORECASE)
NO_FINDINGS_IMPRESSION = "No acute cardiopulmonary process."


@dataclass
class Repair:
    """One change the verifier made: ``section`` / ``action`` / the sentence before and after."""

    section: str  # "findings" or "impression"
    action: str  # "removed truncated", "removed repeat", "re-decoded", "removed", "forced mention", "ontology sentence"
    finding: str | None
    reason: str
    before: str | None = None
    after: str | None = None


@dataclass
class VerifiedReport:
    """The verified report, its draft, the repairs and whether it agrees with the decisions."""

    text: str
    draft: str
    repairs: list[Repair] = field(default_factory=list)
    agrees: bool = True
    disagreements: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"agrees": self.agrees, "disagreements": list(self.disagreements), "draft": self.draft,
                "n_repairs": len(self.repairs), "repairs": [asdict(r) for r in self.repairs]}


# ----------------------------------------------------------------------------------- layout
def split_report(text: str) -> tuple[list[str], list[str], bool]:
    """``(findings sentences, impression items, cut_off)`` of a report.

    ``cut_off`` is True when the text does not end a sentence (the length limit cut it); the
    unfinished sentence is then left out, and so are "sentences" without a word (an empty
    numbered item "3.").
    """
    text = " ".join((text or "").split())
    cut_off = bool(text) and text[-1] not in ".!?"
    parts = _IMPRESSION.split(text, maxsplit=1)
    body = _FINDINGS.sub("", parts[0]).strip()
    findings = [s.strip() for s in _SENTENCE_END.split(body) if s.strip()]
    impression: list[str] = []
    if len(parts) > 1:
        items = [i.strip() for i in _ITEM.split(" " + parts[1].strip()) if i.strip()]
        impression = [s.strip() for item in items for s in _SENTENCE_END.split(item) if s.strip()]
    if cut_off:
        (impression if impression else findings).pop()
    return [s for s in findings if _WORDY.search(s)], [s for s in impression if _WORDY.search(s)], cut_off


def join_report(findings: Sequence[str], impression: Sequence[str]) -> str:
    """``FINDINGS: ...\\n\\nIMPRESSION: ...`` (impression items numbered when more than one)."""
    items = list(impression) or [NO_FINDINGS_IMPRESSION]
    numbered = " ".join(f"{k + 1}. {s}" for k, s in enumerate(items)) if len(items) > 1 else items[0]
    return f"FINDINGS: {' '.join(findings)}\n\nIMPRESSION: {numbered}"


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends with a full stop, ! or ? (the report was not cut off)."""
    text = (text or "").rstrip()
    return bool(text) and text[-1] in ".!?"


# --------------------------------------------------------------------------------- verifier
class ReportVerifier:
    """Repair reports until the labeler reads exactly the decided findings (module docstring).

    Args:
        labeler: a :class:`medmm.knowledge.ReportLabeler` over (at least) ``labels``.
        labels: finding names, in the order of the decision vectors.
        generator: the model's :class:`ReportGenerator` for constrained re-decoding (optional:
            without it only removal and ontology sentences are used).
        words: the words a decoded sentence may contain (:func:`medmm.models.report_words.known_words`);
            None accepts any word.
    """

    def __init__(self, labeler: Any, labels: Sequence[str], generator: Any = None, sentence_tokens: int = 48,
                 mention_attempts: int = 2, words: Collection[str] | None = None):
        self.labeler = labeler
        self.mention_attempts = mention_attempts
        self.labels = list(labels)
        self.generator = generator
        self.sentence_tokens = sentence_tokens
        self.words = None if words is None else frozenset(w.lower() for w in words)
        onto = labeler.ontology
        self._phrases = {f: [f.lower(), *[s.lower() for s in onto.synonyms(f)]] for f in self.labels}
        # a negated concept denies every label that implies it ("no lung opacity" denies consolidation)
        self._denies = {c: {f for f in self.labels if f == c or onto.implies(f, c)} for c in onto.graph.nodes}

    def _positive(self, sentence: str) -> set[str]:
        out = self.labeler.label(sentence)
        return {f for f in self.labels if out.get(f) == 1}

    def denied(self, sentence: str) -> set[str]:
        """Findings the sentence names as absent ("No pleural effusion.", "Heart size is normal.")."""
        return {f for m in self.labeler.mentions(sentence) if m.status == NEGATED for f in self._denies.get(m.concept, ())}

    def well_formed(self, sentence: str) -> bool:
        """True for one finished sentence (no section heading) made only of known words that does
        not repeat itself (:func:`repeats_itself`)."""
        if not ends_sentence(sentence) or not _WORDY.search(sentence):
            return False  # unfinished, or a bare "2."
        if _IMPRESSION.search(sentence) or _FINDINGS.search(sentence):
            return False
        if repeats_itself(sentence):
            return False
        return self.words is None or all(w in self.words for w in words_of(sentence))

    def acceptable(self, sentence: str | None, present: set[str], stating: str | None = None) -> bool:
        """True when a decoded sentence may enter the report (module docstring): well formed, states
        ``stating`` (if given), no finding outside ``present`` and denies none inside it."""
        if not sentence or not self.well_formed(sentence):
            return False
        stated = self._positive(sentence)
        if stated - present or self.denied(sentence) & present:
            return False
        return stating is None or stating in stated

    def disagreements(self, text: str, present: set[str]) -> list[str]:
        """Findings where the labelled ``text`` differs from the decisions (``present`` = decided),
        or that a sentence denies although decided present."""
        out = self.labeler.label(text)
        denied = self.denied(text) & present
        return [f for f in self.labels if (out.get(f) == 1) != (f in present) or f in denied]

    def verify(self, draft: str, decisions: Mapping[str, bool] | Sequence[bool],
               tokens: torch.Tensor | None = None, states: torch.Tensor | None = None) -> VerifiedReport:
        """Repair ``draft`` so it agrees with ``decisions`` (see module docstring).

        Args:
            draft: the decoded report.
            decisions: finding -> decided present, or a vector in ``labels`` order.
            tokens / states: the scan's image tokens ``[1, N, D]`` (and finding states ``[1, L]``
                for a grounded generator) for re-decoding; without them nothing is re-decoded.
        """
        if not isinstance(decisions, Mapping):
            decisions = dict(zip(self.labels, decisions))
        present = {f for f in self.labels if bool(decisions[f])}
        can_decode = self.generator is not None and tokens is not None
        findings, impression, cut_off = split_report(draft)
        repairs: list[Repair] = []
        if cut_off:
            repairs.append(Repair("impression" if _IMPRESSION.search(draft or "") else "findings", "removed truncated",
                                  None, "the length limit cut the last sentence off"))
        findings, impression = _dedupe(findings, "findings", repairs), _dedupe(impression, "impression", repairs)
        for section, sentences in (("findings", findings), ("impression", impression)):
            for k in reversed(range(len(sentences))):
                if repeats_itself(sentences[k]):
                    repairs.append(Repair(section, "removed repeat", None, "the sentence repeats itself (a decoding loop)",
                                          sentences[k], None))
                    del sentences[k]

        for section, sentences in (("findings", findings), ("impression", impression)):
            for k in reversed(range(len(sentences))):
                denied = self.denied(sentences[k]) & present
                if denied:
                    repairs.append(Repair(section, "removed", sorted(denied)[0],
                                          f"denied {', '.join(sorted(denied))}, decided present", sentences[k], None))
                    del sentences[k]
            k = 0
            while k < len(sentences):
                wrong = self._positive(sentences[k]) - present
                if not wrong:
                    k += 1
                    continue
                reason = f"stated {', '.join(sorted(wrong))}, decided absent"
                new = self._redecode(findings, impression, section, k, present, tokens, states) if can_decode else None
                action = "re-decoded"
                if new is None and section == "findings":
                    action, new = "ontology sentence", self._negative_sentence(wrong, present, findings)
                if new is not None:
                    repairs.append(Repair(section, action, sorted(wrong)[0], reason, sentences[k], new))
                    sentences[k] = new
                    k += 1
                else:
                    repairs.append(Repair(section, "removed", sorted(wrong)[0], reason, sentences[k], None))
                    del sentences[k]

        for _ in range(3):  # a forced sentence could, in principle, hide another finding: re-check
            stated = set().union(*(self._positive(s) for s in findings + impression)) if findings + impression else set()
            missing = [f for f in self.labels if f in present and f not in stated]
            if not missing:
                break
            for f in missing:
                self._mention(f, findings, impression, present, repairs, tokens, states, can_decode)
            self._remove_contradictions(findings, impression, present, repairs)

        if present and not any(self._positive(s) for s in impression):
            # the impression lists the positive findings, as the references do
            items = [_ontology_sentence(f) for f in self.labels if f in present]
            items = [s for s in items if self.acceptable(s, present)]
            if items:
                repairs.append(Repair("impression", "ontology sentence", None,
                                      "impression did not name the findings decided present", " ".join(impression) or None,
                                      " ".join(items)))
                impression[:] = items
        text = join_report(findings, impression)
        wrong = self.disagreements(text, present)
        return VerifiedReport(text, draft, repairs, not wrong, wrong)

    # ------------------------------------------------------------------------------ repairs
    def _remove_contradictions(self, findings, impression, present, repairs) -> None:
        for section, sentences in (("findings", findings), ("impression", impression)):
            for k in reversed(range(len(sentences))):
                wrong = self._positive(sentences[k]) - present
                denied = self.denied(sentences[k]) & present
                if wrong or denied:
                    why = (f"stated {', '.join(sorted(wrong))}, decided absent" if wrong
                           else f"denied {', '.join(sorted(denied))}, decided present")
                    repairs.append(Repair(section, "removed", sorted(wrong or denied)[0], why, sentences[k], None))
                    del sentences[k]

    def _redecode(self, findings, impression, section, k, present, tokens, states) -> str | None:
        """The LM's sentence at ``section[k]`` with the contradicting phrases banned, or None."""
        before = findings[:k] if section == "findings" else findings
        prompt = "FINDINGS: " + " ".join(before)
        if section == "impression":
            prompt += " IMPRESSION: " + " ".join(impression[:k])
        banned = self._banned(set(self.labels) - present)
        sentence = _capitalise(self._continue(prompt, banned, tokens, states) or "")
        return sentence if self.acceptable(sentence, present) else None

    def _negative_sentence(self, wrong: set[str], present: set[str], findings: Sequence[str]) -> str | None:
        """"No <finding>." for the wrongly stated findings, when the labeler reads it so and the
        FINDINGS do not already say it; else None (the sentence is removed)."""
        said = {s.lower() for s in findings}
        for f in sorted(wrong):
            sentence = f"No {f.lower()}."
            if sentence.lower() not in said and self.acceptable(sentence, present) and f in self.denied(sentence):
                return sentence
        return None

    def _mention(self, f, findings, impression, present, repairs, tokens, states, can_decode) -> None:
        reason = f"{f} decided present but not stated"
        if can_decode:
            banned = self._banned(set(self.labels) - present)
            prompt = "FINDINGS: " + " ".join(findings)
            for phrase in self._ranked_phrases(f, prompt, tokens, states)[:self.mention_attempts]:
                rest = self._continue(prompt + " " + phrase, banned, tokens, states)
                sentence = _capitalise((phrase + rest if rest[:1] in ".,;:" else f"{phrase} {rest}") if rest else "")
                if self.acceptable(sentence, present, stating=f):
                    findings.append(sentence)
                    repairs.append(Repair("findings", "forced mention", f, reason, None, sentence))
                    return
        for sentence in (_ontology_sentence(f), *[_capitalise(s) + " is present." for s in self._phrases[f]]):
            if self.acceptable(sentence, present, stating=f):
                findings.append(sentence)
                repairs.append(Repair("findings", "ontology sentence", f, reason, None, sentence))
                return

    def _ranked_phrases(self, f: str, prompt: str, tokens, states) -> list[str]:
        """The finding's phrases the LM can write, most likely first after ``prompt`` (LM order
        when the generator can score them, else the ontology's: preferred label first)."""
        gen = self.generator
        phrases = [p for p in self._phrases[f] if gen.can_write(p)]
        if len(phrases) > 1 and hasattr(gen, "phrase_logprobs") and gen.can_write(prompt):
            scores = gen.phrase_logprobs(tokens, prompt, phrases, findings=states)
            phrases = [p for _, _, p in sorted(zip([-s for s in scores], range(len(phrases)), phrases))]
        return phrases

    def _banned(self, absent: set[str]) -> list[str]:
        return sorted({p for f in absent for p in self._phrases[f]})

    def _continue(self, prompt: str, banned: list[str], tokens, states) -> str | None:
        """The rest of the sentence the LM writes after ``prompt`` (maybe just "."; None when it
        does not finish the sentence)."""
        gen = self.generator
        if not gen.can_write(prompt):
            return None
        out = gen.generate(tokens, findings=states, prompt=prompt, bad_words=banned, stop_at_sentence=True,
                           max_new_tokens=self.sentence_tokens, num_beams=1)[0]
        out = " ".join(out.split())
        out = re.sub(r" ([.,;:!?])", r"\1", re.sub(r"(?<=\w) - (?=\w)", "-", out))
        return out if ends_sentence(out) else None


def repeats_itself(sentence: str) -> bool:
    """True when three content words (4+ letters, plural folded) recur in the same order: the LM
    looped ("calcified coronary artery calcified coronary artery calcifications")."""
    words = [re.sub(r"(?<=[a-z]{3})s$", "", re.sub(r"ies$", "y", w)) for w in words_of(sentence) if len(w) >= 4]
    grams = list(zip(words, words[1:], words[2:]))
    return len(set(grams)) < len(grams)


def _ontology_sentence(finding: str) -> str:
    return _capitalise(finding) + "."


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _dedupe(sentences: list[str], section: str, repairs: list[Repair]) -> list[str]:
    seen: set[str] = set()
    out = []
    for s in sentences:
        key = s.lower()
        if key in seen:
            repairs.append(Repair(section, "removed repeat", None, "the same sentence was written twice", s, None))
            continue
        seen.add(key)
        out.append(s)
    return out


def write_verified_reports(model: Any, tokens: torch.Tensor, decisions: torch.Tensor, verifier: ReportVerifier,
                           drafts: Sequence[str] | None = None) -> list[VerifiedReport]:
    """Decode (grounded on ``decisions [B, L]`` when the generator is) and verify one report per scan.

    ``drafts``: reports already decoded for an ungrounded model (the fusion head read them).
    """
    states = decisions.float().to(tokens.device) if is_grounded(model) else None
    if drafts is None:
        drafts = model.generate_reports(tokens) if states is None else model.generate_reports(tokens, findings_probs=states)
    return [verifier.verify(draft, [bool(v) for v in decisions[i].tolist()], tokens[i:i + 1],
                            None if states is None else states[i:i + 1])
            for i, draft in enumerate(drafts)]


def is_grounded(model: Any) -> bool:
    """True when ``model``'s report generator reads the findings (``grounding: findings``)."""
    return bool(getattr(getattr(model, "report_generator", None), "grounded", False))
