"""prepare -> train -> eval -> serve on a synthetic parallel corpus: a tiny M2M100 that translates but knows no
slot markers is fine-tuned for a few hundred CPU steps on slot data made by eflomal alignments, and keeps markers
around the equivalent target spans afterwards (it kept none before); the checkpoint then serves through the
transformers and CTranslate2 engines and the translator service."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from servers import running
from tiny_lst import build_base_m2m100, entity_records, synthetic_corpus, write_jsonl, write_parallel
from tiny_models import one_thread

from crop.api import translator as translator_api
from crop.api.settings import TranslatorSettings
from crop.train.lst.finetune import LstTrainConfig, train_lst
from crop.train.lst.marker_eval import evaluate, read_items
from crop.train.lst.prepare import PrepareConfig, prepare
from crop.translate import load_translator
from crop.translate.convert import convert

pytestmark = pytest.mark.neural


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base_m2m100(tmp_path_factory.mktemp("lst-base"))


def _match(report, engine: str) -> float:
    (row,) = [r for r in report.engines if r.engine == engine]
    return row.match_share


def test_prepare_train_eval_serve(base_model: Path, tmp_path: Path):
    # prepare: eflomal alignments of 3000 synthetic pairs -> slot data
    src, tgt = write_parallel(synthetic_corpus(3000, seed=11), tmp_path / "train")
    stats = prepare(PrepareConfig("en", "es", seed=0), tmp_path / "lst.jsonl", src=src, tgt=tgt)
    assert stats.pairs_written == 3000 and stats.slots_histogram[0] < 0.25 * 3000
    # held out: the names of unseen sentences (the entities of this toy world), and aligned phrases of others
    names = write_jsonl(entity_records([p for p in synthetic_corpus(400, seed=13) if p.names][:200]),
                        tmp_path / "names.jsonl")
    held_src, held_tgt = write_parallel(synthetic_corpus(200, seed=12), tmp_path / "held")
    prepare(PrepareConfig("en", "es", seed=1), tmp_path / "phrases.jsonl", src=held_src, tgt=held_tgt)
    items = {"names": list(read_items(names)), "phrases": list(read_items(tmp_path / "phrases.jsonl"))}

    before = {k: evaluate({"slot": load_translator(f"transformers:{base_model}", markers="slot", beam_size=1),
                           "bracket": load_translator(f"transformers:{base_model}", markers="bracket",
                                                      beam_size=1)}, v, examples=0) for k, v in items.items()}

    out = tmp_path / "lst-model"
    with one_thread():
        summary = train_lst(LstTrainConfig(
            model=str(base_model), data=[str(tmp_path / "lst.jsonl")], output=str(out), max_steps=300,
            batch_size=32, lr=1e-3, warmup_steps=30, alpha=0.5, device="cpu", save_every=150, log_every=50,
            eval_data=str(names), eval_limit=50))
    assert summary.steps == 300 and summary.final_loss["slot"] < 2.5
    evals = [h["eval"]["en-es"] for h in summary.history if "eval" in h]
    assert len(evals) == 2 and evals[-1]["match"] > 0

    ct2 = convert(str(out), tmp_path / "lst-ct2", "float32")
    engines = {"transformers": load_translator(f"transformers:{out}", beam_size=1),
               "ctranslate2": load_translator(f"ctranslate2:{ct2}", beam_size=1)}
    after = {k: evaluate(engines, v, examples=0) for k, v in items.items()}
    for k in items:
        print(k, "before\n" + before[k].table(), "\nafter\n" + after[k].table())
        best_before = max(_match(before[k], "slot"), _match(before[k], "bracket"))
        assert _match(after[k], "transformers") >= best_before + 0.15
        # the converted checkpoint decodes as the original does (greedy, float32)
        assert abs(_match(after[k], "ctranslate2") - _match(after[k], "transformers")) <= 0.02
    # markers cost the LST model less translation quality than they cost the model before
    lst = [r for r in after["names"].engines if r.engine == "transformers"][0]
    plain = [r for r in before["names"].engines if r.engine == "slot"][0]
    assert lst.bleu_plain - lst.bleu_labeled < plain.bleu_plain - plain.bleu_labeled

    # serve: the translator service loads the converted checkpoint by spec and answers as the engine does
    served = load_translator(f"ctranslate2:{ct2}")  # the service's default options
    some = [it.labeled() for it in items["names"][:20]]
    expected = served.translate_labeled(some, "en", "es")
    assert any("__SLOT" in e.raw for e in expected)
    with running(translator_api.create_app(TranslatorSettings(engine=f"ctranslate2:{ct2}"))) as url:
        r = httpx.post(url + "/v1/translate/labeled", timeout=60, json={
            "items": [{"text": it.text, "spans": [{"start": sp.start, "end": sp.end, "label": sp.label}
                                                  for sp in it.spans]} for it in some], "src": "en", "tgt": "es"})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
    assert [g["raw"] for g in got] == [e.raw for e in expected]
    assert [[s["text"] for s in g["spans"]] for g in got] == [[s.text for s in e.spans] for e in expected]
