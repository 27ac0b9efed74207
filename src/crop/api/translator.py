"""The translator service: plain, labeled and word-aligned translation by the configured engine (Apertium,
transformers, CTranslate2, an OpenAI-compatible server), batched across requests.

    crop serve translator            # CROP_TRANSLATOR_ENGINE=ctranslate2:/models/m2m100-int8 ...
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from fastapi import FastAPI, HTTPException, Request

from crop.api.schemas import (
    AlignedTranslateRequest,
    AlignedTranslateResponse,
    LabeledTranslateRequest,
    LabeledTranslateResponse,
    TranslateRequest,
    TranslateResponse,
    TranslatorInfo,
)
from crop.api.service import V1, ServiceState, create_service, get_state
from crop.api.settings import TranslatorSettings
from crop.translate.base import AligningTranslator, Translator, UnsupportedPair
from crop.types import LabeledItem, Span


def _run(engine: Translator, key: Hashable, items: list[Any]) -> list[Any]:
    kind, src, tgt = key  # type: ignore[misc]
    if kind == "plain":
        return engine.translate(items, src, tgt)
    if kind == "labeled":
        return engine.translate_labeled(items, src, tgt)
    return engine.translate_aligned(items, src, tgt)  # type: ignore[attr-defined]


def _check_pair(state: ServiceState, src: str, tgt: str) -> None:
    pairs = state.engine.pairs() if state.ready else []
    if state.ready and (src, tgt) not in pairs:
        served = ", ".join(f"{a}->{b}" for a, b in sorted(pairs)[:40]) or "none"
        raise HTTPException(400, f"language pair {src}->{tgt} is not served by {state.engine.name!r} "
                                 f"(it serves: {served})")


def create_app(settings: TranslatorSettings | None = None, engine: Translator | None = None) -> FastAPI:
    """The app; `engine` is used as it is when given (tests, embedding), else built from `settings.engine`."""
    settings = settings or TranslatorSettings()

    def load() -> Translator:
        if engine is not None:
            return engine
        from crop.translate import load_translator

        return load_translator(settings.engine)

    app = create_service("translator", settings, load, _run,
                         "Plain, labeled (markers kept around entities) and word-aligned translation.")

    @app.get("/v1/info", response_model=TranslatorInfo, dependencies=V1)
    def info(request: Request) -> TranslatorInfo:
        state = get_state(request)
        eng = state.engine
        return TranslatorInfo(engine=eng.name if eng else settings.engine, pairs=eng.pairs() if eng else [],
                              aligned=isinstance(eng, AligningTranslator), ready=state.ready)

    @app.post("/v1/translate", response_model=TranslateResponse, dependencies=V1,
              responses={400: {"description": "pair not served"}, 413: {"description": "too large"},
                         429: {"description": "too many requests waiting"}})
    async def translate(body: TranslateRequest, request: Request) -> TranslateResponse:
        state = get_state(request)
        texts = body.all_texts()
        state.check_sizes(texts, body.src)
        _check_pair(state, body.src, body.tgt)
        out = await state.submit(("plain", body.src, body.tgt), texts, texts)
        return TranslateResponse(translations=out)

    @app.post("/v1/translate/labeled", response_model=LabeledTranslateResponse, dependencies=V1,
              responses={400: {"description": "pair not served"}, 413: {"description": "too large"},
                         429: {"description": "too many requests waiting"}})
    async def translate_labeled(body: LabeledTranslateRequest, request: Request) -> LabeledTranslateResponse:
        state = get_state(request)
        texts = [it.text for it in body.items]
        state.check_sizes(texts, body.src, "items")
        _check_pair(state, body.src, body.tgt)
        items = [LabeledItem(text=it.text, spans=[Span(start=s.start, end=s.end, label=s.label,
                                                       text=it.text[s.start:s.end]) for s in it.spans])
                 for it in body.items]
        try:
            out = await state.submit(("labeled", body.src, body.tgt), items, texts)
        except HTTPException:
            raise
        except ValueError as exc:  # overlapping spans and the like
            raise HTTPException(400, str(exc)) from exc
        return LabeledTranslateResponse(results=out)

    @app.post("/v1/translate/aligned", response_model=AlignedTranslateResponse, dependencies=V1,
              responses={400: {"description": "pair not served, or the engine does not align"}})
    async def translate_aligned(body: AlignedTranslateRequest, request: Request) -> AlignedTranslateResponse:
        state = get_state(request)
        if state.ready and not isinstance(state.engine, AligningTranslator):
            raise HTTPException(400, f"engine {state.engine.name!r} does not give word alignments")
        texts = [" ".join(s) for s in body.sentences]
        state.check_sizes(texts, body.src, "sentences")
        _check_pair(state, body.src, body.tgt)
        out = await state.submit(("aligned", body.src, body.tgt), body.sentences, texts)
        return AlignedTranslateResponse(results=out)

    return app


__all__ = ["create_app", "UnsupportedPair"]
