"""`crop trainer` (the trainer worker) and `crop train submit|status` (training runs from the pool, on a projector
service's jobs API).

    crop trainer                                   # Celery worker on queue "train" + the crop:projected consumer
    crop train submit --languages es,ca,gl --wait  # the run id is the last line of stdout
    crop train status ID [--json]

The server is --server or CROP_SERVER_URL (default http://127.0.0.1:8103), the API key --api-key or CROP_API_KEY.
Exit status as `crop job`'s: 0 done, 1 the server cannot be reached or fails (5xx) or a waited-for run did not
succeed, 2 a request the server refuses (4xx) or bad usage.

`python -m crop.cli_trainer trainer|train submit|train status` runs the same commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from crop.cli_common import ENGINE_ERROR, err, fail, poll_until_finished, show_record
from crop.cli_jobs import DEFAULT_SERVER, ApiKey, Server, _server
from crop.cli_worker import LOG_LEVELS
from crop.remote_http import RemoteHTTP

TRAIN = "/v1/train"
FINISHED = frozenset({"succeeded", "failed"})

RunId = Annotated[str, typer.Argument(help="the run id (`crop train submit` printed it)")]


# -- the trainer worker ------------------------------------------------------------------------------------------------


def trainer(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="training processes (each trains one run at a time)")] = 1,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help=f"one of {', '.join(LOG_LEVELS)}")] = "info",
    hostname: Annotated[str | None, typer.Option(help="node name (default: celery@<host>)")] = None,
    consumer: Annotated[bool, typer.Option("--consumer/--no-consumer", help="also read crop:projected into the "
                                           "training pool (one or more trainers must)")] = True,
) -> None:
    """Run a trainer: a Celery worker on the queue "train" of CROP_REDIS_URL (training runs submitted with `crop
    train submit` or POST /v1/train) and, in a thread, the consumer of the stream crop:projected that adds every
    finished batch of the bulk jobs to the training pool under CROP_STORAGE_ROOT. SIGTERM stops both cleanly."""
    from crop.api.settings import SettingsError
    from crop.jobs.settings import job_settings

    if loglevel.lower() not in LOG_LEVELS:
        fail(f"--loglevel {loglevel!r} is not one of {', '.join(LOG_LEVELS)}")
    try:
        job_settings()
        from crop.train.consumer import settings_from_env

        consumer_settings = settings_from_env()
    except (SettingsError, ValueError) as exc:
        fail(str(exc))
        raise
    from celery.signals import worker_process_init, worker_ready, worker_shutdown

    import crop.train.tasks  # noqa: F401 - registers the task crop.train on the app
    from crop.jobs import app
    from crop.jobs.celery_app import _load_engines

    # a trainer runs no projection: its processes need not load the projection engines
    worker_process_init.disconnect(_load_engines)

    if consumer:
        from crop.train.consumer import ConsumerThread, consumer_from_settings

        thread = ConsumerThread(consumer_from_settings(consumer_settings))

        # started once the worker is up (after its pool processes were forked), stopped by its warm shutdown
        @worker_ready.connect(weak=False)
        def _start(**_: Any) -> None:
            thread.start()

        @worker_shutdown.connect(weak=False)
        def _stop(**_: Any) -> None:
            thread.stop()

    argv = ["worker", "-Q", "train", "--concurrency", str(concurrency), "--loglevel", loglevel.upper(),
            "--without-mingle", "--without-gossip"]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)


# -- submit and status ------------------------------------------------------------------------------------------------


def _languages(value: str) -> list[str]:
    from crop.langcodes import normalize_lang

    langs = [x.strip() for x in value.split(",") if x.strip()]
    if not langs:
        raise typer.BadParameter("give at least one language (es,ca,gl)")
    try:
        return [normalize_lang(x) for x in langs]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        lang, sep, ref = v.partition(":")
        if not sep or not lang or not ref:
            fail(f"--{what} {v!r}: use LANG:FILE (es:dev/es.jsonl)")
        out[lang] = ref
    return out


def submit(
    languages: Annotated[str, typer.Option("--languages", help="target languages, comma-separated: their pool "
                                           "trains one multilingual student")],
    name: Annotated[str, typer.Option(help="the model (registry models/NAME in the job storage)")] = "ner",
    student: Annotated[str, typer.Option(help="spacy or transformers")] = "spacy",
    base: Annotated[str | None, typer.Option(help="the student's start: a spaCy pipeline or a hub id/path")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs per round")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="self-training rounds")] = 1,
    source: Annotated[list[str] | None, typer.Option(help="L_src JSONL: a storage key or a URL the deployment "
                                                     "allows (repeat; default: source/*.jsonl of the storage)")]
    = None,
    dev: Annotated[list[str] | None, typer.Option(help="LANG:FILE, a gold dev set (repeat; default: "
                                                  "dev/LANG.jsonl of the storage)")] = None,
    combine: Annotated[str, typer.Option(help="projection-first or agreement")] = "projection-first",
    source_ratio: Annotated[float, typer.Option(min=0.0, help="source sentences per target sentence")] = 1.0,
    promote: Annotated[str, typer.Option(help="auto, always or never")] = "auto",
    config: Annotated[Path | None, typer.Option(help="a JSON file of further request fields (student options...)")]
    = None,
    wait: Annotated[bool, typer.Option("--wait", help="show progress until the run ends; exit 1 unless it "
                                       "succeeded")] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between progress checks with --wait")] = 2.0,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Train a student from the pool of LANGUAGES on the trainers; print the run's id as the last line of stdout."""
    body: dict[str, Any] = {}
    if config is not None:
        try:
            body = json.loads(config.read_text())
        except (OSError, ValueError) as exc:
            fail(f"--config {config}: {exc}")
        if not isinstance(body, dict):
            fail(f"--config {config}: not a JSON object")
    stud = dict(body.get("student") or {})
    stud["kind"] = student
    if base is not None:
        stud["base"] = base
    if epochs is not None:
        stud["epochs"] = epochs
    body.update(languages=_languages(languages), name=name, student=stud, rounds=rounds, combine=combine,
                source_ratio=source_ratio, promote=promote)
    if source:
        body["source"] = source
    if dev:
        body["dev"] = _pairs(dev, "dev")
    with _server(server, api_key) as http:
        info = http.post(TRAIN, body)
        err.print(f"training {info['id']}: {name} on {', '.join(info['languages'])} (pool {info.get('pool')}), "
                  f"{info['state']}", markup=False, soft_wrap=True)
        if wait:
            info = _wait(http, info, poll)
    typer.echo(info["id"])
    if wait and info["state"] != "succeeded":
        fail(f"training {info['id']} {info['state']}: {info.get('error') or 'see crop train status'}", ENGINE_ERROR)


def _wait(http: RemoteHTTP, info: dict[str, Any], poll: float = 2.0) -> dict[str, Any]:
    """Poll the run until it ends, with a progress bar over its epochs (all rounds) on stderr; its last state."""
    epochs = info.get("epochs") or 1
    info = poll_until_finished(
        http, f"{TRAIN}/{info['id']}", info, label="training", finished=FINISHED,
        total=(info.get("rounds") or 1) * epochs,
        done=lambda i: ((i.get("round") or 1) - 1) * epochs + (i.get("epoch") or 0), status=_line, poll=poll)
    _summary(info)
    return info


def _line(info: dict[str, Any]) -> str:
    parts = [info["state"]]
    if info.get("round"):
        parts.append(f"round {info['round']}/{info.get('rounds')} epoch {info.get('epoch') or 0}/{info.get('epochs')}")
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.3g}")
    if info.get("dev_f1") is not None:
        parts.append(f"dev F1 {info['dev_f1']:.4f}")
    if info.get("eta_seconds") is not None and info["state"] == "running":
        parts.append(f"ETA {info['eta_seconds']:.0f} s")
    return ", ".join(parts)


def _summary(info: dict[str, Any]) -> None:
    err.print(f"training {info['id']} ({info['name']} on {', '.join(info['languages'])}): {_line(info)}"
              + (f"; {info['message']}" if info.get("message") else ""), markup=False, soft_wrap=True)
    if info.get("version"):
        err.print(f"  model {info['name']} {info['version']}{' (current)' if info.get('promoted') else ''}; "
                  f"metrics {info.get('metrics')}", markup=False, soft_wrap=True)
    if info.get("error"):
        err.print(f"  error: {info['error']}", markup=False, soft_wrap=True)


def status(run_id: RunId, as_json: Annotated[bool, typer.Option("--json", help="the whole record as JSON")] = False,
           server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """The state of a training run: round, epoch, loss, dev F1, ETA; the model version and metrics once done."""
    with _server(server, api_key) as http:
        info = http.get(f"{TRAIN}/{run_id}")
    show_record(info, as_json, _summary)
