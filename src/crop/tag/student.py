"""The self-trained student as a tagger: a multilingual NER model that tags target-language text directly (CROP
step 6, mode "student" of the tagger service, `crop tag --model`).

A student folder is what `crop.train.students` saves: a spaCy pipeline with an "ner" pipe, or a transformers
token-classification `save_pretrained` folder. Both tag crop's own tokens (`crop.text.tokenize`), as they were
trained on them, so their spans map back to character offsets through the token offsets.

`StudentSource` resolves a location, either a model folder or a model registry (`crop.train.registry`: versions
`<root>/<version>/` with a `meta.json`, and `<root>/current` naming the current one), to (version, metrics,
local folder). `StudentHolder` keeps the current (version, tagger) pair and swaps in a new current version without
touching a request in flight: the new version is loaded (and warmed up) whole in a background thread, then the
reference is replaced in one assignment; a request that took the old one keeps using it. A reload is triggered by
polling `current` and by messages on the Redis channel `crop:models`; a version that fails to load leaves the old
one in place and the error logged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crop.labels import LabelScheme, bio_to_spans, spans_to_bio, valid_bio
from crop.tag.base import tagged_spans
from crop.tag.transformers import AnyLanguage
from crop.text import tokenize
from crop.train.registry import ANNOUNCE_CHANNEL, ModelRegistry, RegistryError
from crop.train.students.base import model_kind
from crop.types import ProjectedEntity, ProjectionResult, Span, Status

if TYPE_CHECKING:
    from crop.io import InputSentence

log = logging.getLogger(__name__)

CURRENT = "current"
META = "meta.json"
_VERSION = re.compile(r"^v\d{4,}$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


# ------------------------------------------------------------------------------------------------ the model


def find_model_folder(folder: Path) -> tuple[Path, str]:
    """The folder that holds the model files (the folder itself, else a subfolder such as `model/`) and the
    model's kind; ValueError when there is none."""
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such model folder")
    kind = model_kind(folder)
    if kind is not None:
        return folder, kind
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        kind = model_kind(sub)
        if kind is not None:
            return sub, kind
    raise ValueError(f"{folder}: no student model in it: neither a spaCy pipeline (config.cfg) nor a transformers "
                     "model (config.json), at its top or in a subfolder")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _registry_meta(folder: Path) -> dict[str, Any] | None:
    """The registry's meta.json of a version folder (name, version, metrics, ...), None when the folder's
    meta.json is absent or spaCy's own (which has "pipeline"/"lang", no "metrics")."""
    meta = _read_json(folder / META)
    if meta is None or "metrics" not in meta or "pipeline" in meta:
        return None
    return meta


def _load_spacy(folder: Path) -> Any:
    """The spaCy pipeline of a folder. A version folder of the registry may hold the registry's meta.json in
    place of spaCy's; the pipeline then loads from its config.cfg with a meta of its own."""
    import spacy
    from spacy.util import load_config, load_model_from_path

    meta = _read_json(folder / META)
    if meta is not None and meta.get("lang") and meta.get("name") and meta.get("version"):
        nlp = spacy.load(folder)
    else:
        lang = load_config(folder / "config.cfg")["nlp"]["lang"]
        nlp = load_model_from_path(folder, meta={"lang": lang, "name": "student", "version": "0.0.0"})
    if "ner" not in nlp.pipe_names:
        raise ValueError(f"{folder}: the spaCy pipeline has no 'ner' component (it has "
                         f"{', '.join(nlp.pipe_names) or 'none'})")
    return nlp




class StudentTagger:
    """A crop Tagger over a student model folder (spaCy or transformers), on crop's tokens. Multilingual: it
    tags any language (`languages()` is ["*"]); how well is in the registry's metrics, not here."""

    name = "student"

    def __init__(self, folder: str | Path, *, device: str = "auto", dtype: str = "auto", batch_size: int = 64,
                 fast: bool = True) -> None:
        self.folder, self.kind = find_model_folder(Path(folder).expanduser())
        self.batch_size = batch_size
        self._fast: Any = None  # a spaCy student's fast tagging path (`crop.tag.spacy_fast`), when it has one
        if self.kind == "spacy":
            self.nlp = _load_spacy(self.folder)
            self.labels = sorted(self.nlp.get_pipe("ner").labels)
            self._inner = None
            if fast:
                from crop.tag.spacy_fast import FastNer

                self._fast = FastNer.of(self.nlp)
        else:
            from crop.tag.transformers import TransformersTagger

            config = _read_json(self.folder / "config.json") or {}
            types = sorted({str(v).split("-", 1)[-1].upper() for v in (config.get("id2label") or {}).values()
                            if str(v).upper() != "O"})
            # the student's own label inventory, kept as trained (no mapping into another scheme)
            scheme = LabelScheme("student", tuple(types))
            self._inner = TransformersTagger(str(self.folder), scheme=scheme, device=device, dtype=dtype,
                                             batch_size=batch_size)
            self.labels = types

    def __repr__(self) -> str:
        return f"StudentTagger({str(self.folder)!r}, kind={self.kind!r})"

    def languages(self) -> list[str]:
        return AnyLanguage()

    def tag_tokens(self, sentences: Sequence[Sequence[str]], lang: str) -> list[tuple[list[str], list[float]]]:
        """BIO tags of pre-split sentences (exactly one per token, tokens kept as given) and a score per token."""
        if self._inner is not None:
            return self._inner.tag_words(sentences)
        if self._fast is not None:
            from crop.tag.spacy_fast import one_blas_thread

            with one_blas_thread():  # no Docs: the vocabulary does not grow with what clients send
                spans = self._fast.tag_words([list(words) for words in sentences])
        else:
            from spacy.tokens import Doc

            docs = [Doc(self.nlp.vocab, words=list(words)) for words in sentences]
            # one sentence (a request of the tagger service) skips pipe()'s batching machinery
            tagged = [self.nlp(docs[0])] if len(docs) == 1 else self.nlp.pipe(docs, batch_size=self.batch_size)
            spans = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in tagged]
        # spaCy's NER gives no probabilities: every token scores 1
        return [(valid_bio(spans_to_bio(len(words), ents)), [1.0] * len(words))
                for words, ents in zip(sentences, spans, strict=True)]

    @property
    def fast(self) -> bool:
        """Whether this spaCy student tags through its fast path (`crop.tag.spacy_fast`) rather than spaCy's."""
        return self._fast is not None

    def tag_inputs(self, sentences: Sequence[InputSentence]) -> list[ProjectionResult]:
        """Input sentences tagged on their own tokens (kept as given), as `crop project` writes its lines: BIO
        tags, the entities (method "student") with token and character offsets, status kept."""
        results: list[ProjectionResult | None] = [None] * len(sentences)
        by_lang: dict[str, list[int]] = {}
        for i, s in enumerate(sentences):
            by_lang.setdefault(s.lang, []).append(i)
        for lang, idx in by_lang.items():
            tagged = self.tag_tokens([sentences[i].tokens for i in idx], lang)
            for i, (tags, scores) in zip(idx, tagged, strict=True):
                s = sentences[i]
                entities = []
                for a, b, label in bio_to_spans(tags):
                    start, end = s.offsets[a][0], s.offsets[b - 1][1]
                    entities.append(ProjectedEntity(token_start=a, token_end=b, start=start, end=end, label=label,
                                                    text=s.text[start:end], method="student",
                                                    score=round(sum(scores[a:b]) / (b - a), 4)))
                results[i] = ProjectionResult(id=s.id, lang=s.lang, text=s.text, tokens=s.tokens, tags=tags,
                                              entities=entities, status=Status.kept)
        return [r for r in results if r is not None]

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        words_offsets = [tokenize(text, lang) for text in sentences]
        tagged = self.tag_tokens([w for w, _ in words_offsets], lang)
        return [tagged_spans(text, offsets, tags, scores, lang)
                for text, (_, offsets), (tags, scores) in zip(sentences, words_offsets, tagged, strict=True)]


# ------------------------------------------------------------------------------------------------ where it is


@dataclass(frozen=True)
class ResolvedStudent:
    """One version of a student: where its files are on this machine, and what the registry says of it."""

    name: str
    version: str
    folder: Path
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def _is_local_registry(folder: Path) -> bool:
    if (folder / CURRENT).is_file():
        return True
    return model_kind(folder) is None and any(
        p.is_dir() and _VERSION.match(p.name) and (p / META).is_file() for p in folder.iterdir())


def _metrics(raw: Any) -> dict[str, dict[str, float]]:
    """lang -> {"student": f1, "crop": f1}, the numbers kept (anything else dropped)."""
    out: dict[str, dict[str, float]] = {}
    if isinstance(raw, dict):
        for lang, scores in raw.items():
            if isinstance(scores, dict):
                out[str(lang)] = {str(k): float(v) for k, v in scores.items()
                                  if isinstance(v, int | float) and not isinstance(v, bool)}
    return out


class StudentSource:
    """A student location: a model folder (one fixed version), or a registry (`crop.train.registry`: a folder or
    an fsspec URL) whose `current` names the version to serve. ValueError for a local path that does not exist
    or holds neither; with `allow_empty`, such a path is a registry that has no version yet (a tagger started
    before the first training run: the poller picks up the first version when it appears)."""

    def __init__(self, location: str | Path, *, allow_empty: bool = False) -> None:
        self.location = str(location)
        self._fixed: ResolvedStudent | None = None
        self.kind = "registry"
        if _URL.match(self.location) and not self.location.startswith("file://"):
            self._registry = ModelRegistry.at(self.location)
            self.name = self.location.rstrip("/").rsplit("/", 1)[-1]
            return
        root = Path(self.location.removeprefix("file://")).expanduser()
        self.name = root.resolve().name
        self._registry = ModelRegistry.at(str(root))
        if allow_empty and (not root.exists() or (root.is_dir() and not any(root.iterdir()))):
            log.warning("student registry has no version yet", extra={"source": self.location})
            return
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder (a student model folder, or a model registry as "
                             "`crop train --output` writes it)")
        if not _is_local_registry(root):
            self.kind = "folder"
            folder, _ = find_model_folder(root)  # raises for a folder without a model
            meta = _registry_meta(root) or {}
            self._fixed = ResolvedStudent(name=str(meta.get("name") or self.name),
                                          version=str(meta.get("version") or root.resolve().name),
                                          folder=folder, metrics=_metrics(meta.get("metrics")))

    def __repr__(self) -> str:
        return f"StudentSource({self.location!r}, kind={self.kind!r})"

    def current_version(self) -> str | None:
        """The version to serve now (cheap: one small read); None when a registry has no current version yet."""
        if self._fixed is not None:
            return self._fixed.version
        try:
            return self._registry.current()
        except RegistryError as exc:
            raise ValueError(str(exc)) from exc

    def resolve(self, version: str | None = None) -> ResolvedStudent | None:
        """A version (the current one by default) with its metrics and a local folder holding its model; None
        when a registry has no current version yet."""
        if self._fixed is not None:
            if version is not None and version != self._fixed.version:
                raise ValueError(f"{self.location} is one model folder ({self._fixed.version}); it has no version "
                                 f"{version!r}")
            return self._fixed
        version = version or self.current_version()
        if version is None:
            return None
        try:
            meta = self._registry.meta(version)
            local = Path(self._registry.local_copy(version))
        except RegistryError as exc:
            raise ValueError(str(exc)) from exc
        folder, _ = find_model_folder(local)
        return ResolvedStudent(name=meta.name or self.name, version=meta.version, folder=folder,
                               metrics=_metrics(meta.metrics))


# ------------------------------------------------------------------------------------------------ hot reload


def prefers_student(scores: dict[str, float] | None) -> bool:
    """Whether a language's metrics make the student its default: its dev F1 at least mode crop's, both known."""
    if not scores or "student" not in scores or "crop" not in scores:
        return False
    return scores["student"] >= scores["crop"]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: a batch key of the service's queue
class LoadedStudent:
    """A student version loaded and ready to tag; never changed once built (a reload builds another)."""

    name: str
    version: str
    kind: str
    metrics: dict[str, dict[str, float]]
    tagger: StudentTagger
    folder: Path
    loaded_at: datetime

    def languages(self) -> list[str]:
        """The languages it was evaluated on (its metrics), sorted."""
        return sorted(self.metrics)

    def is_default(self, lang: str) -> bool:
        return prefers_student(self.metrics.get(lang))

    def default_languages(self) -> list[str]:
        return [lang for lang in self.languages() if self.is_default(lang)]


Loader = Callable[[ResolvedStudent], StudentTagger]


def load_tagger_of(resolved: ResolvedStudent) -> StudentTagger:
    """The tagger of a resolved version; a transformers student takes its device, dtype and batch size from
    CROP_TAGGER_DEVICE, CROP_TAGGER_DTYPE, CROP_TAGGER_BATCH_SIZE when set."""
    from crop.env_options import options_from_env

    options = options_from_env({}, "CROP_TAGGER", {"device": str, "dtype": str, "batch_size": int})
    return StudentTagger(resolved.folder, **options)


def load_student_at(location: str | Path) -> LoadedStudent:
    """The student of a location once (no reloads): a model folder, or a registry's current version.
    ValueError when there is none (not a model, or a registry without a current version)."""
    source = StudentSource(location)
    resolved = source.resolve()
    if resolved is None:
        raise ValueError(f"{location}: the model registry has no current version yet (promote one with "
                         "`crop models promote`)")
    tagger = load_tagger_of(resolved)
    return LoadedStudent(name=resolved.name, version=resolved.version, kind=tagger.kind, metrics=resolved.metrics,
                         tagger=tagger, folder=resolved.folder, loaded_at=datetime.now(UTC))


class StudentHolder:
    """The current student of a source, reloaded when the source's current version changes.

    `current()` is one attribute read: a caller keeps the LoadedStudent it got for as long as it needs it
    (a request in flight is never switched). `refresh()` loads a new current version fully (model, warm-up) and
    then swaps the reference; it runs in the poller's or the subscriber's thread (started by `start()`), or
    directly. A version that fails to load keeps the old one, and is tried again after `retry_failed_after`
    seconds (or at once when an announcement names it)."""

    def __init__(self, source: StudentSource | str | Path, *, poll_seconds: float = 30.0, redis_url: str = "",
                 channel: str = ANNOUNCE_CHANNEL, loader: Loader | None = None,
                 retry_failed_after: float = 300.0) -> None:
        self.source = source if isinstance(source, StudentSource) else StudentSource(source)
        self.poll_seconds = poll_seconds
        self.redis_url = redis_url
        self.channel = channel
        self.loader = loader or load_tagger_of
        self.retry_failed_after = retry_failed_after
        self._current: LoadedStudent | None = None
        self._lock = threading.Lock()  # one load at a time (the poller and the subscriber may both ask)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.subscribed = threading.Event()  # set while subscribed to the channel
        self.last_error: str | None = None
        self.last_check: datetime | None = None
        self.reloads = 0  # versions swapped in after the first
        self._failed: tuple[str, float] | None = None  # (version, when) of the last load that failed

    def current(self) -> LoadedStudent | None:
        return self._current

    def refresh(self, force: bool = False) -> LoadedStudent | None:
        """Load the source's current version when it is not the one held; returns the one held afterwards.
        Errors are logged and kept in `last_error`, never raised (the old version keeps serving)."""
        with self._lock:
            self.last_check = datetime.now(UTC)
            held = self._current
            try:
                version = self.source.current_version()
            except Exception as exc:  # an object store that does not answer: try again at the next poll
                self._note_error(f"cannot read the current version: {type(exc).__name__}: {exc}", None)
                return held
            if version is None or (held is not None and held.version == version):
                return held
            if not force and self._failed is not None and self._failed[0] == version \
                    and time.monotonic() - self._failed[1] < self.retry_failed_after:
                return held
            t0 = time.perf_counter()
            try:
                resolved = self.source.resolve(version)
                if resolved is None:
                    return held
                tagger = self.loader(resolved)
                tagger.tag(["Warm up the model ."], "en")  # first-call costs (allocation, lazy init) paid here
                loaded = LoadedStudent(name=resolved.name, version=resolved.version, kind=tagger.kind,
                                       metrics=resolved.metrics, tagger=tagger, folder=resolved.folder,
                                       loaded_at=datetime.now(UTC))
            except Exception as exc:
                self._note_error(f"version {version!r} failed to load: {type(exc).__name__}: {exc}", version)
                return held
            self._current = loaded  # the swap: one reference assignment; requests holding `held` keep it
            self._failed = None
            self.last_error = None
            if held is not None:
                self.reloads += 1
            log.info("student loaded", extra={"source": self.source.location, "version": loaded.version,
                                              "previous": held.version if held else None, "kind": loaded.kind,
                                              "fast_path": bool(getattr(tagger, "fast", False)),
                                              "seconds": round(time.perf_counter() - t0, 2)})
            return loaded

    def _note_error(self, message: str, version: str | None) -> None:
        self.last_error = message
        if version is not None:
            self._failed = (version, time.monotonic())
        held = self._current
        log.error("student not reloaded", extra={"source": self.source.location, "error": message,
                                                 "serving": held.version if held else None})

    # -- triggers ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling `current` (every `poll_seconds`, for a registry) and listening on the Redis channel
        (when `redis_url` is set). Idempotent."""
        if self._threads:
            return
        self._stop.clear()
        if self.source.kind == "registry" and self.poll_seconds > 0:
            self._threads.append(threading.Thread(target=self._poll, name="student-poll", daemon=True))
        if self.redis_url:
            self._threads.append(threading.Thread(target=self._listen, name="student-redis", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        self.subscribed.clear()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def _listen(self) -> None:
        """Subscribe to the channel and refresh on every message; reconnect with backoff when Redis goes away."""
        import redis

        backoff = 1.0
        while not self._stop.is_set():
            client = None
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                backoff = 1.0
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._announced(message.get("data"))
            except redis.RedisError as exc:
                self.subscribed.clear()
                log.warning("student channel unavailable", extra={"redis": self.redis_url, "channel": self.channel,
                                                                  "error": repr(exc), "retry_in": backoff})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                if client is not None:
                    client.close()
        self.subscribed.clear()

    def _announced(self, data: Any) -> None:
        """A version was published or promoted somewhere: look at `current` (the announcement may be of another
        registry, or of a version that did not become current: `current` decides)."""
        try:
            body = json.loads(data)
        except (TypeError, ValueError):
            body = None
        version = body.get("version") if isinstance(body, dict) else None
        held = self._current
        if version is not None and held is not None and version == held.version:
            return
        self.refresh(force=True)

    def status(self) -> dict[str, Any]:
        held = self._current
        return {"source": self.source.location, "source_kind": self.source.kind,
                "version": held.version if held else None, "last_error": self.last_error,
                "last_check": self.last_check, "poll_seconds": self.poll_seconds,
                "subscribed": self.subscribed.is_set() if self.redis_url else None, "reloads": self.reloads}
