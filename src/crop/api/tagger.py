"""The tagger service: entities of sentences in any language the translator serves (mode "crop": translate to
English, tag, translate back with markers, project), or by the tagger's own model (mode "model"), and a page to
try it at `/`.

    crop serve tagger            # CROP_TAGGER_ENGINE=transformers:/models/xlmr CROP_TAGGER_TRANSLATOR=remote:...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from prometheus_client import Gauge

from crop.api.schemas import Entity, TaggerInfo, TagRequest, TagResponse, TagResult, UpstreamInfo
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
from crop.translate.base import Translator
from crop.types import Status

REMOTE = "remote:"


@dataclass
class TaggerEngines:
    """The tagger's model (mode model) and the pipeline of mode crop: None while a remote translator
    (`link`) is not connected yet."""

    tagger: Tagger
    pipeline: CropPipeline | None
    link: UpstreamLink[RemoteEngine] | None = None

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
    mode, lang = key  # type: ignore[misc]
    if mode == "model":
        spans = tag_text(engines.tagger, items, lang)  # clean text for the model, offsets into the text sent
        return [TagResult(text=t, entities=[Entity(start=s.start, end=s.end, text=s.text, label=s.label,
                                                   score=round(s.score, 4)) for s in sp])
                for t, sp in zip(items, spans, strict=True)]
    sentences = [sentence_from_record({"id": str(i), "text": t}, lang) for i, t in enumerate(items)]
    # an unreachable translator raises EngineUnavailable through here (503 + Retry-After), not failed sentences
    results = engines.crop_pipeline().project_batch(sentences)
    return [TagResult(text=t, status=str(r.status), reason=r.reason,
                      entities=[Entity(start=e.start, end=e.end, text=e.text, label=e.label, score=e.score,
                                       method=e.method) for e in r.entities])
            for t, r in zip(items, results, strict=True)]


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
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        try:
            async with inner(a) as state:
                yield state
        finally:
            link.close()

    app.router.lifespan_context = lifespan


def create_app(settings: TaggerSettings | None = None, engines: TaggerEngines | None = None) -> FastAPI:
    """The app; `engines` are used as they are when given (tests, embedding), else built from `settings`: the
    tagger's model at start-up (the service is ready then), a remote translator connected in the background."""
    settings = settings or TaggerSettings()
    pivot = normalize_lang(settings.pivot)
    link = _translator_link(settings.translator) if engines is None else engines.link

    def load() -> TaggerEngines:
        if engines is not None:
            return engines
        from crop.tag import load_tagger
        from crop.translate import load_translator

        tagger = load_tagger(settings.engine)
        if link is None:
            return TaggerEngines(tagger, _crop_pipeline(load_translator(settings.translator), tagger, pivot))
        loaded = TaggerEngines(tagger, None, link)

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

    @app.get("/v1/info", response_model=TaggerInfo, dependencies=V1)
    def info(request: Request) -> TaggerInfo:
        state = get_state(request)
        eng: TaggerEngines | None = state.engine
        return TaggerInfo(engine=eng.tagger.name if eng else settings.engine,
                          model_languages=eng.model_languages() if eng else [],
                          crop_languages=eng.crop_languages() if eng else [],
                          translator=eng.pipeline.translator.name if eng and eng.pipeline else settings.translator,
                          pivot=pivot, ready=state.ready,
                          upstream=UpstreamInfo(**link.status()) if link is not None else None)

    @app.post("/v1/tag", response_model=TagResponse, dependencies=V1,
              responses={400: {"description": "language not served in this mode"}, 413: {"description": "too large"},
                         429: {"description": "too many requests waiting"},
                         503: {"description": "not ready, or (mode crop) the translator is not reachable: see "
                                              "Retry-After"}})
    async def tag(body: TagRequest, request: Request) -> TagResponse:
        state = get_state(request)
        texts = body.all_texts()
        state.check_sizes(texts, body.lang)
        eng: TaggerEngines | None = state.engine
        if eng is not None and state.ready:
            if body.mode == "model" and body.lang not in eng.tagger.languages():
                raise HTTPException(400, f"the tagger's model ({eng.tagger.name}) tags "
                                         f"{', '.join(eng.model_languages())}, not {body.lang!r}; use mode crop")
            # (without a pipeline yet, the queue answers 503: the translator is not reachable)
            if body.mode == "crop" and body.lang != pivot and eng.pipeline is not None \
                    and body.lang not in eng.crop_languages():
                raise HTTPException(400, f"language {body.lang!r} is not served through {pivot!r} by "
                                         f"{eng.pipeline.translator.name!r} (it serves: "
                                         f"{', '.join(eng.crop_languages()) or 'none'})")
        lang_mode = "model" if body.mode == "model" or body.lang == pivot else "crop"
        results = await state.submit((lang_mode, body.lang), texts, texts)
        for r in results:
            if r.status == Status.failed:
                raise HTTPException(500, f"the engines failed on a sentence: {r.reason}")
        return TagResponse(results=results)

    return app
