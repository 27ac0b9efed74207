"""The tagger service: entities of sentences in any language the translator serves (mode "crop": translate to
English, tag, translate back with markers, project), or by the tagger's own model (mode "model"), and a page to
try it at `/`.

    crop serve tagger            # CROP_TAGGER_ENGINE=transformers:/models/xlmr CROP_TAGGER_TRANSLATOR=remote:...
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from crop.api.schemas import Entity, TaggerInfo, TagRequest, TagResponse, TagResult
from crop.api.service import V1, create_service, get_state
from crop.api.settings import TaggerSettings
from crop.io import sentence_from_record
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.tag.base import Tagger
from crop.types import Status


@dataclass
class TaggerEngines:
    tagger: Tagger
    pipeline: CropPipeline

    def model_languages(self) -> list[str]:
        return list(self.tagger.languages())

    def crop_languages(self) -> list[str]:
        pairs = set(self.pipeline.translator.pairs())
        pivot = self.pipeline.pivot
        return sorted(a for a, b in pairs if b == pivot and (pivot, a) in pairs)


def _run(engines: TaggerEngines, key: Hashable, items: list[Any]) -> list[Any]:
    mode, lang = key  # type: ignore[misc]
    if mode == "model":
        spans = engines.tagger.tag(items, lang)
        return [TagResult(text=t, entities=[Entity(start=s.start, end=s.end, text=s.text, label=s.label,
                                                   score=round(s.score, 4)) for s in sp])
                for t, sp in zip(items, spans, strict=True)]
    sentences = [sentence_from_record({"id": str(i), "text": t}, lang) for i, t in enumerate(items)]
    results = engines.pipeline.project_batch(sentences)
    return [TagResult(text=t, status=str(r.status), reason=r.reason,
                      entities=[Entity(start=e.start, end=e.end, text=e.text, label=e.label, score=e.score,
                                       method=e.method) for e in r.entities])
            for t, r in zip(items, results, strict=True)]


def create_app(settings: TaggerSettings | None = None, engines: TaggerEngines | None = None) -> FastAPI:
    settings = settings or TaggerSettings()

    def load() -> TaggerEngines:
        if engines is not None:
            return engines
        from crop.tag import load_tagger
        from crop.translate import load_translator

        tagger = load_tagger(settings.engine)
        # a sentence always gets its entities back: partial projection, no all-O or language-id discards
        projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False, max_tokens=10**6))
        pipeline = CropPipeline(load_translator(settings.translator), tagger, projector, pivot=settings.pivot)
        return TaggerEngines(tagger, pipeline)

    app = create_service("tagger", settings, load, _run,
                         "Named entities of sentences in many languages (CROP: translate, tag in English, "
                         "project back), or by the tagger's own model.")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("crop.api").joinpath("static/tagger.html").read_text(encoding="utf-8"))

    @app.get("/v1/info", response_model=TaggerInfo, dependencies=V1)
    def info(request: Request) -> TaggerInfo:
        state = get_state(request)
        eng: TaggerEngines | None = state.engine
        return TaggerInfo(engine=eng.tagger.name if eng else settings.engine,
                          model_languages=eng.model_languages() if eng else [],
                          crop_languages=eng.crop_languages() if eng else [],
                          translator=eng.pipeline.translator.name if eng else settings.translator,
                          pivot=settings.pivot, ready=state.ready)

    @app.post("/v1/tag", response_model=TagResponse, dependencies=V1,
              responses={400: {"description": "language not served in this mode"}, 413: {"description": "too large"},
                         429: {"description": "too many requests waiting"}})
    async def tag(body: TagRequest, request: Request) -> TagResponse:
        state = get_state(request)
        texts = body.all_texts()
        state.check_sizes(texts)
        eng: TaggerEngines | None = state.engine
        if eng is not None and state.ready:
            if body.mode == "model" and body.lang not in eng.tagger.languages():
                raise HTTPException(400, f"the tagger's model ({eng.tagger.name}) tags "
                                         f"{', '.join(eng.model_languages())}, not {body.lang!r}; use mode crop")
            if body.mode == "crop" and body.lang != settings.pivot and body.lang not in eng.crop_languages():
                raise HTTPException(400, f"language {body.lang!r} is not served through {settings.pivot!r} by "
                                         f"{eng.pipeline.translator.name!r} (it serves: "
                                         f"{', '.join(eng.crop_languages()) or 'none'})")
        lang_mode = "model" if body.mode == "model" or body.lang == settings.pivot else "crop"
        results = await state.submit((lang_mode, body.lang), texts, texts)
        for r in results:
            if r.status == Status.failed:
                raise HTTPException(500, f"the engines failed on a sentence: {r.reason}")
        return TagResponse(results=results)

    return app
