"""Tiny M2M100 translation models built at test time: a random-weight one, and one trained for a few hundred
steps to copy sentences with slot markers between languages (so that labeled translation really returns
markers), both with an M2M100 tokenizer over a sentencepiece vocabulary that has the slot tokens."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from tiny_models import SLOT_TOKENS, corpus, one_thread, train_sentencepiece

LANGS = ("en", "es", "ca", "gl")


def build_tokenizer(out_dir: Path, sentences: list[str], vocab_size: int = 1000, slots: bool = True):
    """An M2M100Tokenizer; with `slots`, its sentencepiece vocabulary holds the slot tokens as whole pieces
    (as an LST checkpoint's does)."""
    from transformers import M2M100Tokenizer

    spm_model = train_sentencepiece(sentences, out_dir / "spm" / "spm", vocab_size, SLOT_TOKENS if slots else ())
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (out_dir / "spm").mkdir(parents=True, exist_ok=True)
    (out_dir / "spm" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return M2M100Tokenizer(vocab_file=str(out_dir / "spm" / "vocab.json"), spm_file=str(spm_model))


def _config(tokenizer, d_model: int = 64, layers: int = 2):
    from transformers import M2M100Config

    size = max(tokenizer.lang_code_to_id.values()) + 1 + tokenizer.num_madeup_words
    return M2M100Config(
        vocab_size=size, d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2, max_position_embeddings=256, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id, scale_embedding=True)


def build_random_m2m100(out_dir: Path, shared_data: Path, seed: int = 0, slots: bool = True) -> Path:
    """A random-weight M2M100 over a vocabulary of the shared corpus (with or without slot tokens)."""
    import torch
    from transformers import M2M100ForConditionalGeneration

    tok = build_tokenizer(out_dir, corpus(shared_data), slots=slots)
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(_config(tok))
    path = out_dir / ("m2m100-random" if slots else "m2m100-random-noslots")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


NAMES = ["John", "Maria", "Smith", "Madrid", "Barcelona", "New", "York", "Google", "Peter", "Lisboa", "Ana",
         "Europe", "Garcia", "Paris", "Texas", "Apple", "Laura", "Rome", "Sony", "Vigo"]
WORDS = ["lives", "in", "the", "visited", "works", "for", "and", "with", "today", "city", "el", "la", "de", "vive",
         "en", "con", "y", "a", "big", "small", "house", "went", "to", "from", "is", "new", "old", "year", "."]


def toy_sentence(rng: random.Random) -> str:
    """A short sentence of WORDS with up to three names (1-2 capitalized words) between slot markers."""
    units = [rng.choice(WORDS) for _ in range(rng.randint(3, 7))]
    for slot in range(rng.randint(0, 3)):
        name = " ".join(rng.choice(NAMES) for _ in range(rng.randint(1, 2)))
        units.insert(rng.randint(0, len(units)), f"__SLOT{slot}__ {name} __SLOT{slot}__")
    return " ".join(units)


def unmarked(text: str) -> str:
    return " ".join(w for w in text.split() if not w.startswith("__SLOT"))


def bracketed(text: str) -> str:
    """The slot-marked toy sentence with EasyProject-style brackets instead: `[ John Smith ]`."""
    return re.sub(r"(__SLOT\d+__) (.*?) \1", r"[ \2 ]", text)


def build_copy_m2m100(out_dir: Path, steps: int = 700, seed: int = 0, d_model: int = 64, lr: float = 5e-3) -> Path:
    """A tiny M2M100 trained to copy toy sentences with slot (or bracket) markers from any of LANGS to any other:
    a stand-in for an LST checkpoint that really keeps the markers. Some tens of seconds on two CPU cores."""
    import torch
    from transformers import M2M100ForConditionalGeneration

    rng = random.Random(seed)
    torch.manual_seed(seed)
    texts = [toy_sentence(rng) for _ in range(4000)]
    # a third of the sentences carry brackets instead of slots, so that both marker styles are kept
    texts = [bracketed(t) if k % 3 == 2 else t for k, t in enumerate(texts)]
    tok = build_tokenizer(out_dir, [unmarked(t) for t in texts], vocab_size=120)
    model = M2M100ForConditionalGeneration(_config(tok, d_model=d_model))

    def ids(text: str, lang: str) -> list[int]:
        pieces = []
        for part in re.split(r"(__SLOT\d+__)", text):
            if part.startswith("__SLOT"):
                pieces.append(part)
            elif part.strip():
                pieces += tok.tokenize(part.strip())
        return [tok.get_lang_id(lang), *tok.convert_tokens_to_ids(pieces), tok.eos_token_id]

    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    batch = 64
    with one_thread():
        for step in range(steps):
            rows = [texts[(step * batch + k) % len(texts)] for k in range(batch)]
            pairs = [(ids(t, rng.choice(LANGS)), ids(t, rng.choice(LANGS))) for t in rows]
            src_w = max(len(s) for s, _ in pairs)
            tgt_w = max(len(t) for _, t in pairs)
            src = torch.full((batch, src_w), tok.pad_token_id)
            mask = torch.zeros((batch, src_w), dtype=torch.long)
            labels = torch.full((batch, tgt_w), -100)
            for r, (s, t) in enumerate(pairs):
                src[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
                labels[r, :len(t)] = torch.tensor(t)
            dec_in = torch.full((batch, tgt_w), tok.pad_token_id)
            dec_in[:, 0] = tok.eos_token_id
            dec_in[:, 1:] = labels[:, :-1].clamp(min=0).masked_fill(labels[:, :-1] < 0, tok.pad_token_id)
            loss = model(input_ids=src, attention_mask=mask, decoder_input_ids=dec_in, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad()
    model.eval()
    path = out_dir / "m2m100-copy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "train_loss.txt").write_text(f"{loss.item():.4f}\n")
    return path


NLLB_CODES = ["eng_Latn", "spa_Latn", "cat_Latn", "glg_Latn", "eus_Latn", "swh_Latn", "zho_Hans"]


def _random_seq2seq(path: Path, tokenizer, config, cls, seed: int) -> Path:
    import torch

    torch.manual_seed(seed)
    model = cls(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_random_nllb(out_dir: Path, shared_data: Path, seed: int = 0) -> Path:
    """A random-weight NLLB: the M2M100 architecture with an NLLB tokenizer (BPE sentencepiece, FLORES-200 codes
    added as special tokens, as the hub's tokenizer.json has them)."""
    import shutil

    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    spm_model = train_sentencepiece(corpus(shared_data), out_dir / "spm" / "spm", 1000, model_type="bpe")
    shutil.copy(spm_model, spm_model.parent / "sentencepiece.bpe.model")
    tok = NllbTokenizer.from_pretrained(str(spm_model.parent))  # converted to the fast tokenizer
    tok.add_tokens(NLLB_CODES, special_tokens=True)
    config = M2M100Config(
        vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id, scale_embedding=True, tokenizer_class="NllbTokenizer")
    return _random_seq2seq(out_dir / "nllb-random", tok, config, M2M100ForConditionalGeneration, seed)


def build_random_marian(out_dir: Path, shared_data: Path, seed: int = 0) -> Path:
    """A random-weight single-pair Marian model, in a folder named like the hub's (`opus-mt-en-es`)."""
    import sentencepiece as spm
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    spm_model = train_sentencepiece(corpus(shared_data), out_dir / "spm" / "spm", 1000)
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    (out_dir / "spm" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    tok = MarianTokenizer(str(spm_model), str(spm_model), str(out_dir / "spm" / "vocab.json"))
    config = MarianConfig(
        vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128,
        pad_token_id=vocab["<pad>"], eos_token_id=0, decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=0)
    return _random_seq2seq(out_dir / "opus-mt-en-es", tok, config, MarianMTModel, seed)
