"""The tagger service: entities of sentences in any language the translator serves (mode "crop": translate to
English, tag, translate back with markers, project), by the tagger's own model (mode "model"), or by the
self-trained multilingual student (mode "student", no translation), and a page to try it at `/`.

    crop serve tagger            # CROP_TAGGER_ENGINE=transformers:/models/xlmr CROP_TAGGER_TRANSLATOR=remote:...
                                 # CROP_TAGGER_STUDENT=models/ner (a registry: its current version, hot-reloaded)

A request without a mode gets the student for a language where the current student's dev F1 is at least mode
crop's (both in the version's meta.json), else mode crop. Each request is answered whole by the student version it
started with: a reload swaps the version for the requests that come after it (see `crop.tag.student`).

`"explain": true` (mode crop only) adds each sentence's CROP steps to its result (`crop.types.CropSteps`). Such
requests are batched apart (their own queue key), so that the steps are only gathered when asked for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from prometheus_client import Gauge

from crop.api.schemas import (
    Entity,
    ModelRef,
    StudentInfo,
    TaggerInfo,
    TagRequest,
    TagResponse,
    TagResult,
    UpstreamInfo,
)
from crop.api.service import V1, create_service, get_state
from crop.api.settings import TaggerSettings
from crop.engine_view import tag_text
from crop.errors import EngineUnavailable
from crop.io import sentence_from_record
from crop.langcodes import normalize_lang
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.remote_http import RemoteEngine, UpstreamLink
from crop.tag.base import Tagger
from crop.tag.student import LoadedStudent, StudentHolder, StudentSource
from crop.translate.base import Translator
from crop.types import ProjectionResult, Status

REMOTE = "remote:"
EXPLAIN = "explain"  # the last element of the queue key of mode crop's explained requests


@dataclass
class TaggerEngines:
    """The tagger's model (mode model) and the pipeline of mode crop: None while a remote translator
    (`link`) is not connected yet."""

    tagger: Tagger
    pipeline: CropPipeline | None
    link: UpstreamLink[RemoteEngine] | None = None
    student: StudentHolder | None = None  # mode student (CROP_TAGGER_STUDENT); None: not configured

    def model_languages(self) -> list[str]:
        return list(self.tagger.languages())

    def crop_languages(self) -> list[str]:
        if self.pipeline is None:
            return []
        pairs = set(self.pipeline.translator.pairs())
        pivot = self.pipeline.pivot
        return sorted(a for a, b in pairs if b == pivot and (pivot, a) in pairs)

    def crop_pipeline(self) -> CropPipeline:
        """The pipeline of mode crop; EngineUnavailable while the remote translator is not connected yet."""
        if self.pipeline is None:
            link = self.link
            raise EngineUnavailable(
                f"mode crop needs the translator at {link.url if link else '?'}, which is not reachable yet "
                f"({link.last_error if link else 'not connected'}); mode model works",
                retry_after=link.retry_after() if link else 5.0)
        return self.pipeline


def _run(engines: TaggerEngines, key: Hashable, items: list[Any]) -> list[Any]:
    mode, lang, *rest = key  # type: ignore[misc]
    if mode in ("model", "student"):
        # mode student: the version the request started with (part of the key), whatever is current now
        tagger = rest[0].tagger if mode == "student" else engines.tagger
        spans = tag_text(tagger, items, lang)  # clean text for the model, offsets into the text sent
        return [TagResult(text=t, entities=[Entity(start=s.start, end=s.end, text=s.text, label=s.label,
                                                   score=round(s.score, 4)) for s in sp])
                for t, sp in zip(items, spans, strict=True)]
    sentences = [sentence_from_record({"id": str(i), "text": t}, lang) for i, t in enumerate(items)]
    # an unreachable translator raises EngineUnavailable through here (503 + Retry-After), not failed sentences
    if rest and rest[0] == EXPLAIN:
        explained = engines.crop_pipeline().explain_batch(sentences)
        return [_crop_result(t, r).model_copy(update={"steps": steps})
                for t, (r, steps) in zip(items, explained, strict=True)]
    results = engines.crop_pipeline().project_batch(sentences)
    return [_crop_result(t, r) for t, r in zip(items, results, strict=True)]


def _crop_result(text: str, r: ProjectionResult) -> TagResult:
    return TagResult(text=text, status=str(r.status), reason=r.reason,
                     entities=[Entity(start=e.start, end=e.end, text=e.text, label=e.label, score=e.score,
                                      method=e.method) for e in r.entities])


def _no_steps(lang: str) -> RequestValidationError:
    """422 for `explain` on a text in the pivot language: mode crop answers it by the model alone."""
    return RequestValidationError([{
        "type": "explain_without_steps", "loc": ("body", "explain"), "input": True,
        "msg": f"`explain` shows the steps of mode crop, and a text in {lang!r} (the pivot language) is tagged "
               "directly by the model, without any: leave `explain` out"}])


def _student_info(holder: StudentHolder | None, source: str) -> StudentInfo | None:
    if holder is None:
        return StudentInfo(source=source, loaded=False) if source else None
    status = holder.status()
    held = holder.current()
    if held is None:
        return StudentInfo(source=status["source"], loaded=False, last_error=status["last_error"])
    return StudentInfo(source=status["source"], loaded=True, name=held.name, version=held.version, kind=held.kind,
                       languages=held.languages(), metrics=held.metrics, default_languages=held.default_languages(),
                       loaded_at=held.loaded_at, reloads=status["reloads"], last_error=status["last_error"])


def _no_student(holder: StudentHolder | None) -> HTTPException:
    """503 for mode student while no student version is loaded, saying why."""
    if holder is None:
        return HTTPException(503, "mode student needs a student model, and this tagger has none: set "
                                  "CROP_TAGGER_STUDENT to a model folder or registry; modes crop and model work")
    why = holder.last_error or "its registry has no current version yet"
    return HTTPException(503, f"mode student: no student is loaded from {holder.source.location} ({why}); modes crop "
                              "and model work", headers={"Retry-After": str(max(1, int(holder.poll_seconds or 30)))})


def _on_stop(app: FastAPI, stop: Callable[[FastAPI], None]) -> None:
    """`stop(app)` run when the app stops, after its own lifespan."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            stop(a)

    app.router.lifespan_context = lifespan


def _stop_student(a: FastAPI) -> None:
    """The student's reload threads stopped (they are started once the app's engines load)."""
    engines: TaggerEngines | None = a.state.service.engine
    if engines is not None and engines.student is not None:
        engines.student.stop()


def _crop_pipeline(translator: Translator, tagger: Tagger, pivot: str) -> CropPipeline:
    # a sentence always gets its entities back: partial projection, no all-O or language-id discards
    projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False, max_tokens=10**6))
    return CropPipeline(translator, tagger, projector, pivot=pivot)


def _translator_link(spec: str) -> UpstreamLink[RemoteEngine] | None:
    """For a remote translator (remote:URL): its link, connected once the tagger's model is loaded."""
    if not spec.startswith(REMOTE):
        return None
    from crop.translate import load_translator

    def connect() -> RemoteEngine:
        # one look at /v1/info per attempt: the link retries with backoff while the translator loads
        translator = load_translator(spec, ready_timeout=0.0)
        assert isinstance(translator, RemoteEngine)
        return translator

    return UpstreamLink(spec.removeprefix(REMOTE), connect)


def _watch_upstream(app: FastAPI, link: UpstreamLink[RemoteEngine]) -> None:
    """The link's state as a metric on the service's registry, and the link closed when the app stops."""
    up = Gauge("crop_upstream_up", "1 while the upstream service answers; 0 while it is down or not connected yet",
               ["upstream"], registry=app.state.service.registry)
    up.labels("translator").set_function(lambda: 1.0 if link.state() == "up" else 0.0)
    _on_stop(app, lambda _: link.close())


def create_app(settings: TaggerSettings | None = None, engines: TaggerEngines | None = None) -> FastAPI:
    """The app; `engines` are used as they are when given (tests, embedding), else built from `settings`: the
    tagger's model at start-up (the service is ready then), a remote translator connected in the background."""
    settings = settings or TaggerSettings()
    pivot = normalize_lang(settings.pivot)
    link = _translator_link(settings.translator) if engines is None else engines.link

    def load() -> TaggerEngines:
        if engines is not None:
            if engines.student is not None:
                engines.student.refresh()  # a no-op when it holds the current version already
                engines.student.start()
            return engines
        from crop.tag import load_tagger
        from crop.translate import load_translator

        student = None
        if settings.student:
            # a folder that holds something else than a model or a registry fails the load (retried, and said
            # in /health/ready); a registry without a version yet (a missing or empty folder), or whose current
            # version fails to load, does not: modes crop and model serve, and the poller tries again
            student = StudentHolder(StudentSource(settings.student, allow_empty=True),
                                    poll_seconds=settings.student_poll, redis_url=settings.redis_url)
            student.refresh()
        tagger = load_tagger(settings.engine)
        if student is not None:
            student.start()
        if link is None:
            return TaggerEngines(tagger, _crop_pipeline(load_translator(settings.translator), tagger, pivot),
                                 student=student)
        loaded = TaggerEngines(tagger, None, link, student=student)

        def connected(translator: RemoteEngine) -> None:
            loaded.pipeline = _crop_pipeline(translator, tagger, pivot)  # type: ignore[arg-type]

        link.on_connect = connected
        link.start()
        return loaded

    app = create_service("tagger", settings, load, _run,
                         "Named entities of sentences in many languages (CROP: translate, tag in English, "
                         "project back), or by the tagger's own model.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("crop.api").joinpath("static/tagger.html").read_text(encoding="utf-8"))

    if link is not None:
        _watch_upstream(app, link)
    _on_stop(app, _stop_student)

    @app.get("/v1/info", response_model=TaggerInfo, dependencies=V1)
    def info(request: Request) -> TaggerInfo:
        state = get_state(request)
        eng: TaggerEngines | None = state.engine
        return TaggerInfo(engine=eng.tagger.name if eng else settings.engine,
                          model_languages=eng.model_languages() if eng else [],
                          crop_languages=eng.crop_languages() if eng else [],
                          translator=eng.pipeline.translator.name if eng and eng.pipeline else settings.translator,
                          pivot=pivot, ready=state.ready,
                          upstream=UpstreamInfo(**link.status()) if link is not None else None,
                          student=_student_info(eng.student if eng else None,
                                                settings.student if eng is None else ""))

    @app.post("/v1/tag", response_model=TagResponse, dependencies=V1,
              responses={400: {"description": "language not served in this mode"}, 413: {"description": "too large"},
                         429: {"description": "too many requests waiting"},
                         503: {"description": "not ready, (mode crop) the translator is not reachable, or (mode "
                                              "student) no student is loaded: see Retry-After"}})
    async def tag(body: TagRequest, request: Request) -> TagResponse:
        state = get_state(request)
        texts = body.all_texts()
        state.check_sizes(texts, body.lang)
        eng: TaggerEngines | None = state.engine
        # the student version this request is answered by, taken once: a reload while it waits changes nothing
        student: LoadedStudent | None = eng.student.current() if eng is not None and eng.student is not None \
            else None
        mode = body.mode
        if mode is None:
            # explain asks for the steps of mode crop: the student's default does not apply
            mode = "student" if not body.explain and student is not None and student.is_default(body.lang) \
                else "crop"
        if body.explain and body.lang == pivot:
            raise _no_steps(body.lang)
        if eng is not None and state.ready:
            if mode == "student" and student is None:
                raise _no_student(eng.student)
            if mode == "model" and body.lang not in eng.tagger.languages():
                raise HTTPException(400, f"the tagger's model ({eng.tagger.name}) tags "
                                         f"{', '.join(eng.model_languages())}, not {body.lang!r}; use mode crop")
            # (without a pipeline yet, the queue answers 503: the translator is not reachable)
            if mode == "crop" and body.lang != pivot and eng.pipeline is not None \
                    and body.lang not in eng.crop_languages():
                raise HTTPException(400, f"language {body.lang!r} is not served through {pivot!r} by "
                                         f"{eng.pipeline.translator.name!r} (it serves: "
                                         f"{', '.join(eng.crop_languages()) or 'none'})")
        if mode == "student" and student is not None:
            results = await state.submit(("student", body.lang, student), texts, texts)
            return TagResponse(results=results, mode="student",
                               model=ModelRef(name=student.name, version=student.version))
        lang_mode = "model" if mode == "model" or body.lang == pivot else "crop"
        # explained requests are batched apart: only they pay for gathering the steps
        key = (lang_mode, body.lang, EXPLAIN) if body.explain else (lang_mode, body.lang)
        results = await state.submit(key, texts, texts)
        for r in results:
            if r.status == Status.failed:
                raise HTTPException(500, f"the engines failed on a sentence: {r.reason}")
        return TagResponse(results=results, mode=lang_mode)

    return app
