"""Report generator: teacher-forced loss on report tokens only, learning, greedy/beam decoding."""

from __future__ import annotations

import pytest
import torch

from medmm.config import ReportGeneratorConfig
from medmm.models import ReportGenerator
from medmm.models.pretrained import load_tokenizer
from medmm.models.report_generator import report_vocabulary, special_token_ids, tidy_report

from .conftest import REPORTS

TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "max_report_tokens": 24, "max_new_tokens": 16}


def _generator(tiny_bert_dir, dim=16, vocab_ids=None, **overrides) -> ReportGenerator:
    torch.manual_seed(0)
    cfg = ReportGeneratorConfig(**{**TINY, **overrides})
    tokenizer = None if cfg.name_or_path else load_tokenizer(str(tiny_bert_dir))
    return ReportGenerator(cfg, dim, tokenizer, vocab_ids)


def _tokens(batch=2, n=8, dim=16, seed=0) -> torch.Tensor:
    return torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(seed))


def test_wordpiece_tokenizer_maps_bos_eos_pad(tiny_bert_dir):
    tok = load_tokenizer(str(tiny_bert_dir))
    assert special_token_ids(tok) == (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)


def test_loss_counts_report_tokens_only(tiny_bert_dir):
    """Batch loss = token-weighted mean of per-report losses: prefix, bos and padding carry no loss."""
    gen = _generator(tiny_bert_dir).eval()
    tokens = _tokens()
    short, long = "no pleural effusion.", REPORTS[0]
    n_short = len(gen.tokenizer(short, add_special_tokens=False)["input_ids"]) + 1  # + eos
    n_long = len(gen.tokenizer(long, add_special_tokens=False)["input_ids"]) + 1
    with torch.no_grad():
        alone_short = gen.loss(tokens[:1], [short])
        alone_long = gen.loss(tokens[1:], [long])
        together = gen.loss(tokens, [short, long])
    expected = (alone_short * n_short + alone_long * n_long) / (n_short + n_long)
    assert torch.allclose(together, expected, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["prefix", "cross_attention"])
def test_vocabulary_projection_shortcut_matches_full_logits(tiny_bert_dir, conditioning):
    gen = _generator(tiny_bert_dir, conditioning=conditioning).eval()
    assert gen._split_head
    with torch.no_grad():
        fast = gen.loss(_tokens(), REPORTS)
        gen._split_head = False
        assert torch.allclose(gen.loss(_tokens(), REPORTS), fast, atol=1e-6)


def test_loss_depends_on_the_image(tiny_bert_dir):
    gen = _generator(tiny_bert_dir).eval()
    with torch.no_grad():
        assert gen.loss(_tokens(seed=0), REPORTS) != gen.loss(_tokens(seed=1), REPORTS)


def test_reports_count_must_match_images(tiny_bert_dir):
    with pytest.raises(ValueError, match="1 reports for 2 images"):
        _generator(tiny_bert_dir).loss(_tokens(), REPORTS[:1])


@pytest.mark.parametrize("conditioning", ["prefix", "cross_attention"])
def test_learns_to_write_each_images_report(tiny_bert_dir, conditioning):
    """A few optimiser steps lower the loss; after ~150 the greedy decode reproduces each report."""
    gen = _generator(
        tiny_bert_dir, conditioning=conditioning, dropout=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0
    )
    tokens = _tokens()
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = gen.loss(tokens, REPORTS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[5] < losses[0] and losses[-1] < 0.1 * losses[0]
    assert gen.generate(tokens) == [tidy_report(r.lower()) for r in REPORTS]  # uncased WordPiece


def test_greedy_is_deterministic_and_beam_search_works(tiny_bert_dir):
    gen = _generator(tiny_bert_dir)
    gen.train()
    tokens = _tokens()
    first = gen.generate(tokens, max_new_tokens=8)
    assert first == gen.generate(tokens, max_new_tokens=8)
    assert gen.training  # mode restored
    beams = gen.generate(tokens, max_new_tokens=8, num_beams=3)
    assert len(beams) == 2 and all(isinstance(r, str) for r in beams)
    assert beams == gen.generate(tokens, max_new_tokens=8, num_beams=3)


def test_no_repeat_ngram_blocks_repeats(tiny_bert_dir):
    gen = _generator(tiny_bert_dir, repetition_penalty=1.0)
    for text in gen.generate(_tokens(), max_new_tokens=16, no_repeat_ngram_size=1):
        words = gen.tokenizer.tokenize(text)
        assert len(words) == len(set(words))


def test_decode_joins_wordpieces_and_drops_specials(tiny_bert_dir):
    gen = _generator(tiny_bert_dir)
    ids = gen.tokenizer("mild nodules in the right lobe. no effusion.", add_special_tokens=True)["input_ids"]
    assert "##s" in gen.tokenizer.convert_ids_to_tokens(ids)
    assert gen.decode([ids]) == ["Mild nodules in the right lobe. No effusion."]


def test_never_generates_special_or_unused_tokens(tiny_bert_dir):
    gen = _generator(tiny_bert_dir)
    tok = gen.tokenizer
    unused = tok.convert_tokens_to_ids("[unused0]")
    banned = {tok.cls_token_id, tok.pad_token_id, tok.mask_token_id, tok.unk_token_id, unused}
    assert banned <= set(gen.suppress_ids) and tok.sep_token_id not in gen.suppress_ids
    seen = []
    decode = gen.decode
    gen.decode = lambda ids: seen.append(ids) or decode(ids)  # capture the raw ids
    with torch.no_grad():  # bias the untrained LM towards [unused0] so the mask has work to do
        gen.lm.lm_head.weight[unused] *= 50
    gen.generate(_tokens(), max_new_tokens=12, repetition_penalty=1.0, no_repeat_ngram_size=0)
    assert not banned & set(seen[0].flatten().tolist()) - {tok.pad_token_id}  # pad only fills after eos


def test_loads_a_local_causal_lm_with_its_tokenizer(tiny_gpt2_dir, tiny_bert_dir):
    gen = _generator(tiny_bert_dir, name_or_path=str(tiny_gpt2_dir))
    assert gen.lm.config.n_embd == 32 and gen.lm.config.n_layer == 1  # sizes from the folder, not the config
    loss = gen.loss(_tokens(), REPORTS)
    assert torch.isfinite(loss)
    assert len(gen.generate(_tokens(), max_new_tokens=4)) == 2


@pytest.mark.parametrize(
    ("raw", "tidy"),
    [("no effusion. mild  emphysema.", "No effusion. Mild emphysema."), ("", ""), ("ok? yes", "Ok? Yes")],
)
def test_tidy_report(raw, tidy):
    assert tidy_report(raw) == tidy


@pytest.mark.parametrize("conditioning", ["prefix", "cross_attention"])
def test_compact_vocabulary_learns_and_decodes_the_reports(tiny_bert_dir, conditioning):
    """With only the training reports' tokens the decoder is smaller and still writes each report."""
    tok = load_tokenizer(str(tiny_bert_dir))
    vocab = report_vocabulary(REPORTS, tok)
    assert vocab == sorted(vocab) and {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id} <= set(vocab)
    gen = _generator(tiny_bert_dir, conditioning=conditioning, vocab_ids=vocab, dropout=0.0,
                     repetition_penalty=1.0, no_repeat_ngram_size=0)
    assert gen.lm.get_output_embeddings().weight.shape[0] == len(vocab) < len(tok)
    tokens = _tokens()
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3)
    for _ in range(150):
        loss = gen.loss(tokens, REPORTS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gen.generate(tokens) == [tidy_report(r.lower()) for r in REPORTS]


def test_compact_vocabulary_maps_unknown_words_to_unk_and_bans_specials(tiny_bert_dir):
    tok = load_tokenizer(str(tiny_bert_dir))
    gen = _generator(tiny_bert_dir, vocab_ids=report_vocabulary(["no pleural effusion."], tok))
    ids, mask = gen._report_ids(["no pleural effusion.", "xylophone"], torch.device("cpu"))
    unk = int(gen.to_lm_ids[tok.unk_token_id])
    assert ids[0, 0] == gen.bos_id and unk not in ids[0].tolist()
    assert unk in ids[1].tolist()  # a word the training reports never used
    assert gen.decode(ids[:1]) == ["No pleural effusion."]
    banned = set(gen.suppress_ids)
    assert {gen.bos_id, gen.pad_id, unk} <= banned and gen.eos_id not in banned
    assert max(banned) < gen.vocab_size


def test_compact_vocabulary_is_derived_only_for_the_from_scratch_decoder(tiny_bert_dir, tiny_gpt2_dir):
    from medmm.config import ModelConfig, PreprocessingConfig
    from medmm.models import derive_network

    def vocab(**generator):
        network = ModelConfig(text_encoder={"name_or_path": str(tiny_bert_dir)}, report_generator=generator)
        return derive_network(network, PreprocessingConfig(), REPORTS).vocab_ids

    assert vocab() == report_vocabulary(REPORTS, load_tokenizer(str(tiny_bert_dir)))
    assert vocab(name_or_path=str(tiny_gpt2_dir)) is None and vocab(vocabulary="tokenizer") is None
    with pytest.raises(ValueError, match="tokenizer has only"):
        _generator(tiny_bert_dir, vocab_ids=[10**7])


@pytest.mark.parametrize("conditioning", ["prefix", "cross_attention"])
def test_phrase_logprobs_rank_what_the_lm_would_write(tiny_bert_dir, conditioning):
    """Log p(phrase | prompt, image): independent of the other phrases' padding, and the greedy
    next word ranks first among one-token phrases."""
    gen = _generator(tiny_bert_dir, conditioning=conditioning)
    tokens = _tokens(batch=1)
    words = [w for w in ("effusion", "nodule", "heart", "no", "the") if len(gen.encode(" " + w)) == 1]
    next_word = gen.generate(tokens, prompt="findings:", max_new_tokens=1, num_beams=1)[0].strip()
    phrases = sorted(set(words) | {next_word})
    scores = gen.phrase_logprobs(tokens, "findings:", phrases)
    assert phrases[max(range(len(phrases)), key=scores.__getitem__)] == next_word
    both = gen.phrase_logprobs(tokens, "findings:", ["no pleural effusion", "nodule"])
    alone = gen.phrase_logprobs(tokens, "findings:", ["nodule"])
    assert both[1] == pytest.approx(alone[0], abs=1e-4) and all(s < 0 for s in both)
    assert gen.phrase_logprobs(tokens, "findings:", []) == [] and gen.training
