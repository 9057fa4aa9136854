"""The words a verified sentence may contain: training reports' words, ontology words, old-run fallback."""

from __future__ import annotations

from medmm.knowledge import load_ontology
from medmm.models.report_words import known_words, ontology_words, training_words, words_of


def test_training_words_need_two_reports():
    reports = ["Heart size is normal.", "The heart is enlarged.", "Heart size is normal. Smithson."]
    words = training_words(reports)
    assert {"heart", "size", "is", "normal"} <= set(words)
    assert "smithson" not in words and "enlarged" not in words  # in one report only
    assert words == sorted(words) and training_words([]) == []
    assert words_of("A 14x11 mm ground-glass opacity.") == ["mm", "ground", "glass", "opacity"]


def test_known_words_add_the_ontology():
    onto = load_ontology()
    assert {"cardiomegaly", "emphysema", "interlobular", "septal", "heart"} <= ontology_words(onto)
    words = known_words(["smoke"], None, onto)
    assert "smoke" in words and "cardiomegaly" in words


def test_old_runs_fall_back_to_the_compact_vocabulary():
    """A run saved before report_words: whole-word tokens of the decoder vocabulary (no ## pieces)."""
    from medmm.config.network import ReportGeneratorConfig
    from medmm.models.pretrained import load_tokenizer
    from medmm.models.report_generator import ReportGenerator, report_vocabulary

    from medmm.config.network import TextEncoderConfig

    tok = load_tokenizer(TextEncoderConfig().name_or_path)
    reports = ["Centrilobular emphysema. Heart size is normal."]
    gen = ReportGenerator(ReportGeneratorConfig(n_layer=1, n_head=2, n_embd=16), 16, tok,
                          report_vocabulary(reports, tok))
    words = known_words(None, gen, load_ontology())
    assert {"heart", "size", "normal"} <= words
    assert not any(w.startswith("#") for w in words)
    assert "emphysematptal" not in words
    # a pretrained LM without a stored list: nothing bounds its words
    gen.to_tokenizer_ids = None
    assert known_words(None, gen, load_ontology()) is None


def test_derive_network_stores_the_training_words():
    from medmm.config import ModelConfig, PreprocessingConfig
    from medmm.models.derived import derive_network

    reports = ["Heart size is normal.", "Heart size is normal. Rare.", ""]
    derived = derive_network(ModelConfig(), PreprocessingConfig(), reports)
    assert derived.report_words == ["heart", "is", "normal", "size"]
    assert derive_network(ModelConfig(), PreprocessingConfig()).report_words is None
    assert derive_network(ModelConfig(), PreprocessingConfig(), ["", ""]).report_words is None
