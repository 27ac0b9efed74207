"""Tiny transformers models built at test time (no hub access): sentencepiece vocabularies trained on a few
hundred sentences, random-weight configs, and a tiny M2M100 trained to copy labeled sentences."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

SLOT_TOKENS = [f"__SLOT{i}__" for i in range(8)]


@contextmanager
def one_thread() -> Iterator[None]:
    """Train tiny models on one thread: with matrices this small it is the fastest, and slows no other process."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def corpus(shared_data: Path, per_file: int = 300) -> list[str]:
    """Sentences of every language of the shared data (raw target text and English training sentences)."""
    sents: list[str] = []
    for lang in ("es", "ca", "gl"):
        with open(shared_data / "raw" / f"{lang}.txt", encoding="utf-8") as f:
            sents += [line.strip() for _, line in zip(range(per_file), f, strict=False) if line.strip()]
    with open(shared_data / "en" / "train.jsonl", encoding="utf-8") as f:
        for _, line in zip(range(per_file), f, strict=False):
            sents.append(" ".join(json.loads(line)["tokens"]))
    return sents


def train_sentencepiece(sentences: Iterable[str], prefix: Path, vocab_size: int = 1000,
                        user_symbols: Sequence[str] = (), model_type: str = "unigram") -> Path:
    """Train a sentencepiece model on `sentences`; returns `<prefix>.model`. `user_symbols` become single
    pieces of the vocabulary (the slot tokens of an LST model)."""
    import sentencepiece as spm

    prefix.parent.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)), model_prefix=str(prefix), vocab_size=vocab_size,
        model_type=model_type, character_coverage=1.0, user_defined_symbols=list(user_symbols),
        hard_vocab_limit=False, minloglevel=2,
    )
    return prefix.with_suffix(".model")


TINY_NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def build_tiny_token_classifier(out_dir: Path, shared_data: Path, steps: int = 300, max_position_embeddings: int = 66,
                                seed: int = 0, batch_size: int = 16) -> Path:
    """A tiny XLM-R token classifier over CoNLL BIO labels, saved (model and fast tokenizer) to `out_dir / "model"`:
    a sentencepiece vocabulary of the shared corpus, hidden size 32, 2 layers, 2 heads, trained `steps` steps on
    `en/train.jsonl` (the first sub-token of each word labeled) so that it finds names; `steps=0` leaves it
    random. Positions are few (`max_position_embeddings`), so long sentences exceed its window."""
    import random
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    spm_model = train_sentencepiece(corpus(shared_data), out_dir / "spm" / "sp", vocab_size=1000)
    shutil.copy(spm_model, spm_model.parent / "sentencepiece.bpe.model")
    tokenizer = XLMRobertaTokenizer.from_pretrained(str(spm_model.parent))  # the fast tokenizer, converted
    max_tokens = max_position_embeddings - 2  # XLM-R positions start at pad_token_id + 1 = 2

    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=max_position_embeddings, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        id2label=dict(enumerate(TINY_NER_LABELS)), label2id={label: i for i, label in enumerate(TINY_NER_LABELS)},
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    model = XLMRobertaForTokenClassification(config)
    if steps > 0:
        with open(shared_data / "en" / "train.jsonl", encoding="utf-8") as f:
            data = [json.loads(line) for line in f if line.strip()]
        rng = random.Random(seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        with one_thread():
            model.train()
            for _ in range(steps):
                batch = rng.sample(data, batch_size)
                enc = tokenizer([d["tokens"] for d in batch], is_split_into_words=True, truncation=True,
                                max_length=max_tokens, padding=True, return_tensors="pt")
                labels = torch.full(enc["input_ids"].shape, -100)
                for b, d in enumerate(batch):
                    seen: set[int] = set()
                    for t, w in enumerate(enc.word_ids(b)):
                        if w is not None and w not in seen:
                            seen.add(w)
                            labels[b, t] = config.label2id[d["tags"][w]]
                model(**enc, labels=labels).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
    model.eval()
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir
