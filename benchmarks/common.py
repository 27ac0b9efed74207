"""Shared helpers of the benchmarks: the dev data, translations computed once per language."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from crop.io import InputSentence, read_jsonl
from crop.pipeline import english_spans
from crop.project import ProjectionRequest
from crop.types import AlignedTranslation, LabeledItem, LabeledResult, Span

LANGS = ("es", "ca", "gl")


def shared_data() -> Path:
    env = os.environ.get("CROP_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def english_tagger(retrain: bool = False, epochs: int = 10, seed: int = 0) -> tuple[Path, dict | None]:
    """The English tagger fitted to en/train.jsonl (the paper's setting: the source tagger is trained on the source
    labels), cached in benchmarks/results/models/en-conll (en-conll-s<seed> for another seed, as `crop tagger train
    --seed` fits it): its folder (a `--tagger spacy:FOLDER` spec), and the fit's numbers when it was fitted now
    (None when it came from the cache)."""
    from crop.tag.spacy_train import train_spacy_ner

    model = Path(__file__).resolve().parent / "results" / "models" / ("en-conll" + (f"-s{seed}" if seed else ""))
    if not retrain and (model / "meta.json").exists():
        return model, None
    fit = train_spacy_ner(shared_data() / "en" / "train.jsonl", model, epochs=epochs, seed=seed)
    return model, {"best_epoch": fit.best_epoch, "held_out_f1": fit.best_dev_f1,
                   "train_sentences": fit.train_sentences}


def load_dev(lang: str) -> list[InputSentence]:
    return list(read_jsonl(shared_data() / "dev" / f"{lang}.dev.jsonl", lang))


@dataclass
class Translated:
    """Everything the engines produce for one dev set, in gold-English mode and end to end."""

    sentences: list[InputSentence]
    gold_english: list[tuple[str, list[Span]]]
    gold_back: list[LabeledResult | None]
    forward_aligned: list[AlignedTranslation]
    e2e_english: list[str]
    e2e_spans: list[list[Span]]
    e2e_back: list[LabeledResult | None]
    seconds: dict[str, float]

    def requests(self, mode: str, use_forward: bool = True) -> list[ProjectionRequest]:
        out = []
        for i, s in enumerate(self.sentences):
            if mode == "gold":
                text, spans = self.gold_english[i]
                back = self.gold_back[i]
            else:
                text, spans, back = self.e2e_english[i], self.e2e_spans[i], self.e2e_back[i]
            out.append(ProjectionRequest(s.tokens, s.lang, spans, back,
                                         self.forward_aligned[i] if use_forward else None, text, s.id, s.text,
                                         offsets=s.offsets, source_is_translation=mode == "e2e"))
        return out


def translate_dev(translator, tagger, lang: str) -> Translated:
    sents = load_dev(lang)
    secs: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        secs[name] = secs.get(name, 0.0) + time.perf_counter() - t0
        return out

    gold = [english_spans(s.en_tokens or [], s.en_tags or []) for s in sents]
    gold_back = _back(translator, gold, lang, timed)
    aligned = timed("align", translator.translate_aligned, [s.tokens for s in sents], lang, "en")
    e2e_text = timed("forward", translator.translate, [s.text for s in sents], lang, "en")
    e2e_spans = timed("tag", tagger.tag, e2e_text, "en")
    e2e_back = _back(translator, list(zip(e2e_text, e2e_spans, strict=True)), lang, timed)
    return Translated(sents, gold, gold_back, aligned, e2e_text, e2e_spans, e2e_back, secs)


def _back(translator, english: list[tuple[str, list[Span]]], lang: str, timed) -> list[LabeledResult | None]:
    idx = [i for i, (_, spans) in enumerate(english) if spans]
    res = timed("back", translator.translate_labeled, [LabeledItem(text=english[i][0], spans=english[i][1])
                                                        for i in idx], "en", lang)
    out: list[LabeledResult | None] = [None] * len(english)
    for i, r in zip(idx, res, strict=True):
        out[i] = r
    return out


def emit(name: str, result: dict) -> None:
    """Print the JSON summary and keep a copy under benchmarks/results/."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(text + "\n")


def serve_tagger(env: dict[str, str], timeout: float = 180.0,
                 unset: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`crop serve tagger` on a free loopback port with `env` (on top of this process's environment, less the
    variables `unset`), once it is ready: the process and its URL; killed if not ready within `timeout` s."""
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from crop.cli import main; main()", "serve", "tagger",
                             "--port", str(port)],
                            env={k: v for k, v in {**os.environ, **env}.items() if k not in unset})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the tagger service did not start")
        time.sleep(0.2)
