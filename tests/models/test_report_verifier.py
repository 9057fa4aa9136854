"""Report verifier: every repaired report agrees with the decisions (property over random vectors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmm.knowledge import ReportLabeler, consistent_decisions, load_ontology
from medmm.labels import CT_RATE_FINDINGS
from medmm.models.report_verifier import ReportVerifier, ends_sentence, join_report, split_report

LABELS = list(CT_RATE_FINDINGS)


@pytest.fixture(scope="module")
def labeler():
    return ReportLabeler(load_ontology(), LABELS)


def _random_decisions(n: int, seed: int) -> list[list[bool]]:
    """Ontology-consistent decision vectors (what the predictor hands the verifier)."""
    constraints = load_ontology().constraints(LABELS)
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(n, len(LABELS), generator=gen) ** 1.5
    decisions, _ = consistent_decisions(probs, constraints, torch.full((len(LABELS),), 0.5))
    return [[bool(v) for v in row] for row in decisions.tolist()]


def _draft(rng: np.random.Generator) -> str:
    from medmm.data.synth.reports import FILLER, NEGATIVES

    sentences = [str(rng.choice(NEGATIVES[name])) for name in LABELS if rng.random() < 0.4]
    positives = ["The heart is enlarged.", "A small right pleural effusion.", "Consolidation in the right lower lobe.",
                 "A 9 mm solid nodule is seen in the left upper lobe.", "Centrilobular emphysema.",
                 "Median sternotomy wires are noted.", "Coronary artery calcifications in the LAD."]
    sentences += [str(s) for s in rng.choice(positives, size=int(rng.integers(0, 4)), replace=False)]
    sentences += [str(rng.choice(FILLER))]
    rng.shuffle(sentences)
    text = join_report(sentences, ["Cardiomegaly.", "Pleural effusion."][: int(rng.integers(0, 3))])
    return text[: int(rng.integers(len(text) // 2, len(text) + 1))]  # sometimes cut off mid-sentence


def test_every_report_agrees_with_random_decisions(labeler):
    verifier = ReportVerifier(labeler, LABELS)
    rng = np.random.default_rng(0)
    for decisions in _random_decisions(300, seed=1):
        out = verifier.verify(_draft(rng), decisions)
        assert out.agrees, (out.text, out.disagreements)
        stated = labeler.label(out.text)
        assert [bool(stated[f]) for f in LABELS] == decisions
        assert ends_sentence(out.text) and out.text.startswith("FINDINGS: ") and "\n\nIMPRESSION: " in out.text


def test_repairs_say_what_and_why(labeler):
    verifier = ReportVerifier(labeler, LABELS)
    decisions = {f: f == "Pleural effusion" for f in LABELS}
    draft = "FINDINGS: The heart is enlarged. No pleural effusion. Osseous structures are intact.\n\nIMPRESSION: Cardiomeg"
    out = verifier.verify(draft, decisions)
    actions = [(r.action, r.finding) for r in out.repairs]
    assert ("removed truncated", None) in actions
    # stated, decided absent, nothing to re-decode with: the ontology's negative sentence
    assert [(r.before, r.after) for r in out.repairs if r.finding == "Cardiomegaly"] == [
        ("The heart is enlarged.", "No cardiomegaly.")]
    assert ("removed", "Pleural effusion") in actions  # denied, decided present
    assert ("ontology sentence", "Pleural effusion") in actions
    assert out.agrees and "Osseous structures are intact." in out.text
    assert out.to_json()["n_repairs"] == len(out.repairs)


def test_agreeing_report_is_left_alone(labeler):
    verifier = ReportVerifier(labeler, LABELS)
    text = join_report(["The heart is enlarged.", "No pleural effusion."], ["Cardiomegaly."])
    out = verifier.verify(text, {f: f == "Cardiomegaly" for f in LABELS})
    assert out.text == text and out.repairs == [] and out.agrees


def test_split_report_drops_the_unfinished_sentence():
    findings, impression, cut = split_report("FINDINGS: No effusion. The heart is\n\nIMPRESSION: 1. Normal. 2. Also norm")
    assert cut and findings == ["No effusion.", "The heart is"] and impression == ["Normal."]
    findings, impression, cut = split_report("FINDINGS: No effusion. The heart is enlarg")
    assert cut and findings == ["No effusion."] and impression == []
    # empty numbered items an LM wrote ("1. 2. 3.") are no sentences
    findings, impression, cut = split_report("FINDINGS: No effusion. 2.\n\nIMPRESSION: 1. Cardiomegaly. 2. 3. 4.")
    assert not cut and findings == ["No effusion."] and impression == ["Cardiomegaly."]


class _FakeGenerator:
    """Stands in for the LM: writes a contradicting sentence unless it is banned."""

    def __init__(self):
        self.calls = []

    def can_write(self, text):
        return True

    def generate(self, tokens, findings=None, prompt=None, bad_words=(), stop_at_sentence=False, **kw):
        self.calls.append((prompt, list(bad_words)))
        if prompt.endswith("lung nodule"):
            return ["in the right upper lobe measuring 6 mm."]
        return ["The heart is enlarged." if "cardiomegaly" not in bad_words else "The heart size is normal."]


def test_contradiction_is_re_decoded_with_the_phrase_banned_and_a_mention_forced(labeler):
    fake = _FakeGenerator()
    verifier = ReportVerifier(labeler, LABELS, fake)
    decisions = {f: f == "Lung nodule" for f in LABELS}
    draft = join_report(["Cardiomegaly is present.", "No pleural effusion."], ["No acute process."])
    out = verifier.verify(draft, decisions, tokens=torch.zeros(1, 2, 4))
    by_action = {r.action: r for r in out.repairs}
    assert by_action["re-decoded"].before == "Cardiomegaly is present."
    assert by_action["re-decoded"].after == "The heart size is normal."
    assert any("cardiomegaly" in banned for _, banned in fake.calls)
    assert by_action["forced mention"].after == "Lung nodule in the right upper lobe measuring 6 mm."
    assert out.agrees


def _random_grounded_model(seed: int):
    """A tiny randomly initialised MedMM with a findings-grounded GPT-2 decoder (real LM code paths)."""
    from medmm.models import MedMM, ModelConfig

    cfg = ModelConfig.model_validate({
        "image_encoder": {"name": "slim", "widths": [4, 8, 8, 8], "depth": [1, 1, 1, 1], "embed_dim": 16, "token_grid": 1},
        "report_generator": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 96, "max_report_tokens": 24,
                             "max_new_tokens": 24, "grounding": "findings", "vocabulary": "tokenizer"},
        "fusion": {"use_text": False, "hidden": 8},
    })
    torch.manual_seed(seed)
    return MedMM(cfg, LABELS).eval()


def test_real_random_lm_reports_always_agree(labeler):
    """A (random) grounded GPT-2 decoder through re-decoding, forced mentions and fallbacks."""
    model = _random_grounded_model(seed=0)
    verifier = ReportVerifier(labeler, LABELS, model.report_generator, sentence_tokens=8)
    from medmm.models.report_verifier import write_verified_reports

    tokens = torch.randn(2, 1, 16)
    decisions = torch.tensor(_random_decisions(2, seed=3))
    for out in write_verified_reports(model, tokens, decisions, verifier):
        assert out.agrees


@pytest.mark.parametrize(
    "sentence,finding",
    [
        ("Heart size is normal.", "Cardiomegaly"),
        ("Heart size is within normal limits.", "Cardiomegaly"),
        ("Heart contour and size are normal.", "Cardiomegaly"),
        ("No pleural or pericardial effusion.", "Pericardial effusion"),
        ("Mediastinal lymph nodes are not enlarged.", "Lymphadenopathy"),
        ("Pleural spaces are unremarkable.", "Pleural effusion"),
    ],
)
def test_normal_phrasing_of_a_decided_finding_is_repaired(labeler, sentence, finding):
    """A report saying the site is normal while the finding is decided present is a contradiction,
    even though the labeler's 0/1 output would agree once a positive sentence is added."""
    verifier = ReportVerifier(labeler, LABELS)
    draft = join_report([sentence, "Osseous structures are intact."], ["No acute process."])
    out = verifier.verify(draft, {f: f == finding for f in LABELS})
    assert sentence not in out.text
    assert ("removed", finding) in [(r.action, r.finding) for r in out.repairs]
    assert out.agrees and labeler.label(out.text)[finding] == 1
    assert not any(m.status == "negated" and m.concept == finding for m in labeler.mentions(out.text))
    # decided absent, the same sentence is fine and kept
    out = verifier.verify(draft, {f: False for f in LABELS})
    assert sentence in out.text and out.agrees


def test_a_denial_left_in_the_report_is_a_disagreement(labeler):
    verifier = ReportVerifier(labeler, LABELS)
    text = join_report(["Heart size is normal.", "Cardiomegaly is present."], ["Cardiomegaly."])
    assert labeler.label(text)["Cardiomegaly"] == 1  # the 0/1 labels alone would hide it
    assert verifier.disagreements(text, {"Cardiomegaly"}) == ["Cardiomegaly"]
    assert verifier.disagreements(text.replace("Heart size is normal. ", ""), {"Cardiomegaly"}) == []


def test_sub_pathological_node_stated_while_decided_absent_is_repaired(labeler):
    """CT-RATE counts a reported node of sub-pathological size as lymphadenopathy."""
    verifier = ReportVerifier(labeler, LABELS)
    sentence = "Mediastinal lymph nodes measuring 8 mm, not reaching pathological size."
    out = verifier.verify(join_report([sentence], ["No acute process."]), {f: False for f in LABELS})
    assert sentence not in out.text and out.agrees and labeler.label(out.text)["Lymphadenopathy"] == 0


class _GarblingGenerator(_FakeGenerator):
    """Writes around a banned phrase by gluing word pieces, as a WordPiece LM can."""

    def generate(self, tokens, findings=None, prompt=None, bad_words=(), stop_at_sentence=False, **kw):
        self.calls.append((prompt, list(bad_words)))
        if prompt.endswith("emphysema"):
            return ["of centrilobulartype is seen."]
        return ["No emphysematptal type." if "emphysema" in bad_words else "Emphysema."]


WORDS = ["no", "emphysema", "of", "centrilobular", "type", "is", "seen", "heart", "size", "normal", "the", "in"]


def test_garbled_re_decoded_sentence_falls_back_to_the_ontology_sentence(labeler):
    verifier = ReportVerifier(labeler, LABELS, _GarblingGenerator(), words=WORDS)
    assert verifier.well_formed("No emphysema of centrilobular type.")
    assert not verifier.well_formed("No emphysematptal type.") and not verifier.well_formed("No emphysema")
    draft = join_report(["Centrilobular emphysema.", "Heart size is normal."], ["Emphysema."])
    out = verifier.verify(draft, {f: False for f in LABELS}, tokens=torch.zeros(1, 2, 4))
    assert "emphysematptal" not in out.text
    fixed = [r for r in out.repairs if r.before == "Centrilobular emphysema."]
    assert [(r.action, r.after) for r in fixed] == [("ontology sentence", "No emphysema.")]
    assert out.agrees and "Heart size is normal." in out.text
    # without a word list the glued word passes the labeler (it reads no emphysema), as before
    out = ReportVerifier(labeler, LABELS, _GarblingGenerator()).verify(draft, {f: False for f in LABELS},
                                                                       tokens=torch.zeros(1, 2, 4))
    assert "No emphysematptal type." in out.text


def test_garbled_forced_mention_falls_back_to_the_ontology_sentence(labeler):
    verifier = ReportVerifier(labeler, LABELS, _GarblingGenerator(), words=WORDS)
    draft = join_report(["Heart size is normal."], ["No acute process."])
    out = verifier.verify(draft, {f: f == "Emphysema" for f in LABELS}, tokens=torch.zeros(1, 2, 4))
    assert "centrilobulartype" not in out.text
    assert ("ontology sentence", "Emphysema") in [(r.action, r.finding) for r in out.repairs]
    assert out.agrees and labeler.label(out.text)["Emphysema"] == 1
    # a well-formed continuation is taken
    good = _GarblingGenerator()
    good.generate = lambda *a, prompt=None, **k: ["of centrilobular type is seen."]
    out = ReportVerifier(labeler, LABELS, good, words=WORDS).verify(
        draft, {f: f == "Emphysema" for f in LABELS}, tokens=torch.zeros(1, 2, 4))
    assert ("forced mention", "Emphysema of centrilobular type is seen.") in [(r.action, r.after) for r in out.repairs]


def test_every_accepted_sentence_is_well_formed_with_a_real_lm(labeler):
    """A (random) LM through the verifier with a word list: every sentence it kept is made of known words."""
    from medmm.models.report_words import known_words, words_of
    from medmm.models.report_verifier import write_verified_reports

    model = _random_grounded_model(seed=1)
    words = known_words(["heart", "size", "is", "normal", "no", "the"], model.report_generator, labeler.ontology)
    verifier = ReportVerifier(labeler, LABELS, model.report_generator, sentence_tokens=8, words=words)
    decisions = torch.tensor(_random_decisions(2, seed=5))
    for out in write_verified_reports(model, torch.randn(2, 1, 16), decisions, verifier):
        assert out.agrees
        for repair in out.repairs:
            if repair.after and repair.action in ("re-decoded", "forced mention"):
                assert set(words_of(repair.after)) <= words


def test_a_looping_sentence_is_removed_and_never_accepted(labeler):
    from medmm.models.report_verifier import repeats_itself

    loop = "Calcified coronary artery calcified coronary artery calcifications in the lad."
    assert repeats_itself(loop) and repeats_itself("Calcified coronary artery calcified coronary arteries.")
    assert not repeats_itself("Patchy ground-glass opacities in the right upper lobe and left lower lobe.")
    verifier = ReportVerifier(labeler, LABELS)
    decisions = {f: f in ("Coronary artery wall calcification", "Arterial wall calcification") for f in LABELS}
    out = verifier.verify(join_report([loop, "No pleural effusion."], ["Coronary artery calcifications."]), decisions)
    assert loop not in out.text and out.agrees
    assert ("removed repeat", loop) in [(r.action, r.before) for r in out.repairs]
    assert not verifier.well_formed(loop)


def test_re_decoded_sentence_starts_with_a_capital(labeler):
    fake = _FakeGenerator()
    fake.generate = lambda *a, prompt=None, bad_words=(), **k: ["the heart size is normal."]
    verifier = ReportVerifier(labeler, LABELS, fake)
    out = verifier.verify(join_report(["Cardiomegaly is present."], ["No acute process."]), {f: False for f in LABELS},
                          tokens=torch.zeros(1, 2, 4))
    assert [r.after for r in out.repairs if r.action == "re-decoded"] == ["The heart size is normal."]


def test_forced_mention_may_end_right_after_the_phrase(labeler):
    fake = _FakeGenerator()
    fake.generate = lambda *a, prompt=None, bad_words=(), **k: ["."] if prompt.endswith("lung nodule") else ["2."]
    verifier = ReportVerifier(labeler, LABELS, fake)
    out = verifier.verify(join_report(["No pleural effusion."], ["No acute process."]),
                          {f: f == "Lung nodule" for f in LABELS}, tokens=torch.zeros(1, 2, 4))
    assert ("forced mention", "Lung nodule.") in [(r.action, r.after) for r in out.repairs]
    assert not verifier.well_formed("2.") and out.agrees
