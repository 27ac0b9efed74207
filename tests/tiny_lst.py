"""A synthetic parallel corpus (English and a toy "Spanish" made from a word dictionary, with adjective-noun swap
and time adverbs moved to the front) and a tiny M2M100 base translation model trained on it, built at test time:
the stand-ins for a real parallel corpus and for an off-the-shelf M2M100 that knows no slot markers."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tiny_models import one_thread
from tiny_seq2seq import _config, build_tokenizer

NOUNS = {"house": "casa", "city": "ciudad", "car": "coche", "book": "libro", "dog": "perro", "river": "rio",
         "school": "escuela", "market": "mercado", "bridge": "puente", "garden": "jardin"}
ADJECTIVES = {"big": "grande", "small": "chico", "old": "viejo", "new": "nuevo", "red": "rojo", "green": "verde"}
VERBS = {"visited": "visito", "saw": "vio", "bought": "compro", "likes": "quiere", "left": "dejo",
         "painted": "pinto"}
PREPOSITIONS = {"in": "en", "with": "con", "from": "desde", "near": "cerca"}
TIMES = {"today": "hoy", "yesterday": "ayer", "again": "otra vez"}
NAMES = ["John", "Maria", "Smith", "Madrid", "Peter", "Lisboa", "Ana", "Garcia", "Paris", "Laura", "Vigo",
         "Rome", "Texas", "Sony", "Oslo", "Kenya", "Tokyo", "Lima", "Quito", "Berlin"]


@dataclass
class SyntheticPair:
    en: str
    es: str
    names: list[tuple[tuple[int, int], tuple[int, int]]]  # character spans of each name, English and toy Spanish


class _Builder:
    """Builds both sides word by word, recording where each name lands on each side."""

    def __init__(self) -> None:
        self.en: list[str] = []
        self.es: list[str] = []
        self.names: list[tuple[int, int]] = []  # word index ranges on each side, recovered as char spans below

    def phrase(self, rng: random.Random) -> tuple[list[str], list[str], bool]:
        if rng.random() < 0.5:
            name = [rng.choice(NAMES) for _ in range(rng.randint(1, 2))]
            return name, list(name), True
        noun = rng.choice(list(NOUNS))
        if rng.random() < 0.6:
            adj = rng.choice(list(ADJECTIVES))
            return ["the", adj, noun], ["el", NOUNS[noun], ADJECTIVES[adj]], False
        return ["the", noun], ["el", NOUNS[noun]], False


def _spans(words: list[str], marks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    return [(starts[a], starts[b - 1] + len(words[b - 1])) for a, b in marks]


def synthetic_pair(rng: random.Random) -> SyntheticPair:
    b = _Builder()
    en: list[str] = []
    es: list[str] = []
    en_names: list[tuple[int, int]] = []
    es_names: list[tuple[int, int]] = []
    time = rng.choice(list(TIMES)) if rng.random() < 0.3 else None
    if time:
        es += TIMES[time].split()
    parts = [b.phrase(rng), ([v := rng.choice(list(VERBS))], [VERBS[v]], False), b.phrase(rng)]
    if rng.random() < 0.5:
        p = rng.choice(list(PREPOSITIONS))
        parts += [([p], [PREPOSITIONS[p]], False), b.phrase(rng)]
    for en_words, es_words, is_name in parts:
        if is_name:
            en_names.append((len(en), len(en) + len(en_words)))
            es_names.append((len(es), len(es) + len(es_words)))
        en += en_words
        es += es_words
    if time:
        en.append(time)
    en.append(".")
    es.append(".")
    en_text, es_text = " ".join(en), " ".join(es)
    return SyntheticPair(en_text, es_text, list(zip(_spans(en, en_names), _spans(es, es_names), strict=True)))


def synthetic_corpus(n: int, seed: int) -> list[SyntheticPair]:
    rng = random.Random(seed)
    return [synthetic_pair(rng) for _ in range(n)]


def write_parallel(pairs: list[SyntheticPair], folder: Path) -> tuple[Path, Path]:
    """The corpus as two text files, one sentence a line (the input of `crop lst prepare`)."""
    folder.mkdir(parents=True, exist_ok=True)
    src, tgt = folder / "train.en", folder / "train.es"
    src.write_text("".join(p.en + "\n" for p in pairs), encoding="utf-8")
    tgt.write_text("".join(p.es + "\n" for p in pairs), encoding="utf-8")
    return src, tgt


def entity_records(pairs: list[SyntheticPair]) -> list[dict]:
    """The pairs as LST records whose phrases are the names (the entities of this toy world), in the schema of
    `crop lst prepare`: what marker accuracy is measured on."""
    from crop.markers import get_codec
    from crop.types import Span

    slot = get_codec("slot")
    out = []
    for k, p in enumerate(pairs):
        src_spans = [Span(start=a, end=b, label="X") for (a, b), _ in p.names]
        tgt_spans = [Span(start=a, end=b, label="X") for _, (a, b) in p.names]
        out.append({
            "id": f"syn-{k}", "src_lang": "en", "tgt_lang": "es", "src": p.en, "tgt": p.es,
            "src_marked": slot.encode(p.en, src_spans), "tgt_marked": slot.encode(p.es, tgt_spans),
            "phrases": [{"slot": i, "src": list(s), "tgt": list(t), "src_text": p.en[s[0]:s[1]],
                         "tgt_text": p.es[t[0]:t[1]]} for i, (s, t) in enumerate(p.names)]})
    return out


def write_jsonl(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def build_base_m2m100(out_dir: Path, steps: int = 500, seed: int = 0) -> Path:
    """A tiny M2M100 with no slot tokens, trained (by crop's own trainer, plain objective only: alpha 0) to
    translate the synthetic corpus in both directions: the "off-the-shelf" model LST fine-tuning starts from."""
    import torch
    from transformers import M2M100ForConditionalGeneration

    from crop.train.lst.finetune import LstTrainConfig, train_lst

    pairs = synthetic_corpus(3000, seed=seed + 1)
    tok = build_tokenizer(out_dir / "base-spm", [p.en for p in pairs] + [p.es for p in pairs], vocab_size=160,
                          slots=False)
    torch.manual_seed(seed)
    init = out_dir / "m2m100-init"
    M2M100ForConditionalGeneration(_config(tok, d_model=64)).save_pretrained(init)
    tok.save_pretrained(init)
    data = write_jsonl([{"src_lang": "en", "tgt_lang": "es", "src": p.en, "tgt": p.es, "src_marked": p.en,
                         "tgt_marked": p.es, "phrases": []} for p in pairs], out_dir / "plain.jsonl")
    base = out_dir / "m2m100-base"
    with one_thread():
        train_lst(LstTrainConfig(model=str(init), data=[str(data)], output=str(base), max_steps=steps,
                                 batch_size=48, lr=3e-3, warmup_steps=50, schedule="linear", alpha=0.0,
                                 label_smoothing=0.0, device="cpu", save_every=10**9, log_every=100,
                                 seed=seed, slots=16))
    return base
