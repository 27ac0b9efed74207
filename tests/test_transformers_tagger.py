"""TransformersTagger with a tiny XLM-R token classifier built and trained at test time (no hub): label maps,
first-sub-token labels, windows of long sentences, batching, offsets, devices and load errors."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import check_offsets
from tiny_models import TINY_NER_LABELS

from crop.labels import CONLL, WIKIANN
from crop.pipeline import CropPipeline
from crop.tag import Tagger, load_tagger
from crop.tag.transformers import (
    AnyLanguage,
    TransformersTagger,
    best_window,
    map_labels,
    model_window,
    parse_label,
    plan_windows,
)
from crop.text import tokenize
from crop.types import Span

OBAMA = "Spanish Prime Minister Pedro Sánchez met President Emmanuel Macron in Paris on Tuesday."
EU = "The European Commission proposed a new framework for Google and Microsoft in Brussels."
ES = "El presidente Pedro Sánchez visitó l'OTAN en Bruselas, según «El País»."
SHORT = "Paris."
# about 180 sub-tokens: three windows of the tiny model (62 sub-tokens each)
LONG = " ".join([OBAMA, EU, "Angela Merkel and the United Nations met in Berlin.", OBAMA, EU])


@pytest.fixture(scope="module")
def model_dir(tiny_ner_model: Path) -> Path:
    return tiny_ner_model


@pytest.fixture(scope="module")
def tiny(model_dir: Path) -> TransformersTagger:
    tagger = load_tagger(f"transformers:{model_dir}", device="cpu")
    assert isinstance(tagger, TransformersTagger)
    return tagger


def copy_with_config(model_dir: Path, dest: Path, **changes: object) -> Path:
    """A copy of the model whose config.json has `changes` (None removes a key)."""
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def key(spans: list[Span]) -> list[tuple[int, int, int | None, int | None, str]]:
    return [(s.start, s.end, s.token_start, s.token_end, s.label) for s in spans]


# --- label maps -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "expected"), [
    ("O", ("O", None)),
    ("o", ("O", None)),
    ("B-PER", ("B", "PER")),
    ("I-PER", ("I", "PER")),
    ("i-org", ("I", "ORG")),
    ("B_LOC", ("B", "LOC")),
    ("PER", ("I", "PER")),  # bare (IO) labels continue a same-type neighbour
    ("MISC", ("I", "MISC")),
    ("B-PERSON", ("B", "PER")),  # OntoNotes names through the scheme's map
    ("I-GPE", ("I", "LOC")),
    ("B-NORP", ("B", "MISC")),
    ("B-DATE", ("O", None)),  # mapped to nothing: dropped
    ("CARDINAL", ("O", None)),
    ("S-ORG", ("B", "ORG")),  # BIOES
    ("E-ORG", ("I", "ORG")),
    ("U-LOC", ("B", "LOC")),  # BILOU
    ("L-LOC", ("I", "LOC")),
    ("B-WEAPON", ("O", None)),  # unknown types are dropped
])
def test_parse_label(label: str, expected: tuple[str, str | None]) -> None:
    assert parse_label(label, CONLL) == expected


def test_parse_label_follows_the_scheme() -> None:
    assert parse_label("B-MISC", WIKIANN) == ("O", None)
    assert parse_label("B-NORP", WIKIANN) == ("O", None)
    assert parse_label("B-PER", WIKIANN) == ("B", "PER")


def test_map_labels_styles() -> None:
    assert map_labels(dict(enumerate(TINY_NER_LABELS)), CONLL) == list(TINY_NER_LABELS)
    iob1 = {0: "O", 1: "I-PER", 2: "B-PER", 3: "I-LOC"}
    assert map_labels(iob1, CONLL) == ["O", "I-PER", "B-PER", "I-LOC"]
    bare = {0: "O", 1: "PER", 2: "ORG", 3: "LOC", 4: "MISC"}
    assert map_labels(bare, CONLL) == ["O", "I-PER", "I-ORG", "I-LOC", "I-MISC"]
    assert map_labels(bare, WIKIANN) == ["O", "I-PER", "I-ORG", "I-LOC", "O"]
    onto = {"0": "O", "1": "B-PERSON", "2": "I-PERSON", "3": "B-GPE", "4": "B-DATE", "5": "I-DATE"}
    assert map_labels(onto, CONLL) == ["O", "B-PER", "I-PER", "B-LOC", "O", "O"]


def test_generic_labels_need_a_label_map() -> None:
    generic = {i: f"LABEL_{i}" for i in range(5)}
    with pytest.raises(ValueError, match=r"'my-model' has no entity labels: its labels are generic.*label_map"):
        map_labels(generic, CONLL, model="my-model")
    label_map = {"LABEL_1": "B-PER", "LABEL_2": "I-PER", 3: "B-ORG", "4": "LOC"}
    assert map_labels(generic, CONLL, label_map) == ["O", "B-PER", "I-PER", "B-ORG", "I-LOC"]


def test_labels_outside_the_scheme_are_an_error_when_nothing_is_left() -> None:
    with pytest.raises(ValueError, match=r"none of its labels \(O, B-DATE, I-DATE\) maps to the 'conll' scheme"):
        map_labels({0: "O", 1: "B-DATE", 2: "I-DATE"}, CONLL)


# --- windows --------------------------------------------------------------------------------------------------


def test_plan_windows() -> None:
    assert plan_windows([], 10, 2) == []
    assert plan_windows([1, 2, 3], 6, 2) == [(0, 3)]  # fits exactly: one window
    assert plan_windows([1, 2, 3, 1], 6, 2) == [(0, 3), (2, 4)]
    # every window within the limit, each overlapping the next, together covering every word
    counts = [1, 3, 2, 1, 1, 4, 2, 1, 1, 1, 2, 3, 1, 1, 2, 1]
    plan = plan_windows(counts, 8, 3)
    assert plan[0][0] == 0 and plan[-1][1] == len(counts)
    for (s1, e1), (s2, e2) in zip(plan, plan[1:], strict=False):
        assert s1 < s2 < e1 <= e2
        assert sum(counts[s2:e1]) <= 3
    assert all(sum(counts[s:e]) <= 8 for s, e in plan)
    # a word longer than the window gets one of its own; no overlap (stride 0) still makes progress
    assert plan_windows([1, 9, 1], 4, 1) == [(0, 1), (1, 2), (2, 3)]
    assert plan_windows([1, 1, 3, 3], 5, 2) == [(0, 3), (2, 3), (3, 4)]  # one shared word even over the stride
    assert plan_windows([2, 2, 2, 2], 4, 0) == [(0, 2), (2, 4)]


def test_best_window_prefers_the_middle() -> None:
    # words 0..9, windows overlapping on 3..5 and 6..7
    windows = [(0, 6), (3, 8), (6, 10)]
    best = best_window(windows, 10)
    assert best[:3] == [0, 0, 0]  # only in the first window
    assert best[3] == 0  # 3 from the sentence start (no edge) and 2 from the right edge vs. 0 from the left
    assert best[4] == 0  # 1 from window 0's right edge, 1 from window 1's left: a tie, the first wins
    assert best[5] == 1  # 0 from window 0's right edge vs. 2 from window 1's left edge
    assert best[6] == 1  # 1 from window 1's right edge vs. 0 from window 2's left edge
    assert best[7] == 2  # 0 from window 1's right edge vs. 1 from window 2's left edge (its right: the end)
    assert best[8:] == [2, 2]
    assert best_window([(0, 4)], 4) == [0, 0, 0, 0]


# --- the tiny model -------------------------------------------------------------------------------------------


def test_protocol_and_load_by_path(tiny: TransformersTagger, model_dir: Path) -> None:
    assert isinstance(tiny, Tagger)
    assert tiny.name == "transformers"
    assert tiny.model_name == str(model_dir)
    assert tiny.device.type == "cpu" and tiny.dtype == torch.float32
    assert tiny.tags == list(TINY_NER_LABELS)
    assert tiny.tokenizer.is_fast


def test_window_from_positions(tiny: TransformersTagger) -> None:
    # 66 positions, less XLM-R's offset (pad_token_id + 1 = 2), less <s> and </s>
    assert tiny.window == 66 - 2 - 2 == model_window(tiny.model, tiny.tokenizer)
    assert tiny.stride == tiny.window // 4


def test_languages_any(tiny: TransformersTagger) -> None:
    langs = tiny.languages()
    assert isinstance(langs, AnyLanguage) and list(langs) == ["*"]
    assert "en" in langs and "ca" in langs

    class Stub:
        name = "stub"

        def pairs(self) -> list[tuple[str, str]]:
            return [("en", "es"), ("es", "en")]

    CropPipeline(Stub(), tiny, pivot="en").check("es")  # type: ignore[arg-type]


def test_languages_from_config(model_dir: Path, tmp_path: Path) -> None:
    path = copy_with_config(model_dir, tmp_path / "en-only", languages=["en"])
    tagger = TransformersTagger(str(path), device="cpu")
    assert tagger.languages() == ["en"]
    with pytest.raises(ValueError, match="tags en, not 'es'"):
        tagger.tag([ES], "es")


def test_finds_entities_in_a_training_like_sentence(tiny: TransformersTagger) -> None:
    obama, eu = tiny.tag([OBAMA, EU], "en")
    found = {(s.text, s.label) for s in obama + eu}
    assert ("Pedro Sánchez", "PER") in found
    assert ("European Commission", "ORG") in found  # "The" left out, as in CoNLL
    assert not {s.text for s in obama + eu} & {"met", "in", "proposed", "a", "new", "framework", "and"}
    check_offsets(OBAMA, obama)
    check_offsets(EU, eu)


def test_offsets_follow_crop_tokens(tiny: TransformersTagger) -> None:
    (spans,) = tiny.tag([ES], "es")
    assert spans
    check_offsets(ES, spans, "es")
    tokens = tokenize(ES, "es")[0]
    for s in spans:
        assert " ".join(tokens[s.token_start:s.token_end]) == " ".join(tokenize(s.text, "es")[0])
    # char-level languages: one word per character
    text = "习近平在北京会见了默克尔。"
    (zh,) = tiny.tag([text], "zh")
    check_offsets(text, zh, "zh")


def test_word_labels_are_the_first_sub_tokens(tiny: TransformersTagger) -> None:
    words = tokenize(OBAMA, "en")[0]
    enc = tiny.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        probs = tiny.model(**enc).logits[0].softmax(-1)
    first: dict[int, int] = {}
    for t, w in enumerate(enc.word_ids(0)):
        if w is not None:
            first.setdefault(w, t)
    assert len(first) == len(words) and len(enc.word_ids(0)) - 2 > len(words)  # some words have several pieces
    ((tags, scores),) = tiny.tag_words([words])
    for w in range(len(words)):
        label = TINY_NER_LABELS[int(probs[first[w]].argmax())]
        assert tags[w][2:] == label[2:]  # the type (a stray I- becomes B-)
        assert scores[w] == pytest.approx(float(probs[first[w]].max()), abs=1e-5)
    # entity score: the mean of its words' scores
    (spans,) = tiny.tag([OBAMA], "en")
    for s in spans:
        assert s.token_start is not None and s.token_end is not None
        mean = sum(scores[s.token_start:s.token_end]) / (s.token_end - s.token_start)
        assert s.score == pytest.approx(mean)


def test_empty_sentences(tiny: TransformersTagger) -> None:
    assert tiny.tag([], "en") == []
    assert tiny.tag(["", "   ", OBAMA, ""], "en")[:2] == [[], []]
    assert tiny.tag(["", "  "], "en") == [[], []]


def test_batches_keep_input_order(model_dir: Path, tiny: TransformersTagger) -> None:
    sentences = [SHORT, LONG, "", EU, ES, OBAMA, "Madrid", LONG[: len(LONG) // 2]]
    small_batches = TransformersTagger(str(model_dir), device="cpu", batch_size=2)
    together = small_batches.tag(sentences, "en")
    alone = [tiny.tag([s], "en")[0] for s in sentences]
    assert [key(spans) for spans in together] == [key(spans) for spans in alone]
    for a, b in zip(together, alone, strict=True):
        assert [s.score for s in a] == pytest.approx([s.score for s in b], abs=1e-4)
    assert [key(spans) for spans in tiny.tag(sentences, "en")] == [key(spans) for spans in together]


def test_long_sentence_in_windows(tiny: TransformersTagger) -> None:
    words = tokenize(LONG, "en")[0]
    counts = tiny._subtoken_counts([words])[0]
    plan = plan_windows(counts, tiny.window, tiny.stride)
    assert sum(counts) > 2 * tiny.window and len(plan) >= 3
    ((tags, scores),) = tiny.tag_words([words])
    assert len(tags) == len(scores) == len(words)
    assert all(score > 0 for score in scores), "a word was left untagged"
    # each word as tagged alone in the window where it is farthest from an edge
    for w, k in enumerate(best_window(plan, len(words))):
        s, e = plan[k]
        ((ids, probs),) = tiny._predict([words[s:e]])
        assert tags[w][2:] == tiny.tags[ids[w - s]][2:]
        assert scores[w] == pytest.approx(probs[w - s], abs=1e-5)
    (spans,) = tiny.tag([LONG], "en")
    check_offsets(LONG, spans)
    assert any(s.token_start is not None and s.token_start > len(words) // 2 for s in spans)


def test_split_and_whole_agree_when_the_sentence_fits(model_dir: Path, tiny: TransformersTagger) -> None:
    words = tokenize(EU, "en")[0]
    n = sum(tiny._subtoken_counts([words])[0])
    assert n < tiny.window
    exact = TransformersTagger(str(model_dir), device="cpu", max_length=n, stride=2)
    assert exact.window == n
    assert exact.tag_words([words]) == tiny.tag_words([words])
    assert exact.tag([EU], "en") == tiny.tag([EU], "en")
    # one sub-token less: split, and still every word tagged, spans valid
    split = TransformersTagger(str(model_dir), device="cpu", max_length=n - 1, stride=4)
    assert len(plan_windows(split._subtoken_counts([words])[0], split.window, split.stride)) == 2
    ((tags, scores),) = split.tag_words([words])
    assert len(tags) == len(words) and all(score > 0 for score in scores)
    check_offsets(EU, split.tag([EU], "en")[0])


def test_tiny_windows_cover_every_word(model_dir: Path) -> None:
    tagger = TransformersTagger(str(model_dir), device="cpu", max_length=6, stride=2, batch_size=5)
    words = tokenize(LONG, "en")[0]
    ((tags, scores),) = tagger.tag_words([words])
    assert len(tags) == len(words) and all(score > 0 for score in scores)
    assert all(t == "O" or t[:2] in ("B-", "I-") for t in tags)
    for prev, tag in zip(["O", *tags], tags, strict=False):
        if tag.startswith("I-"):
            assert prev[2:] == tag[2:], "invalid BIO"
    check_offsets(LONG, tagger.tag([LONG], "en")[0])


def test_merge_takes_the_farthest_window(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in model that labels every word I-PER, with a probability that says which window tagged it."""
    tagger = TransformersTagger(str(model_dir), device="cpu", max_length=8, stride=3, batch_size=3)
    # distinct words, so that a window's words say where it is
    sentences = [[f"a{i}" for i in range(40)], ["b0", "b1"], [f"c{i}" for i in range(13)], []]
    ids: dict[tuple[str, ...], float] = {}

    def fake_predict(windows):
        out = []
        for words in windows:
            ids[tuple(words)] = len(ids) + 1.0
            out.append(([2] * len(words), [ids[tuple(words)]] * len(words)))  # I-PER: made valid BIO
        return out

    monkeypatch.setattr(tagger, "_predict", fake_predict)
    results = tagger.tag_words(sentences)
    assert len(ids) > 6
    for words, (tags, scores) in zip(sentences, results, strict=True):
        plan = plan_windows(tagger._subtoken_counts([words])[0], tagger.window, tagger.stride)
        assert len(plan) > 1 or len(words) <= 2
        expected = [ids[tuple(words[plan[k][0]:plan[k][1]])] for k in best_window(plan, len(words))]
        assert scores == expected
        assert tags == (["B-PER"] + ["I-PER"] * (len(words) - 1) if words else [])


def test_label_map_for_generic_labels(model_dir: Path, tiny: TransformersTagger, tmp_path: Path) -> None:
    generic = {str(i): f"LABEL_{i}" for i in range(len(TINY_NER_LABELS))}
    path = copy_with_config(model_dir, tmp_path / "generic", id2label=generic,
                            label2id={v: int(k) for k, v in generic.items()})
    with pytest.raises(ValueError, match="has no entity labels: its labels are generic"):
        load_tagger(f"transformers:{path}", device="cpu")
    mapped = load_tagger(f"transformers:{path}", device="cpu",
                         label_map={f"LABEL_{i}": label for i, label in enumerate(TINY_NER_LABELS)})
    assert mapped.tag([OBAMA, EU], "en") == tiny.tag([OBAMA, EU], "en")


def test_iob1_and_bare_label_models(model_dir: Path, tiny: TransformersTagger, tmp_path: Path) -> None:
    # the same weights with every B- read as I-: IOB1 models begin entities with I-; bare labels are IO
    iob1 = {str(i): label.replace("B-", "I-") for i, label in enumerate(TINY_NER_LABELS)}
    bare = {str(i): label[2:] or "O" for i, label in enumerate(TINY_NER_LABELS)}
    expected = _merge_adjacent(tiny.tag_words([tokenize(LONG, "en")[0]])[0][0])
    for name, id2label in (("iob1", iob1), ("bare", bare)):
        path = copy_with_config(model_dir, tmp_path / name, id2label=id2label)
        tagger = TransformersTagger(str(path), device="cpu")
        ((tags, _),) = tagger.tag_words([tokenize(LONG, "en")[0]])
        assert tags == expected, name
        check_offsets(LONG, tagger.tag([LONG], "en")[0])


def _merge_adjacent(tags: list[str]) -> list[str]:
    """BIO tags as an IO model would give them: adjacent entities of one type become one."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-") and i > 0 and tags[i - 1][2:] == tag[2:]:
            tag = "I-" + tag[2:]
        out.append(tag)
    return out


def test_wikiann_scheme_drops_misc(model_dir: Path, tiny: TransformersTagger) -> None:
    wikiann = load_tagger(f"transformers:{model_dir}", "wikiann", device="cpu")
    sentences = [OBAMA, EU, LONG]
    for conll, wiki in zip(tiny.tag(sentences, "en"), wikiann.tag(sentences, "en"), strict=True):
        assert [s for s in conll if s.label != "MISC"] == wiki


# --- options and errors ---------------------------------------------------------------------------------------


def test_options_from_env(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROP_TAGGER_BATCH_SIZE", "3")
    monkeypatch.setenv("CROP_TAGGER_DEVICE", "cpu")
    tagger = load_tagger(f"transformers:{model_dir}")
    assert isinstance(tagger, TransformersTagger)
    assert tagger.batch_size == 3 and tagger.device.type == "cpu"
    assert load_tagger(f"transformers:{model_dir}", batch_size=7).batch_size == 7  # type: ignore[attr-defined]
    monkeypatch.setenv("CROP_TAGGER_BATCH_SIZE", "many")
    with pytest.raises(ValueError, match="CROP_TAGGER_BATCH_SIZE must be int"):
        load_tagger(f"transformers:{model_dir}")


def test_half_precision_falls_back_to_float32_on_cpu(model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crop.tag.transformers"):
        tagger = TransformersTagger(str(model_dir), device="cpu", dtype="fp16")
    assert tagger.dtype == torch.float32
    assert next(tagger.model.parameters()).dtype == torch.float32
    assert "half precision needs a GPU" in caplog.text


def test_device_auto(model_dir: Path) -> None:
    tagger = TransformersTagger(str(model_dir))
    assert tagger.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert tagger.dtype == (torch.float16 if torch.cuda.is_available() else torch.float32)


@pytest.mark.parametrize(("options", "message"), [
    ({"device": "cuda:99"}, "device 'cuda:99' asked for"),
    ({"device": "tpu"}, "not a device: 'tpu'"),
    ({"device": "mps"}, "unsupported device 'mps'"),
    ({"dtype": "int8"}, "unknown dtype 'int8'"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"max_length": 0}, "max_length must be positive"),
    ({"max_length": 8, "stride": 8}, r"stride must be in 0\.\.7"),
])
def test_bad_options(model_dir: Path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransformersTagger(str(model_dir), **options)


def test_bad_paths(model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=rf"'{re.escape(str(missing))}' is not a token classification model: no such"):
        load_tagger(f"transformers:{missing}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"'{re.escape(str(empty))}' is not a token classification model: .*config"):
        load_tagger(f"transformers:{empty}")
    mlm = copy_with_config(model_dir, tmp_path / "mlm", architectures=["XLMRobertaForMaskedLM"])
    with pytest.raises(ValueError, match=r"not a token classification model: its architectures are "
                                         r"XLMRobertaForMaskedLM"):
        load_tagger(f"transformers:{mlm}")
    headless = copy_with_config(model_dir, tmp_path / "headless", architectures=None)
    from safetensors.torch import load_file, save_file

    weights = load_file(headless / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier")}, headless / "model.safetensors")
    with pytest.raises(ValueError, match=r"lack the classification head \(classifier.bias, classifier.weight\)"):
        load_tagger(f"transformers:{headless}")
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / name, no_tokenizer / name)
    with pytest.raises(ValueError, match=rf"'{re.escape(str(no_tokenizer))}' has no usable tokenizer"):
        load_tagger(f"transformers:{no_tokenizer}")


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="available: spacy, transformers"):
        load_tagger("flair:ner")
    with pytest.raises(ValueError, match="names no model"):
        load_tagger("transformers:")


def test_gpu_matches_cpu(model_dir: Path, tiny: TransformersTagger) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (GPU test)")
    sentences = [OBAMA, EU, ES, LONG, ""]
    words = [tokenize(text, "en")[0] for text in sentences]
    cpu_tags = [tags for tags, _ in tiny.tag_words(words)]
    for dtype in ("float32", "float16", "bfloat16"):
        gpu = TransformersTagger(str(model_dir), device="cuda", dtype=dtype, batch_size=2)
        assert gpu.device.type == "cuda"
        assert next(gpu.model.parameters()).dtype == getattr(torch, dtype)
        gpu_tags = [tags for tags, _ in gpu.tag_words(words)]
        pairs = [(a, b) for x, y in zip(gpu_tags, cpu_tags, strict=True) for a, b in zip(x, y, strict=True)]
        agree = sum(a == b for a, b in pairs) / len(pairs)
        # float32 may differ from the CPU in the last bits only; half precision may flip a near tie
        assert agree >= (0.98 if dtype == "float32" else 0.9), dtype
        for text, spans in zip(sentences, gpu.tag(sentences, "en"), strict=True):
            check_offsets(text, spans)
