"""Token classification with transformers: any `AutoModelForTokenClassification` (XLM-R, mBERT, ...) by hub id
or path. Words are crop's tokens; a word's label is that of its first sub-token; labels mapped into the scheme."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crop.labels import CONLL, LabelScheme, valid_bio
from crop.tag.base import tagged_spans
from crop.text import tokenize
from crop.torch_device import resolve_device, resolve_dtype
from crop.types import Span

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# model types whose absolute positions start after the padding index (pad_token_id + 1), as RoBERTa's do
_POSITIONS_AFTER_PAD = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer",
                                  "data2vec-text", "roberta-prelayernorm", "xmod", "ibert", "luke", "mpnet"})
# byte-level BPE tokenizers take pre-split words only with a prefix space
PREFIX_SPACE = frozenset({"roberta", "longformer", "bart", "gpt2", "deberta", "roberta-prelayernorm",
                           "data2vec-text"})
_PREFIXED = re.compile(r"^([BIESLU])[-_](.+)$")
_GENERIC = re.compile(r"^LABEL_\d+$")
# files one of which a folder's tokenizer needs (without any, transformers would build an empty default one)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model",
                    "spiece.model", "sentencepiece.model", "tokenizer.model")

class AnyLanguage(list[str]):
    """`["*"]`: a multilingual model tags any language, so `lang in AnyLanguage()` is true for every code."""

    def __init__(self) -> None:
        super().__init__(["*"])

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str)


def parse_label(label: str, scheme: LabelScheme) -> tuple[str, str | None]:
    """A model label as (prefix, entity type in `scheme`): prefix "B" begins an entity, "I" continues one (or
    begins it after O or another type: IOB1, bare IO labels), "O" is outside. BIOES/BILOU S-/U- read as B-,
    E-/L- as I-; a bare label (PER) as I-; a type the scheme drops (DATE) as O."""
    raw = label.strip().upper()
    if raw in ("O", ""):
        return "O", None
    m = _PREFIXED.match(raw)
    prefix, typ = (m.group(1), m.group(2)) if m else ("I", raw)
    mapped = scheme.map(typ)
    if mapped is None:
        return "O", None
    return ("B" if prefix in "BSU" else "I"), mapped


def map_labels(id2label: Mapping[int, str], scheme: LabelScheme = CONLL,
               label_map: Mapping[Any, str] | None = None, model: str = "model") -> list[str]:
    """The scheme's BIO tag ("B-PER", "I-PER" or "O") for each label id of a model. `label_map` renames labels
    first (by label or id: {"LABEL_1": "B-PER"}); a model whose labels are all generic (LABEL_3) or none of which
    map into the scheme is an error: it has no entity labels."""
    if not id2label:
        raise ValueError(f"{model!r} has no labels (config.id2label is empty)")
    size = max(int(i) for i in id2label) + 1
    tags = ["O"] * size
    names: list[str] = []
    for key, label in id2label.items():
        i = int(key)
        if label_map is not None:
            label = label_map.get(label, label_map.get(i, label_map.get(str(i), label)))
        names.append(label)
        prefix, typ = parse_label(label, scheme)
        tags[i] = "O" if typ is None else f"{prefix}-{typ}"
    if all(t == "O" for t in tags):
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        why = ("its labels are generic (" + shown + "); pass label_map, e.g. {'LABEL_1': 'B-PER'}"
               if all(_GENERIC.match(n) for n in names)
               else f"none of its labels ({shown}) maps to the {scheme.name!r} scheme ({', '.join(scheme.labels)})")
        raise ValueError(f"{model!r} has no entity labels: {why}")
    return tags


def plan_windows(counts: Sequence[int], window: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges (start, end) covering a sentence whose words have `counts` sub-tokens: each range at most
    `window` sub-tokens (or one word that alone exceeds it), consecutive ranges sharing words of up to
    `stride` sub-tokens (one word at least when `stride` > 0). One range when the sentence fits."""
    n = len(counts)
    windows: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and (end == start or used + counts[end] <= window):
            used += counts[end]
            end += 1
        windows.append((start, end))
        if end >= n:
            break
        nxt, shared = end, 0
        while nxt - 1 > start and shared + counts[nxt - 1] <= stride:
            nxt -= 1
            shared += counts[nxt]
        if stride > 0 and nxt == end and end - 1 > start:
            nxt = end - 1  # share one word at least, even one longer than the stride
        start = nxt
    return windows


def best_window(windows: Sequence[tuple[int, int]], n: int) -> list[int]:
    """For each of n words, the index of the window where it is farthest from an edge (a sentence boundary
    is no edge: nothing is missing there); the first on ties."""
    best = [-1] * n
    dist = [-1] * n
    for k, (s, e) in enumerate(windows):
        for i in range(s, e):
            d = min(i - s if s > 0 else n, e - 1 - i if e < n else n)
            if d > dist[i]:
                best[i], dist[i] = k, d
    return best


@dataclass
class _Job:
    sent: int
    start: int
    end: int
    length: int  # sub-tokens


class TransformersTagger:
    name = "transformers"

    def __init__(self, model: str, scheme: LabelScheme = CONLL, device: str = "auto", dtype: str = "auto",
                 batch_size: int = DEFAULT_BATCH_SIZE, label_map: Mapping[Any, str] | None = None,
                 max_length: int | None = None, stride: int | None = None) -> None:
        """`model`: hub id or folder of a token classification model with a fast tokenizer. `device`: "auto"
        (cuda when available), "cpu", "cuda", "cuda:1". `dtype`: "auto" (float16 on GPU), "float32", "float16",
        "bfloat16" (half precision only on GPU). `batch_size`: windows per forward pass. `max_length`: at most
        this many sub-tokens per window (the model's own limit otherwise). `stride`: sub-tokens consecutive
        windows of a long sentence share (a quarter of the window by default)."""
        _require()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        self.model_name = str(model)
        self.scheme = scheme
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model, self.tokenizer = _load(self.model_name, self.dtype)
        self.model.to(self.device).eval()
        self.tags = map_labels(self.model.config.id2label, scheme, label_map, self.model_name)
        self.specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        limit = model_window(self.model, self.tokenizer)
        if max_length is not None:
            if max_length < 1:
                raise ValueError(f"max_length must be positive, not {max_length}")
            limit = min(limit, max_length)
        self.window = limit
        self.stride = self.window // 4 if stride is None else stride
        if not 0 <= self.stride < self.window:
            raise ValueError(f"stride must be in 0..{self.window - 1} (the window is {self.window} sub-tokens)")
        self._languages = _config_languages(self.model.config)

    def languages(self) -> list[str]:
        """The languages the model's config lists, or `AnyLanguage()` (["*"], containing every code)."""
        return self._languages

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        if lang not in self._languages:
            raise ValueError(f"model {self.model_name!r} tags {', '.join(self._languages)}, not {lang!r}")
        words_offsets = [tokenize(text, lang) for text in sentences]
        word_tags = self.tag_words([w for w, _ in words_offsets])
        return [tagged_spans(text, offsets, tags, scores, lang)
                for text, (_, offsets), (tags, scores) in zip(sentences, words_offsets, word_tags, strict=True)]

    def tag_words(self, sentences: Sequence[Sequence[str]]) -> list[tuple[list[str], list[float]]]:
        """Scheme BIO tags of pre-split words, and each word's probability of its model label (that of its first
        sub-token). Long sentences are tagged in overlapping windows and merged."""
        counts = self._subtoken_counts(sentences)
        jobs: list[_Job] = []
        plans: list[list[tuple[int, int]]] = []
        for i, c in enumerate(counts):
            plan = plan_windows(c, self.window, self.stride)
            plans.append(plan)
            jobs += [_Job(i, s, e, min(sum(c[s:e]), self.window)) for s, e in plan]
        by_job: dict[int, tuple[list[int], list[float]]] = {}
        order = sorted(range(len(jobs)), key=lambda j: -jobs[j].length)
        for b in range(0, len(order), self.batch_size):
            batch = order[b:b + self.batch_size]
            preds = self._predict([sentences[jobs[j].sent][jobs[j].start:jobs[j].end] for j in batch])
            by_job.update(zip(batch, preds, strict=True))
        results: list[tuple[list[str], list[float]]] = []
        first_job = 0
        for i, plan in enumerate(plans):
            n = len(sentences[i])
            tags, scores = ["O"] * n, [0.0] * n
            for w, k in enumerate(best_window(plan, n)):
                ids, probs = by_job[first_job + k]
                rel = w - plan[k][0]
                if ids[rel] >= 0:
                    tags[w], scores[w] = self.tags[ids[rel]], probs[rel]
            first_job += len(plan)
            results.append((valid_bio(tags), scores))
        return results

    def _subtoken_counts(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        return subtoken_counts(self.tokenizer, sentences)

    def _predict(self, windows: Sequence[Sequence[str]]) -> list[tuple[list[int], list[float]]]:
        """Label id (-1: the word has no sub-token) and its probability, per word of each window."""
        import torch

        enc = self.tokenizer([list(w) for w in windows], is_split_into_words=True, truncation=True,
                             max_length=self.window + self.specials, padding=True, return_tensors="pt")
        with torch.inference_mode():
            inputs = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**inputs).logits
            probs, ids = logits.float().softmax(-1).max(-1)
        probs_l, ids_l = probs.cpu().tolist(), ids.cpu().tolist()
        out: list[tuple[list[int], list[float]]] = []
        for b, words in enumerate(windows):
            word_ids, word_probs = [-1] * len(words), [0.0] * len(words)
            for t, w in enumerate(enc.word_ids(b)):
                if w is not None and word_ids[w] < 0:
                    word_ids[w], word_probs[w] = ids_l[b][t], probs_l[b][t]
            out.append((word_ids, word_probs))
        return out




def model_window(model: Any, tokenizer: Any) -> int:
    """Sub-tokens of words one forward pass takes: the least of the tokenizer's `model_max_length` and the
    model's positions (less the offset of RoBERTa-style positions, which start at pad_token_id + 1), less the
    special tokens; 512 positions when neither says."""
    import torch

    limits = []
    if 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    config = model.config
    emb = next((m for name, m in model.named_modules()
                if name.endswith("position_embeddings") and isinstance(m, torch.nn.Embedding)), None)
    if emb is not None:
        limits.append(emb.num_embeddings - (emb.padding_idx + 1 if emb.padding_idx is not None else 0))
    elif getattr(config, "max_position_embeddings", None):
        offset = (config.pad_token_id or 0) + 1 if config.model_type in _POSITIONS_AFTER_PAD else 0
        limits.append(config.max_position_embeddings - offset)
    window = min(limits or [512]) - tokenizer.num_special_tokens_to_add(pair=False)
    if window < 1:
        raise ValueError(f"the model's window ({min(limits)} positions) leaves no room for words")
    return window


def _config_languages(config: Any) -> list[str]:
    for key in ("languages", "language"):
        value = getattr(config, key, None)
        if isinstance(value, str) and value:
            return [value]
        if isinstance(value, (list, tuple)) and value:
            return [str(v) for v in value]
    lang2id = getattr(config, "lang2id", None)
    if isinstance(lang2id, dict) and lang2id:
        return list(lang2id)
    return AnyLanguage()


def _require() -> None:
    """torch and transformers, or an error saying how to install them (they are not crop's dependencies)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        raise ImportError(f"the transformers tagger needs torch and transformers ({e}): "
                          "pip install torch transformers sentencepiece") from e


def _load(model: str, dtype: Any) -> tuple[Any, Any]:
    """The model and its fast tokenizer; a ValueError naming `model` and what is missing otherwise."""
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    path = Path(model).expanduser()
    looks_local = path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ValueError(f"{model!r} is not a token classification model: no such folder")
        if not (path / "config.json").is_file():
            raise ValueError(f"{model!r} is not a token classification model: the folder has no config.json")
        model = str(path)
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise ValueError(f"{model!r} is not a token classification model: no config could be loaded ({e})") from e
    archs = list(getattr(config, "architectures", None) or [])
    if archs and not any(a.endswith("ForTokenClassification") for a in archs):
        raise ValueError(f"{model!r} is not a token classification model: its architectures are "
                         f"{', '.join(archs)} (no ...ForTokenClassification head)")
    try:
        net, info = AutoModelForTokenClassification.from_pretrained(model, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{model!r} is not a token classification model: {e}") from e
    missing = [k for k in info.get("missing_keys", ()) if "classifier" in k or k.startswith("score")]
    if missing:
        raise ValueError(f"{model!r} is not a token classification model: its weights lack the classification "
                         f"head ({', '.join(sorted(missing))})")
    if looks_local and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(f"{model!r} has no usable tokenizer: none of {', '.join(_TOKENIZER_FILES)} in the folder")
    kwargs = {"add_prefix_space": True} if config.model_type in PREFIX_SPACE else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{model!r} has no usable tokenizer: {e}") from e
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model!r} has no fast tokenizer (tokenizer.json), which word alignment needs")
    vocab = getattr(config, "vocab_size", None)
    if vocab and len(tokenizer) < vocab // 2:
        raise ValueError(f"{model!r} has no usable tokenizer: its vocabulary ({len(tokenizer)} pieces) is not "
                         f"the model's ({vocab})")
    return net, tokenizer


def subtoken_counts(tokenizer: Any, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
    """How many sub-tokens (no special tokens) each word of each sentence takes with a fast tokenizer."""
    counts: list[list[int]] = [[0] * len(words) for words in sentences]
    nonempty = [i for i, words in enumerate(sentences) if words]
    if not nonempty:
        return counts
    enc = tokenizer([list(sentences[i]) for i in nonempty], is_split_into_words=True, add_special_tokens=False,
                    verbose=False)
    for b, i in enumerate(nonempty):
        for w in enc.word_ids(b):
            if w is not None:
                counts[i][w] += 1
    return counts
