"""The transformers and CTranslate2 translators on tiny M2M100 models built at test time: a random one, and one
trained to copy sentences with slot markers (a stand-in for an LST checkpoint)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from tiny_seq2seq import toy_sentence, unmarked
from typer.testing import CliRunner

from crop.cli import app
from crop.project import Projector, ProjectorConfig
from crop.text import tokenize
from crop.translate import load_translator
from crop.translate.convert import convert
from crop.translate.ctranslate2 import CTranslate2Translator, load_vocabulary
from crop.translate.transformers import TransformersTranslator
from crop.types import LabeledItem, Span

pytestmark = pytest.mark.neural


def held_out(n: int, seed: int = 12345) -> list[str]:
    """Toy sentences with slot markers the copy model never saw (another seed)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = toy_sentence(rng)
        if "__SLOT" in s:
            out.append(s)
    return out


def labeled_item(marked: str) -> LabeledItem:
    """The sentence without markers and its spans (in slot order), from a slot-marked toy sentence."""
    words: list[str] = []
    spans: dict[str, tuple[int, int]] = {}
    for w in marked.split():
        if w.startswith("__SLOT"):
            start = spans[w][0] if w in spans else len(words)
            spans[w] = (start, len(words))
        else:
            words.append(w)
    text = " ".join(words)
    offsets = tokenize(text, "en")[1]
    return LabeledItem(text=text, spans=[
        Span(start=offsets[a][0], end=offsets[b - 1][1], label="PER", text=text[offsets[a][0]:offsets[b - 1][1]])
        for a, b in (spans[k] for k in sorted(spans))])


@pytest.fixture(scope="module")
def hf_copy(copy_m2m100: Path) -> TransformersTranslator:
    return TransformersTranslator(str(copy_m2m100), device="cpu", beam_size=1)


@pytest.fixture(scope="module")
def ct2_copy(copy_m2m100_ct2: Path) -> CTranslate2Translator:
    return CTranslate2Translator(str(copy_m2m100_ct2), device="cpu", beam_size=1)


# -- loading, languages, batching ---------------------------------------------------------------------------------


def test_random_model_loads_by_path_with_m2m100_codes(random_m2m100: Path):
    tr = load_translator(f"transformers:{random_m2m100}", device="cpu", beam_size=1, max_length=12)
    assert isinstance(tr, TransformersTranslator)
    assert tr.family.name == "m2m100" and tr.markers == "slot"
    assert {("es", "en"), ("en", "es"), ("gl", "en"), ("en", "ca")} <= set(tr.pairs())
    out = tr.translate(["Hola Madrid .", "", "La Unión Europea"], "es", "en")
    assert len(out) == 3 and out[1] == ""


def test_batched_translation_equals_one_by_one(random_m2m100: Path):
    """Padding and length-sorted batches must not change a greedy translation."""
    tr = TransformersTranslator(str(random_m2m100), device="cpu", beam_size=1, max_length=10, max_batch_tokens=60)
    texts = ["Hola", "El presidente de Francia visitó Madrid ayer por la tarde .", "Barcelona y Girona", "Sí"]
    assert tr.translate(texts, "es", "en") == [tr.translate([t], "es", "en")[0] for t in texts]


def test_unsupported_language_is_a_clear_error(random_m2m100: Path):
    from crop.translate.base import UnsupportedPair

    tr = TransformersTranslator(str(random_m2m100), device="cpu", beam_size=1, max_length=5)
    with pytest.raises(UnsupportedPair, match="__xx__"):
        tr.translate(["hola"], "xx", "en")


def test_half_precision_on_cpu_falls_back_to_float32(random_m2m100: Path, caplog: pytest.LogCaptureFixture):
    import torch

    with caplog.at_level(logging.WARNING):
        tr = TransformersTranslator(str(random_m2m100), device="cpu", dtype="fp16")
    assert "needs a GPU" in caplog.text and tr.model.dtype == torch.float32
    with pytest.raises(ValueError, match="CUDA is not available|unknown dtype"):
        TransformersTranslator(str(random_m2m100), device="cpu", dtype="fp8")


def test_bad_paths_are_clear_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot load a seq2seq translation model"):
        load_translator(f"transformers:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="crop convert"):
        load_translator(f"ctranslate2:{tmp_path}")
    with pytest.raises(ValueError, match="names no model"):
        load_translator("ctranslate2")


def test_options_come_from_the_environment(copy_m2m100_ct2: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CROP_TRANSLATOR_BEAM_SIZE", "3")
    monkeypatch.setenv("CROP_TRANSLATOR_N_BEST", "2")
    tr = load_translator(f"ctranslate2:{copy_m2m100_ct2}")
    assert tr.beam_size == 3 and tr.n_best == 2  # type: ignore[attr-defined]
    monkeypatch.setenv("CROP_TRANSLATOR_BEAM_SIZE", "many")
    with pytest.raises(ValueError, match="CROP_TRANSLATOR_BEAM_SIZE must be int"):
        load_translator(f"ctranslate2:{copy_m2m100_ct2}")


# -- slot tokens ----------------------------------------------------------------------------------------------------


def test_slot_tokens_added_with_a_warning_when_the_tokenizer_lacks_them(tmp_path: Path, shared_data: Path,
                                                                        caplog: pytest.LogCaptureFixture):
    from tiny_seq2seq import build_random_m2m100

    path = build_random_m2m100(tmp_path, shared_data, slots=False)
    auto = TransformersTranslator(str(path), device="cpu", beam_size=1, max_length=5)
    assert auto.markers == "bracket"  # an off-the-shelf model: type-agnostic brackets
    with caplog.at_level(logging.WARNING):
        forced = TransformersTranslator(str(path), device="cpu", beam_size=1, max_length=5, markers="slot")
    assert "only a model fine-tuned for them" in caplog.text
    assert forced.markers == "slot" and forced.has_slot_tokens()
    assert forced.model.get_input_embeddings().num_embeddings == len(forced.table)
    # the slot tokens are single pieces of the source now
    assert forced.codec.pieces("__SLOT0__ Hola __SLOT0__")[0] == "__SLOT0__"
    forced.translate_labeled([LabeledItem(text="Hola Madrid", spans=[Span(start=5, end=11, label="LOC")])],
                             "es", "en")
    # CTranslate2 cannot add tokens: a converted model without them is refused for slot markers
    ct2 = convert(str(path), tmp_path / "ct2")
    with pytest.raises(ValueError, match="no __SLOT"):
        CTranslate2Translator(str(ct2), markers="slot")


def test_slot_tokens_survive_conversion(copy_m2m100_ct2: Path, ct2_copy: CTranslate2Translator):
    vocab = load_vocabulary(copy_m2m100_ct2)
    assert {"__SLOT0__", "__SLOT7__", "__en__", "__es__"} <= set(vocab)
    assert ct2_copy.markers == "slot"
    assert json.loads((copy_m2m100_ct2 / "crop_convert.json").read_text())["quantization"] == "float32"


# -- the trained copy model: labeled translation keeps the markers -----------------------------------------------


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_labeled_translation_returns_the_markers(engine: str, hf_copy, ct2_copy):
    tr = hf_copy if engine == "hf" else ct2_copy
    sentences = held_out(40)
    items = [labeled_item(s) for s in sentences]
    results = tr.translate_labeled(items, "en", "es")
    exact = 0
    for item, res in zip(items, results, strict=True):
        assert "__SLOT" in res.raw and "__SLOT" not in res.text
        got = {s.ref: s.text for s in res.spans}
        exact += not res.lost and got == {i: s.text for i, s in enumerate(item.spans)}
    assert exact >= 0.8 * len(items), f"only {exact} of {len(items)} sentences kept every marked entity"


def test_bracket_markers_of_an_off_the_shelf_model(copy_m2m100: Path):
    """markers=bracket: entities travel as `[ ... ]` and are re-identified by content and order."""
    tr = TransformersTranslator(str(copy_m2m100), device="cpu", beam_size=1, markers="bracket")
    items = [labeled_item(s) for s in held_out(30, seed=31)]
    results = tr.translate_labeled(items, "en", "es")
    exact = 0
    for item, res in zip(items, results, strict=True):
        assert "[" in res.raw and "__SLOT" not in res.raw and "[" not in res.text
        exact += not res.lost and {s.ref: s.text for s in res.spans} == {i: s.text for i, s in enumerate(item.spans)}
    assert exact >= 0.7 * len(items), f"only {exact} of {len(items)} sentences kept every bracketed entity"


def test_greedy_outputs_of_transformers_and_ctranslate2_agree(hf_copy, ct2_copy, random_m2m100: Path,
                                                              tmp_path: Path):
    texts = [unmarked(s) for s in held_out(30, seed=7)] + held_out(10, seed=8)
    assert hf_copy.translate(texts, "es", "en") == ct2_copy.translate(texts, "es", "en")
    # and on random weights, where outputs are long and arbitrary
    hf = TransformersTranslator(str(random_m2m100), device="cpu", beam_size=1, max_length=16)
    ct2 = CTranslate2Translator(str(convert(str(random_m2m100), tmp_path / "r", "float32")), beam_size=1,
                                max_length=16)
    sample = ["Hola Madrid .", "El presidente de Francia visitó Barcelona ."]
    assert hf.translate(sample, "es", "en") == ct2.translate(sample, "es", "en")


def test_int8_model_translates_like_float32(copy_m2m100: Path, hf_copy, tmp_path: Path):
    int8 = CTranslate2Translator(str(convert(str(copy_m2m100), tmp_path / "int8", "int8")), beam_size=1)
    assert int8.compute_type.startswith("int8")
    texts = [unmarked(s) for s in held_out(30, seed=9)]
    same = sum(a == b for a, b in zip(int8.translate(texts, "es", "en"), hf_copy.translate(texts, "es", "en"),
                                      strict=True))
    assert same >= 0.8 * len(texts)


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_n_best_hypotheses_come_back_as_alternatives(engine: str, copy_m2m100: Path, copy_m2m100_ct2: Path):
    cls, path = (TransformersTranslator, copy_m2m100) if engine == "hf" else (CTranslate2Translator,
                                                                               copy_m2m100_ct2)
    tr = cls(str(path), device="cpu", beam_size=4, n_best=3)
    item = labeled_item(held_out(1, seed=3)[0])
    res = tr.translate_labeled([item], "en", "es")[0]
    assert len(res.alternatives) == 2
    raws = [res.raw, *(a.raw for a in res.alternatives)]
    assert len(set(raws)) == 3  # distinct beams
    assert all(alt.alternatives == [] for alt in res.alternatives)


def test_generation_marker_decoding_and_projection_end_to_end(ct2_copy: CTranslate2Translator):
    """English entities -> labeled translation by the model -> markers decoded -> placed in the raw sentence."""
    projector = Projector(ProjectorConfig(langid=False))
    placed = total = 0
    for marked in held_out(20, seed=21):
        item = labeled_item(marked)
        back = ct2_copy.translate_labeled([item], "en", "es")[0]
        tokens = tokenize(item.text, "es")[0]  # the copy model's "Spanish" is the sentence itself
        result = projector.project(tokens, "es", item.spans, back=back, source_text=item.text, text=item.text)
        total += len(item.spans)
        placed += sum(e.text == item.spans[e.ref].text for e in result.entities if e.ref is not None)
        assert all(e.method in ("exact", "normalized", "source_copy", "crop_rule", "context", "fuzzy")
                   for e in result.entities)
    assert placed >= 0.85 * total


def test_pipeline_runs_with_ctranslate2_and_transformers_tagger(copy_m2m100_ct2: Path, tiny_ner_model: Path,
                                                                tmp_path: Path):
    rng = random.Random(5)
    lines = [unmarked(toy_sentence(rng)) for _ in range(30)] + ["Pedro Sánchez visited the European Commission ."]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["project", "--input", str(src), "--src-lang", "es", "--output", str(out),
                                   "--no-langid", "--keep-all-o", "--translator", f"ctranslate2:{copy_m2m100_ct2}",
                                   "--tagger", f"transformers:{tiny_ner_model}", "--stats", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(lines)
    assert all(r["status"] in ("kept", "discarded", "failed") for r in rows)
    assert not [r for r in rows if r["status"] == "failed"], [r["reason"] for r in rows if r["status"] == "failed"]
    assert any(r["entities"] for r in rows if r["status"] == "kept")
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["sentences"] == len(lines) and stats["seconds"]["back"] > 0
    assert stats["other_hypothesis"] == sum(r["hypothesis"] > 0 for r in rows)


# -- crop convert -------------------------------------------------------------------------------------------------


def test_convert_command(copy_m2m100: Path, tmp_path: Path):
    dst = tmp_path / "ct2-int8"
    res = CliRunner().invoke(app, ["convert", str(copy_m2m100), str(dst), "--quantization", "int8"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["output"] == str(dst)
    assert (dst / "model.bin").exists() and (dst / "tokenizer_config.json").exists()
    again = CliRunner().invoke(app, ["convert", str(copy_m2m100), str(dst)])
    assert again.exit_code == 2 and "--force" in again.output
    bad = CliRunner().invoke(app, ["convert", str(copy_m2m100), str(tmp_path / "x"), "--quantization", "int3"])
    assert bad.exit_code == 2 and "unknown quantization" in bad.output


# -- GPU (only where one is present) ------------------------------------------------------------------------------


def test_gpu_transformers_half_precision_and_ctranslate2_float16(copy_m2m100: Path, tmp_path: Path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (GPU test)")
    texts = [unmarked(s) for s in held_out(20, seed=4)]
    cpu = TransformersTranslator(str(copy_m2m100), device="cpu", beam_size=1).translate(texts, "es", "en")
    gpu = TransformersTranslator(str(copy_m2m100), device="cuda", dtype="fp16", beam_size=1)
    assert sum(a == b for a, b in zip(gpu.translate(texts, "es", "en"), cpu, strict=True)) >= 0.8 * len(texts)
    ct2 = CTranslate2Translator(str(convert(str(copy_m2m100), tmp_path / "f16", "float16")), device="cuda")
    assert sum(a == b for a, b in zip(ct2.translate(texts, "es", "en"), cpu, strict=True)) >= 0.8 * len(texts)


# -- the other families: NLLB and Marian ------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["nllb", "marian"])
def other_family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 shared_data: Path) -> tuple[str, Path]:
    from tiny_seq2seq import build_random_marian, build_random_nllb

    build = build_random_nllb if request.param == "nllb" else build_random_marian
    return request.param, build(tmp_path_factory.mktemp(request.param), shared_data)


def test_nllb_and_marian_codes_translation_and_conversion(other_family: tuple[str, Path], tmp_path: Path):
    family, path = other_family
    hf = TransformersTranslator(str(path), device="cpu", beam_size=1, max_length=8)
    assert hf.family.name == family and hf.markers == "bracket"  # off-the-shelf vocabularies: brackets
    if family == "nllb":
        assert {("es", "en"), ("en", "eu"), ("sw", "en"), ("en", "zh")} <= set(hf.pairs())
        pair = ("es", "en")
        # the source starts with its FLORES-200 code, the decoder with the target's
        assert hf.family.source_prefix("es", "en") == ["spa_Latn"] and hf.family.target_prefix("en") == ["eng_Latn"]
    else:
        assert hf.pairs() == [("en", "es")]  # from the folder name, as for Helsinki-NLP/opus-mt-en-es
        pair = ("en", "es")
        from crop.translate.base import UnsupportedPair

        with pytest.raises(UnsupportedPair):
            hf.translate(["hola"], "es", "en")
    texts = ["Hola Madrid .", "El presidente de Francia visitó Barcelona ayer ."]
    expected = hf.translate(texts, *pair)
    assert all(expected)
    ct2 = CTranslate2Translator(str(convert(str(path), tmp_path / "ct2", "float32")), beam_size=1, max_length=8)
    assert ct2.family.name == family and ct2.pairs() == hf.pairs()
    assert ct2.translate(texts, *pair) == expected
    res = ct2.translate_labeled([LabeledItem(text="Hola Madrid .", spans=[Span(start=5, end=11, label="LOC")])],
                                *pair)
    assert res[0].raw and res[0].text  # bracket markers encoded, decoded (kept or reported lost)
    assert len(res[0].spans) + len(res[0].lost) == 1
