"""Report generator: a transformers causal LM conditioned on the image tokens.

Conditioning (ClipCap-style prefix, Mokady et al. 2021, "ClipCap: CLIP Prefix for Image
Captioning"): a learned projector maps each image token into the LM's embedding space and the
projected tokens are prepended to the report's token embeddings. The LM attends to them like to
any earlier word; the loss is taken only on report tokens. With ``conditioning: cross_attention``
the from-scratch GPT-2 gets cross-attention layers that attend to the projected tokens instead.

The default LM is a small GPT-2 built from ``GPT2Config`` and trained from scratch with the text
encoder's (WordPiece) tokenizer, mapping bos=[CLS], eos=[SEP], pad=[PAD]. A local causal-LM
folder is loaded with ``AutoModelForCausalLM`` and its own tokenizer.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmm.config.network import ReportGeneratorConfig
from medmm.errors import MedmmConfigError
from medmm.models.decode_threads import decode_threads
from medmm.models.grounding import FindingsPrompt, finding_states, noisy_findings
from medmm.models.pretrained import load_causal_lm, load_tokenizer
from medmm.models.report_length import lm_positions
from medmm.models.report_tokens import (  # noqa: F401  (re-exported: the generator's public helpers)
    _decoder_specials,
    _MaskTokens,
    _never_generate,
    report_vocabulary,
    special_token_ids,
    tidy_report,
)

IGNORE_INDEX = -100  # label value cross-entropy skips (transformers' convention)


class ReportGenerator(nn.Module):
    """Causal LM + image-token projector with a teacher-forced loss and beam/greedy decoding.

    Args:
        cfg: generator settings (LM sizes or path, conditioning, decoding defaults).
        image_dim: width ``D`` of the image tokens.
        tokenizer: tokenizer to reuse for the from-scratch decoder (the text encoder's); a loaded
            LM always uses its own.
        vocab_ids: the from-scratch decoder's vocabulary (`NetworkDerived.vocab_ids`; None = all).
    """

    def __init__(self, cfg: ReportGeneratorConfig, image_dim: int, tokenizer: Any,
                 vocab_ids: Sequence[int] | None = None, n_findings: int = 0, n_image_tokens: int = 0):
        super().__init__()
        self.cfg = cfg
        if cfg.name_or_path is None and cfg.grounding == "findings":
            prefix = n_findings + (n_image_tokens if cfg.conditioning == "prefix" else 0)
            need = prefix + 2 + max(cfg.max_report_tokens, cfg.max_new_tokens)
            if need > cfg.n_positions:
                raise MedmmConfigError(
                    "network.report_generator.n_positions",
                    f"{cfg.n_positions} is too small: {n_findings} finding + {prefix - n_findings} image prompt tokens, "
                    f"bos/eos and {max(cfg.max_report_tokens, cfg.max_new_tokens)} report tokens need {need}")
        if cfg.name_or_path is None:
            from transformers import GPT2Config, GPT2LMHeadModel

            self.tokenizer = tokenizer
            self._compact_vocabulary(vocab_ids)
            lm_config = GPT2Config(
                vocab_size=self.vocab_size,
                n_positions=cfg.n_positions,
                n_embd=cfg.n_embd,
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
                resid_pdrop=cfg.dropout,
                embd_pdrop=cfg.dropout,
                attn_pdrop=cfg.dropout,
                bos_token_id=self.bos_id,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                add_cross_attention=cfg.conditioning == "cross_attention",
            )
            self.lm = GPT2LMHeadModel(lm_config)
        else:
            self.tokenizer = load_tokenizer(cfg.name_or_path, where="network.report_generator.name_or_path")
            self.lm = load_causal_lm(cfg.name_or_path)
            if cfg.lora is not None:
                from medmm.models.lora import apply_lora

                self.lm = apply_lora(self.lm, cfg.lora)
            self._compact_vocabulary(None)
        # GPT-2's logits are exactly lm_head(transformer(...)); other LMs may post-process them
        self._split_head = type(self.lm).__name__ == "GPT2LMHeadModel"
        width = int(self.lm.get_input_embeddings().embedding_dim)
        # two-layer MLP projector (ClipCap / LLaVA-1.5 style) from image tokens to LM embeddings
        self.projector = nn.Sequential(nn.Linear(image_dim, width), nn.GELU(), nn.Linear(width, width))
        self.findings_prompt: FindingsPrompt | None = None
        if cfg.grounding == "findings":
            if n_findings < 1:
                raise MedmmConfigError("network.report_generator.grounding", "findings grounding needs the model's labels")
            self.findings_prompt = FindingsPrompt(n_findings, width)
        self.n_findings = n_findings

    # ----------------------------------------------------------------------------- vocabulary
    def _compact_vocabulary(self, vocab_ids: Sequence[int] | None) -> None:
        """Set the LM's token space: the tokenizer's ids, or the compact list ``vocab_ids``.

        With a compact vocabulary, LM id ``k`` stands for tokenizer id ``vocab[k]``; tokenizer ids
        outside it map to [UNK]. transformers cannot shrink a tokenizer, so the two lookups live
        here; they are rebuilt from the config, never saved with the weights.
        """
        bos, eos, pad = special_token_ids(self.tokenizer)
        never = _never_generate(self.tokenizer, eos)
        self.to_tokenizer_ids: torch.Tensor | None = None
        self.to_lm_ids: torch.Tensor | None = None
        if vocab_ids is None:
            self.vocab_size = len(self.tokenizer)
            self.bos_id, self.eos_id, self.pad_id = bos, eos, pad
            self.suppress_ids = never
            return
        unk = self.tokenizer.unk_token_id
        vocab = sorted(set(int(i) for i in vocab_ids) | _decoder_specials(self.tokenizer))
        if vocab[-1] >= len(self.tokenizer):
            raise ValueError(f"vocab_ids holds id {vocab[-1]} but the tokenizer has only {len(self.tokenizer)} tokens")
        to_lm = torch.full((len(self.tokenizer),), vocab.index(unk if unk is not None else pad), dtype=torch.long)
        to_lm[vocab] = torch.arange(len(vocab))
        self.to_tokenizer_ids, self.to_lm_ids = torch.tensor(vocab), to_lm
        self.vocab_size = len(vocab)
        self.bos_id, self.eos_id, self.pad_id = (int(to_lm[i]) for i in (bos, eos, pad))
        banned = set(never)
        self.suppress_ids = [k for k, token in enumerate(vocab) if token in banned]

    def _lm_ids(self, ids: Sequence[int]) -> list[int]:
        """Tokenizer ids -> LM ids (ids outside a compact vocabulary become [UNK])."""
        if self.to_lm_ids is None or not ids:
            return list(ids)
        return self.to_lm_ids[torch.as_tensor(list(ids), dtype=torch.long)].tolist()

    # ----------------------------------------------------------------------------- helpers
    def _report_ids(self, reports: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``[bos] report [eos]`` LM ids right-padded, and the mask of real (non-pad) positions."""
        enc = self.tokenizer(
            [r or "" for r in reports],
            add_special_tokens=False,
            truncation=True,
            max_length=self.cfg.max_report_tokens,
        )["input_ids"]
        seqs = [[self.bos_id, *self._lm_ids(ids), self.eos_id] for ids in enc]
        length = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids.to(device), mask.to(device)

    def _prefix(self, tokens: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """Projected image tokens, after the findings prompt when the generator is grounded."""
        prefix = self.projector(tokens)
        if self.findings_prompt is not None:
            if states is None:
                raise ValueError("a findings-grounded report generator needs the findings (decisions) of each image")
            prefix = torch.cat([self.findings_prompt(states.to(prefix.device)), prefix], dim=1)
        return prefix.to(self.lm.dtype)

    @property
    def decode_threads(self) -> int | None:
        """CPU threads while decoding (``cfg.decode_threads``; by default 1 for the from-scratch decoder)."""
        if self.cfg.decode_threads is not None:
            return self.cfg.decode_threads
        return 1 if self.cfg.name_or_path is None else None

    @property
    def grounded(self) -> bool:
        return self.findings_prompt is not None

    def frozen_keys(self) -> set[str]:
        """State-dict keys (relative to this module) of frozen pretrained LM weights (a LoRA base)."""
        if self.cfg.lora is None:
            return set()
        trainable = {name for name, p in self.lm.named_parameters() if p.requires_grad}
        return {f"lm.{key}" for key in self.lm.state_dict() if key not in trainable}

    # ----------------------------------------------------------------------------- training
    def loss(self, tokens: torch.Tensor, reports: Sequence[str], findings: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced next-token cross-entropy over report tokens (and eos) only.

        Args:
            tokens: image tokens ``[B, N, D]``.
            reports: one reference report per image.
            findings: ``[B, L]`` labels (1/0/-1) for a grounded generator; in training mode
                perturbed by :func:`noisy_findings`.

        Returns:
            Scalar mean loss; the image prefix, the given bos token and padding carry no loss.
        """
        if len(reports) != tokens.shape[0]:
            raise ValueError(f"{len(reports)} reports for {tokens.shape[0]} images")
        if not reports:
            raise ValueError("report loss needs at least one report (the batch is empty)")
        ids, mask = self._report_ids(reports, tokens.device)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX  # bos is given, never predicted
        states = None
        if self.grounded and findings is not None:
            cfg = self.cfg
            states = (noisy_findings(findings, cfg.grounding_hide, cfg.grounding_flip) if self.training
                      else finding_states(findings))
        prefix = self._prefix(tokens, states)
        embeds = self.lm.get_input_embeddings()(ids)
        extra = {}
        if self.cfg.conditioning == "cross_attention":
            extra["encoder_hidden_states"] = prefix
        else:
            n_prefix = prefix.shape[1]
            embeds = torch.cat([prefix, embeds], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], n_prefix), mask], dim=1)
            labels = torch.cat([labels.new_full((labels.shape[0], n_prefix), IGNORE_INDEX), labels], dim=1)
        targets = labels[:, 1:]  # position t predicts token t+1
        keep = targets != IGNORE_INDEX
        if self._split_head:
            # the vocabulary projection dominates the cost; apply it only where a target exists
            hidden = self.lm.base_model(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state
            logits = self.lm.get_output_embeddings()(hidden[:, :-1][keep])
        else:
            logits = self.lm(inputs_embeds=embeds, attention_mask=mask, **extra).logits[:, :-1][keep]
        return F.cross_entropy(logits.float(), targets[keep])

    # ----------------------------------------------------------------------------- decoding
    def _processors(self) -> Any:
        from transformers import LogitsProcessorList

        return LogitsProcessorList([_MaskTokens(self.suppress_ids)]) if self.suppress_ids else LogitsProcessorList()

    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int | None = None,
        num_beams: int | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        length_penalty: float | None = None,
        findings: torch.Tensor | None = None,
        prompt: str | None = None,
        bad_words: Sequence[str] = (),
        stop_at_sentence: bool = False,
    ) -> list[str]:
        """Write one report per image (greedy when ``num_beams == 1``, else beam search).

        Unset arguments take the config's decoding defaults. Runs the LM in eval mode (no
        dropout, so greedy decoding is deterministic) and restores the previous mode.

        Args:
            findings: ``[B, L]`` finding states (the decisions) for a grounded generator.
            prompt: text every report is forced to start with (the verifier's forced mention);
                only the continuation is returned.
            bad_words: phrases the decoder may not write (transformers' ``bad_words_ids``).
            stop_at_sentence: end at the first full stop (one sentence).
        """
        from transformers import GenerationConfig

        cfg = self.cfg
        beams = num_beams or cfg.num_beams
        eos: int | list[int] = self.eos_id
        if stop_at_sentence and self._period_id is not None:
            eos = [self.eos_id, self._period_id]
        gen_config = GenerationConfig(
            max_new_tokens=max_new_tokens or cfg.max_new_tokens,
            num_beams=beams,
            do_sample=False,
            repetition_penalty=repetition_penalty or cfg.repetition_penalty,
            no_repeat_ngram_size=cfg.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size,
            length_penalty=cfg.length_penalty if length_penalty is None else length_penalty,
            early_stopping=beams > 1,
            bos_token_id=self.bos_id,
            eos_token_id=eos,
            pad_token_id=self.pad_id,
            bad_words_ids=self.phrase_ids(bad_words) or None,
        )
        was_training = self.training
        self.eval()
        try:
            with warnings.catch_warnings(), decode_threads(self.decode_threads, tokens.device):
                # the penalties are meant for the report only; the image prefix has no token ids
                warnings.filterwarnings("ignore", message=r"Passing `(repetition_penalty|no_repeat_ngram_size)`")
                batch = tokens.shape[0]
                states = None if findings is None else finding_states(findings)
                prefix = self._prefix(tokens, states)
                forced = self.encode(prompt) if prompt else []
                start = torch.tensor([[self.bos_id, *forced]] * batch, dtype=torch.long, device=tokens.device)
                # never decode past the LM's positions (a forced prompt after a long report can reach them)
                used = start.shape[1] + (0 if cfg.conditioning == "cross_attention" else prefix.shape[1])
                room = lm_positions(self.lm.config) - used
                if room < 1:
                    return [""] * batch
                gen_config.max_new_tokens = min(gen_config.max_new_tokens, room)
                if cfg.conditioning == "cross_attention":
                    out = self.lm.generate(
                        input_ids=start,
                        attention_mask=torch.ones_like(start),
                        encoder_hidden_states=prefix,
                        generation_config=gen_config,
                        logits_processor=self._processors(),
                    )
                    out = out[:, start.shape[1]:]  # drop the bos and the forced prompt we gave
                else:
                    embeds = torch.cat([prefix, self.lm.get_input_embeddings()(start)], dim=1)
                    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=tokens.device)
                    # with only inputs_embeds, generate returns just the new tokens
                    out = self.lm.generate(
                        inputs_embeds=embeds,
                        attention_mask=mask,
                        generation_config=gen_config,
                        logits_processor=self._processors(),
                    )
        finally:
            self.train(was_training)
        return self.decode(out, tidy=False) if prompt else self.decode(out)

    @torch.no_grad()
    def phrase_logprobs(self, tokens: torch.Tensor, prompt: str, phrases: Sequence[str],
                        findings: torch.Tensor | None = None) -> list[float]:
        """Log-probability the LM gives each phrase right after ``prompt`` (one scan, ``tokens [1, N, D]``).

        The verifier ranks a finding's synonyms by it before forcing a mention: the phrase this
        LM, reading this image, would write ("enlarged lymph node", not the alphabetically first
        "adenopathy"). One teacher-forced pass over all phrases, in eval mode.
        """
        head = [self.bos_id, *self.encode(prompt)]
        seqs = [head + self.encode(" " + p) for p in phrases]
        if not seqs:
            return []
        ids = torch.full((len(seqs), max(map(len, seqs))), self.pad_id, dtype=torch.long, device=tokens.device)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
        was_training = self.training
        self.eval()
        try:
            with decode_threads(self.decode_threads, tokens.device):
                states = None if findings is None else finding_states(findings)
                prefix = self._prefix(tokens, states).expand(len(seqs), -1, -1).contiguous()
                embeds = self.lm.get_input_embeddings()(ids)
                if self.cfg.conditioning == "cross_attention":
                    logits, offset = self.lm(inputs_embeds=embeds, encoder_hidden_states=prefix).logits, 0
                else:
                    logits = self.lm(inputs_embeds=torch.cat([prefix, embeds], dim=1)).logits
                    offset = prefix.shape[1]
                logp = torch.log_softmax(logits.float(), dim=-1)
        finally:
            self.train(was_training)
        # right padding: the phrase tokens see only the prompt and themselves (causal attention)
        return [float(sum(logp[row, offset + t - 1, seq[t]] for t in range(len(head), len(seq))))
                for row, seq in enumerate(seqs)]

    # ----------------------------------------------------------------------------- token helpers
    def encode(self, text: str) -> list[int]:
        """LM ids of ``text`` (no special tokens)."""
        return self._lm_ids(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def can_write(self, text: str) -> bool:
        """True when every token of ``text`` is in the LM's vocabulary (no [UNK])."""
        unk = self.tokenizer.unk_token_id
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if unk is not None and unk in ids:
            return False
        if self.to_lm_ids is None:
            return True
        return all(int(self.to_tokenizer_ids[self.to_lm_ids[i]]) == i for i in ids)

    def phrase_ids(self, phrases: Sequence[str]) -> list[list[int]]:
        """Token-id sequences of ``phrases`` as the LM could write them (lower/capitalised, with or
        without a leading space for byte-level BPE), for ``bad_words_ids``."""
        cache = self.__dict__.setdefault("_phrase_cache", {})
        out: set[tuple[int, ...]] = set()
        for phrase in phrases:
            if phrase not in cache:
                found = set()
                for variant in {phrase, phrase.lower(), phrase[:1].upper() + phrase[1:]}:
                    for text in (variant, " " + variant):
                        ids = tuple(self.encode(text))
                        if ids and (self.to_lm_ids is None or self.can_write(text)):
                            found.add(ids)
                cache[phrase] = found
            out |= cache[phrase]
        return [list(ids) for ids in sorted(out)]

    @property
    def _period_id(self) -> int | None:
        ids = self.encode(".")
        return ids[0] if len(ids) == 1 else None

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]], tidy: bool = True) -> list[str]:
        """LM token ids → readable reports (special tokens dropped, WordPiece ``##`` joined, spaces tidied)."""
        if self.to_tokenizer_ids is not None:
            vocab = self.to_tokenizer_ids
            ids = [vocab[torch.as_tensor(row, dtype=torch.long).cpu()].tolist() for row in ids]
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        return [tidy_report(t) for t in texts] if tidy else [" ".join(t.split()) for t in texts]
