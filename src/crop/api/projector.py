"""The projector service: places the entities of an English sentence in the raw target sentence from a labeled
back-translation (and a word-aligned forward translation when given), and judges the sentence. CPU only; the
language-id filter runs vectorized over each batch.

    crop serve projector            # CROP_PROJECTOR_POLICY=partial ...
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from fastapi import FastAPI, Request

from crop.api.jobs import JOBS_PATH, mount_jobs
from crop.api.schemas import ProjectItem, ProjectorInfo, ProjectRequest, ProjectResponse
from crop.api.service import V1, create_service, get_state
from crop.api.settings import ProjectorSettings
from crop.api.train import router as train_router
from crop.jobs.settings import JobSettings, load_job_settings
from crop.project import ProjectionRequest, Projector, ProjectorConfig
from crop.text import tokenize


def _request(item: ProjectItem) -> ProjectionRequest:
    if item.tokens:
        tokens, offsets, text = item.tokens, None, item.text
    else:
        assert item.text is not None
        tokens, offsets = tokenize(item.text, item.lang)
        text = item.text
    return ProjectionRequest(tokens, item.lang, item.source, back=item.back, forward=item.forward,
                             source_text=item.source_text, id=item.id, text=text, offsets=offsets,
                             source_is_translation=item.source_is_translation)


def _run(engine: Projector, key: Hashable, items: list[Any]) -> list[Any]:
    return engine.project_many([_request(it) for it in items])


def create_app(settings: ProjectorSettings | None = None, jobs: JobSettings | None = None) -> FastAPI:
    """The projector service; with the jobs API (`crop.api.jobs`) unless the job settings' redis_url is empty
    (`jobs`: those settings, else from the environment)."""
    settings = settings or ProjectorSettings()
    jobs = jobs if jobs is not None else load_job_settings()
    with_jobs = bool(jobs.redis_url.strip())
    config = ProjectorConfig(methods=settings.method_names(), policy=settings.policy,  # type: ignore[arg-type]
                             langid=settings.langid, max_tokens=settings.max_tokens)

    def load() -> Projector:
        projector = Projector(config)
        if config.langid:  # load the language-id model now, not on the first request
            projector.project_many([ProjectionRequest(["hola"], "es", [])])
        return projector

    app = create_service("projector", settings, load, _run,
                         "Entity projection from labeled back-translations (CROP steps 4-5)"
                         + ("; bulk projection jobs run by `crop worker`." if with_jobs else "."),
                         streamed=frozenset({JOBS_PATH}) if with_jobs else frozenset())
    if with_jobs:
        mount_jobs(app, jobs)
        app.include_router(train_router)

    @app.get("/v1/info", response_model=ProjectorInfo, dependencies=V1)
    def info(request: Request) -> ProjectorInfo:
        return ProjectorInfo(methods=list(config.methods), policy=config.policy, langid=config.langid,
                             ready=get_state(request).ready)

    @app.post("/v1/project", response_model=ProjectResponse, dependencies=V1,
              responses={413: {"description": "too large"}, 429: {"description": "too many requests waiting"}})
    async def project(body: ProjectRequest, request: Request) -> ProjectResponse:
        state = get_state(request)
        texts = [" ".join(it.tokens) if it.tokens else (it.text or "") for it in body.items]
        state.check_sizes(texts, [it.lang for it in body.items], "items")
        # one queue key per language: the language-id filter runs per pair
        by_lang: dict[str, list[int]] = {}
        for i, it in enumerate(body.items):
            by_lang.setdefault(it.lang, []).append(i)
        results: list[Any] = [None] * len(body.items)
        for lang, idx in by_lang.items():
            out = await state.submit(lang, [body.items[i] for i in idx], [texts[i] for i in idx])
            for i, r in zip(idx, out, strict=True):
                results[i] = r
        return ProjectResponse(results=results)

    return app
