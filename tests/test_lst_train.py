"""LST fine-tuning: the objective schedule, the learning-rate schedule, streamed batches, slot tokens in the
tokenizer and model, checkpoints and resuming, the CLI, and a GPU run where there is one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_lst import entity_records, synthetic_corpus, write_jsonl
from tiny_models import one_thread
from typer.testing import CliRunner

from crop.cli import app
from crop.io import InputError
from crop.train.lst.data import BatchStream, Example, example_stream, read_examples, uses_slots
from crop.train.lst.finetune import LstTrainConfig, checkpoints, lr_factor, train_lst

pytestmark = pytest.mark.neural


@pytest.fixture(scope="module")
def lst_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic pairs with their names wrapped in slots (a third of the records have none)."""
    records = entity_records(synthetic_corpus(600, seed=3))
    return write_jsonl(records, tmp_path_factory.mktemp("lst-data") / "lst.jsonl")


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_slot_steps_are_interleaved_at_the_share_alpha(alpha: float):
    for n in (1, 7, 40, 1000):
        slot_steps = sum(uses_slots(s, alpha) for s in range(n))
        assert abs(slot_steps - alpha * n) < 1  # at every prefix, not only on average
    if alpha == 0.5:
        assert [uses_slots(s, alpha) for s in range(4)] == [False, True, False, True]


def test_learning_rate_warms_up_then_decays():
    assert lr_factor(1, 10, 100, "inverse_sqrt") == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, "inverse_sqrt") == pytest.approx(1.0)
    assert lr_factor(40, 10, 100, "inverse_sqrt") == pytest.approx(0.5)  # sqrt(10 / 40)
    assert lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "linear") == 0.0
    assert lr_factor(77, 10, 100, "constant") == 1.0
    assert lr_factor(5, 0, 100, "inverse_sqrt") == pytest.approx(5 ** -0.5)


def test_views_and_directions(lst_data: Path):
    plain = list(read_examples([lst_data], "plain", "forward"))
    slot = list(read_examples([lst_data], "slot", "both"))
    assert len(plain) == 600
    assert all("__SLOT" not in e.source + e.target for e in plain)
    with_names = sum(1 for line in lst_data.read_text().splitlines() if json.loads(line)["phrases"])
    assert len(slot) == 2 * with_names and all("__SLOT0__" in e.source and "__SLOT0__" in e.target for e in slot)
    assert {(e.src_lang, e.tgt_lang) for e in slot} == {("en", "es"), ("es", "en")}


def test_stream_is_endless_shuffled_and_seeded(lst_data: Path):
    def take(seed: int, n: int) -> list[Example]:
        stream = example_stream([lst_data], "plain", "forward", seed, buffer=100)
        return [next(stream) for _ in range(n)]

    first = take(0, 1500)  # two and a half epochs
    assert first == take(0, 1500)
    assert first[:600] != take(1, 600)
    assert sorted(e.source for e in first[:600]) == sorted(e.source for e in read_examples([lst_data], "plain",
                                                                                          "forward"))
    assert first[:600] != list(read_examples([lst_data], "plain", "forward"))  # shuffled


def test_batches_keep_to_the_budget_and_skip_long_pairs(lst_data: Path):
    def encode(ex: Example) -> tuple[list[int], list[int]]:
        return [1] * len(ex.source.split()), [1] * len(ex.target.split())

    stream = BatchStream(example_stream([lst_data], "plain", "forward", 0), encode, "plain", batch_size=16,
                         max_tokens=60, max_length=9)
    for _ in range(50):
        batch = next(stream)
        width = max(max(map(len, batch.sources)), max(map(len, batch.targets)))
        assert 1 <= len(batch.sources) <= 16 and width * len(batch.sources) <= 60 and width <= 9
    assert stream.consumed == 50 and stream.too_long > 0
    again = BatchStream(example_stream([lst_data], "plain", "forward", 0), encode, "plain", 16, 60, 9)
    again.skip(49)
    assert next(again) == batch


def test_bad_data_is_reported(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"src": "a", "tgt": "b"}\n')
    with pytest.raises(InputError, match="src_lang"):
        list(read_examples([bad], "plain", "forward"))
    empty = write_jsonl([{"src_lang": "en", "tgt_lang": "es", "src": "a b", "tgt": "c d", "src_marked": "a b",
                          "tgt_marked": "c d", "phrases": []}], tmp_path / "noslots.jsonl")
    with pytest.raises(InputError, match="no slot training pairs"):
        next(example_stream([empty], "slot", "both", 0))
    for kwargs, message in [({"alpha": 1.5}, "alpha"), ({"data": []}, "no training data"),
                            ({"data": [str(tmp_path / "missing.jsonl")]}, "not found"),
                            ({"schedule": "cosine"}, "schedule"), ({"batch_size": 0}, "batch_size")]:
        cfg = LstTrainConfig(model="x", output=str(tmp_path / "out"), **{"data": [str(empty)], **kwargs})
        with pytest.raises(ValueError, match=message):
            cfg.check()


def test_slot_tokens_get_ids_after_the_models_own_and_survive_saving(random_m2m100_noslots: Path, tmp_path: Path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from crop.translate.transformers import add_slot_tokens, vocabulary_table

    base = random_m2m100_noslots
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSeq2SeqLM.from_pretrained(base)
    size = model.get_input_embeddings().num_embeddings
    before = vocabulary_table(tok, size)
    table = add_slot_tokens(tok, model, 4)
    assert table[:size] == before  # language codes and every other id unchanged
    assert table[size:] == [f"__SLOT{i}__" for i in range(4)]
    assert model.get_input_embeddings().num_embeddings == size + 4
    assert tok.tokenize("hola __SLOT1__ Madrid __SLOT1__")[-3:] == ["__SLOT1__", "▁Madrid", "__SLOT1__"]
    tok.save_pretrained(tmp_path / "t")
    again = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert vocabulary_table(again, size + 4) == table
    assert again.get_lang_id("es") == tok.get_lang_id("es")
    assert add_slot_tokens(again, model, 4) == table  # already there: nothing added


def test_slot_tokens_on_a_fast_nllb_tokenizer(shared_data: Path, tmp_path: Path):
    from tiny_seq2seq import build_random_nllb
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from crop.translate.transformers import add_slot_tokens

    path = build_random_nllb(tmp_path, shared_data)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    codes = tok.convert_tokens_to_ids(["spa_Latn", "eng_Latn"])
    table = add_slot_tokens(tok, model, 3)
    ids = tok.convert_tokens_to_ids(["__SLOT0__", "__SLOT1__", "__SLOT2__"])
    assert [table[i] for i in ids] == ["__SLOT0__", "__SLOT1__", "__SLOT2__"]
    assert tok.convert_tokens_to_ids(["spa_Latn", "eng_Latn"]) == codes
    assert model.get_input_embeddings().num_embeddings == len(table) > max(ids)


def test_slot_ids_beyond_the_models_slot_tokens_are_an_error(random_m2m100_noslots: Path, lst_data: Path,
                                                              tmp_path: Path):
    with pytest.raises(ValueError, match="__SLOT1__ but the model has 1 slot tokens"):
        train_lst(_cfg(random_m2m100_noslots, lst_data, tmp_path / "out", slots=1, alpha=1.0, max_steps=2))


def test_nllb_checkpoint_fine_tunes_and_serves_slots(shared_data: Path, lst_data: Path, tmp_path: Path):
    from tiny_seq2seq import build_random_nllb

    from crop.translate import load_translator

    base = build_random_nllb(tmp_path, shared_data)
    with one_thread():
        summary = train_lst(_cfg(base, lst_data, tmp_path / "nllb-lst", max_steps=4, save_every=4))
    assert summary.steps == 4
    engine = load_translator(f"transformers:{tmp_path / 'nllb-lst'}", beam_size=1, max_length=8)
    assert engine.markers == "slot" and engine.family.name == "nllb"  # slot tokens read back from the checkpoint
    assert engine.source_pieces("__SLOT0__ Madrid __SLOT0__", "en", "es")[:2] == ["eng_Latn", "__SLOT0__"]
    assert len(engine.translate(["hola"], "es", "en")) == 1


def _cfg(model: Path, data: Path, output: Path, **kw) -> LstTrainConfig:
    base = dict(model=str(model), data=[str(data)], output=str(output), max_steps=12, batch_size=8, lr=1e-3,
                warmup_steps=3, label_smoothing=0.1, device="cpu", save_every=4, log_every=4, slots=8,
                keep_checkpoints=10)
    return LstTrainConfig(**{**base, **kw})


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_resumed_run_equals_an_uninterrupted_one(random_m2m100_noslots: Path, lst_data: Path, tmp_path: Path):
    import torch

    base = random_m2m100_noslots
    with one_thread():
        whole = train_lst(_cfg(base, lst_data, tmp_path / "whole"))
        first = train_lst(_cfg(base, lst_data, tmp_path / "parts", max_steps=8))
        second = train_lst(_cfg(base, lst_data, tmp_path / "parts"))
    assert (whole.resumed_from, first.resumed_from, second.resumed_from) == (0, 0, 8)
    assert [p.name for p in checkpoints(tmp_path / "parts")] == [f"checkpoint-{s}" for s in (4, 8, 12)]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "parts")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert [h["step"] for h in second.history] == [4, 8, 12]
    assert whole.final_loss.keys() == {"plain", "slot"} and whole.tokens_per_second > 0
    meta = json.loads((tmp_path / "whole" / "crop_lst.json").read_text())
    assert meta["steps"] == 12 and meta["base_model"] == str(base)
    with one_thread():
        fresh = train_lst(_cfg(base, lst_data, tmp_path / "parts", resume=False, max_steps=4))
    assert fresh.resumed_from == 0


def test_cli_trains_and_reports(random_m2m100_noslots: Path, lst_data: Path, tmp_path: Path):
    base = random_m2m100_noslots
    out = tmp_path / "cli-model"
    with one_thread():
        res = CliRunner().invoke(app, ["lst", "train", "--model", str(base), "--data", str(lst_data), "--output",
                                       str(out), "--steps", "6", "--batch-size", "8", "--warmup", "2",
                                       "--log-every", "3", "--save-every", "3", "--device", "cpu", "--slots", "8",
                                       "--alpha", "0.5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["steps"] == 6 and summary["device"] == "cpu" and set(summary["final_loss"]) == {"plain", "slot"}
    assert (out / "model.safetensors").exists() and (out / "checkpoint-6" / "optimizer.pt").exists()
    bad = CliRunner().invoke(app, ["lst", "train", "--model", str(base), "--data", str(tmp_path / "nope.jsonl"),
                                   "--output", str(out)])
    assert bad.exit_code == 2 and "not found" in bad.output
    bad = CliRunner().invoke(app, ["lst", "train", "--model", str(base), "--data", str(lst_data), "--output",
                                   str(tmp_path / "o2"), "--alpha", "2"])
    assert bad.exit_code == 2 and "alpha" in bad.output


def test_gpu_fine_tuning_in_bf16(random_m2m100_noslots: Path, lst_data: Path, tmp_path: Path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (GPU test)")
    base = random_m2m100_noslots
    summary = train_lst(_cfg(base, lst_data, tmp_path / "gpu", device="cuda", precision="auto", max_steps=20))
    assert summary.device.startswith("cuda") and summary.peak_memory_mb and summary.peak_memory_mb > 0
    assert all(v == v for v in summary.final_loss.values())  # not NaN
