"""`crop job`: bulk projection jobs on a projector service (its jobs API, run by `crop worker`).

    crop job submit corpus.txt --src-lang es --wait     # the job id is the last line of stdout
    crop job status ID [--json]
    crop job results ID --output out.jsonl [--format conll]
    crop job cancel ID
    crop job list

The server is --server or CROP_SERVER_URL (default http://127.0.0.1:8103), the API key --api-key or CROP_API_KEY.
Exit status: 0 done, 1 the server cannot be reached or fails (5xx) or a waited-for job did not succeed, 2 a request
the server refuses (4xx) or bad usage.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from crop.cli_common import ENGINE_ERROR, USAGE_ERROR, err, fail, poll_until_finished, show_record, warn
from crop.io import AtomicFile, sniff_format
from crop.langcodes import normalize_lang
from crop.remote_http import RemoteHTTP, RemoteServiceError, RemoteUnavailable, error_detail

job_app = typer.Typer(help="Bulk projection jobs on a projector service (run by `crop worker`).",
                      no_args_is_help=True)

DEFAULT_SERVER = "http://127.0.0.1:8103"
JOBS = "/v1/jobs"
CHUNK = 1024 * 1024
FINISHED = frozenset({"succeeded", "failed", "cancelled"})

Server = Annotated[str, typer.Option("--server", envvar="CROP_SERVER_URL", help="the projector service's URL")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="CROP_API_KEY", show_default=False,
                                            help="an API key of the service (its jobs are this key's)")]
JobId = Annotated[str, typer.Argument(help="the job id (`crop job submit` printed it)")]


@contextmanager
def _server(server: str, api_key: str | None) -> Iterator[RemoteHTTP]:
    """A client of the service (crop.remote_http's: retries on 502/503/504, the API key as a bearer token);
    what goes wrong ends the command with a one-line error."""
    try:
        http = RemoteHTTP(server, api_key=api_key or "", timeout=60.0, max_retries=2, cooldown=0.0)
    except ValueError as exc:
        fail(f"--server / CROP_SERVER_URL: {exc}")
        raise
    try:
        yield http
    except RemoteUnavailable as exc:
        fail(f"the server cannot be reached or is unavailable: {exc}", ENGINE_ERROR)
    except RemoteServiceError as exc:
        fail(str(exc), USAGE_ERROR if exc.status is not None and exc.status < 500 else ENGINE_ERROR)
    except httpx.TransportError as exc:
        fail(f"{server}: connection failed ({type(exc).__name__}: {exc})", ENGINE_ERROR)
    finally:
        http.close()


def _check(resp: httpx.Response) -> None:
    """Fail with the server's `detail` for an error answer: 4xx exits 2, 5xx exits 1."""
    if resp.is_success:
        return
    resp.read()
    fail(f"{resp.request.method} {resp.request.url} failed with HTTP {resp.status_code}: {error_detail(resp)}",
         USAGE_ERROR if resp.status_code < 500 else ENGINE_ERROR)


# -- submit ------------------------------------------------------------------------------------------------------------


def _upload(path: Path) -> tuple[Iterator[bytes], dict[str, str]]:
    """The file's bytes in chunks (a .gz decompressed) and the request's headers: the Content-Type of its format
    (as `crop project` reads it) and, when known, its Content-Length (which lets the server refuse too large an
    input before it is sent)."""
    jsonl = sniff_format(path) == "jsonl"
    headers = {"Content-Type": "application/x-ndjson" if jsonl else "text/plain; charset=utf-8"}
    gz = path.suffix == ".gz"
    if not gz:
        headers["Content-Length"] = str(path.stat().st_size)

    def chunks() -> Iterator[bytes]:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    return chunks(), headers


@job_app.command("submit")
def submit(
    input: Annotated[Path, typer.Argument(help="text (one sentence a line) or JSONL (id, text or tokens, lang)")],
    src_lang: Annotated[str | None, typer.Option("--src-lang", parser=normalize_lang, help="language of the "
                                                 "sentences; JSONL may give a `lang` per line instead")] = None,
    name: Annotated[str | None, typer.Option(help="the job's name; ids of text lines are NAME-<line> (default: "
                                                  "the input's file name, as `crop project`)")] = None,
    engine: Annotated[str | None, typer.Option(help="an engine name the deployment offers (default: its first)")]
    = None,
    methods: Annotated[str | None, typer.Option(help="matching methods in cascade order, or 'all'")] = None,
    policy: Annotated[str | None, typer.Option(help="strict or partial")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="discard longer sentences")] = None,
    keep_all_o: Annotated[bool | None, typer.Option("--keep-all-o", help="keep sentences without entities")]
    = None,
    langid: Annotated[bool | None, typer.Option("--langid/--no-langid", help="drop projections that are not in "
                                                "the sentence's language")] = None,
    type_vote: Annotated[bool | None, typer.Option("--type-vote", help="once every batch is projected, re-type "
                                                   "each entity whose surface form a clear majority of its other "
                                                   "mentions in the job typed otherwise")] = None,
    type_vote_min_count: Annotated[int | None, typer.Option(min=1, help="--type-vote: at least this many other "
                                                            "mentions")] = None,
    type_vote_margin: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="--type-vote: the winning "
                                                           "type's share of them")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="show progress until the job ends; exit 1 unless it "
                                       "succeeded")] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="seconds between progress checks with --wait")] = 1.0,
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Submit INPUT as a job (streamed to the server); print its id as the last line of stdout."""
    if not input.is_file():
        fail(f"input file {input} does not exist" if not input.exists() else f"input {input} is not a file")
    options = {"src_lang": src_lang, "name": name or input.name, "engine": engine,
               "methods": methods, "policy": policy, "max_tokens": max_tokens, "keep_all_o": keep_all_o,
               "langid": langid, "type_vote": type_vote, "type_vote_min_count": type_vote_min_count,
               "type_vote_margin": type_vote_margin}
    params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}
    body, headers = _upload(input)
    with _server(server, api_key) as http:
        # the raw upload goes through the client's own connection pool (RemoteHTTP speaks JSON only)
        resp = http._client.post(JOBS, params=params, content=body, headers=headers, timeout=None)
        _check(resp)
        info = resp.json()
        err.print(f"job {info['id']}: {info['total']} sentences in {info['batches']} batches, {info['state']}",
                  markup=False)
        if wait:
            info = _wait(http, info, poll)
    typer.echo(info["id"])
    if wait and info["state"] != "succeeded":
        fail(f"job {info['id']} {info['state']}: {'; '.join(info.get('errors') or []) or 'see crop job status'}",
             ENGINE_ERROR)


def _wait(http: RemoteHTTP, info: dict[str, Any], poll: float = 1.0) -> dict[str, Any]:
    """Poll the job until it ends, with a progress bar over its sentences on stderr; its last state."""
    info = poll_until_finished(http, f"{JOBS}/{info['id']}", info, label="job", finished=FINISHED,
                               total=info["total"], done=lambda i: i["done"], status=lambda i: i["state"], poll=poll)
    _summary(info)
    return info


# -- status, list, cancel ----------------------------------------------------------------------------------------------


def _summary(info: dict[str, Any]) -> None:
    """The job in a few lines, on stderr."""
    rate = f", {info['rate']:g} sentences/s" if info.get("rate") else ""
    eta = f", about {info['eta_seconds']:g} s left" if info.get("eta_seconds") is not None else ""
    err.print(f"job {info['id']} ({info['name']}): {info['state']}, {info['done']}/{info['total']} sentences, "
              f"{info['batches_done']}/{info['batches']} batches{rate}{eta}", markup=False, soft_wrap=True)
    if info.get("counts"):
        err.print(f"  status {info['counts']}; reasons {info.get('reasons') or {}}", markup=False, soft_wrap=True)
    if vote := info.get("type_vote"):
        done = (f": {vote['retyped']} entities re-typed in {vote['retyped_lines']} lines "
                f"({vote['surface_forms']} surface forms)" if vote["state"] == "done" else "")
        err.print(f"  type vote {vote['state']}{done}", markup=False, soft_wrap=True)
    for error in info.get("errors") or []:
        err.print(f"  error: {error}", markup=False, soft_wrap=True)


@job_app.command("status")
def status(job_id: JobId, as_json: Annotated[bool, typer.Option("--json", help="the whole record as JSON")] = False,
           server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """The state of a job: sentences done, counts by status and reason, rate, ETA, errors."""
    with _server(server, api_key) as http:
        info = http.get(f"{JOBS}/{job_id}")
    show_record(info, as_json, _summary)


@job_app.command("list")
def list_jobs(offset: Annotated[int, typer.Option(min=0)] = 0, limit: Annotated[int, typer.Option(min=1, max=500)]
              = 50, server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """This API key's jobs, newest first: id, state, sentences done/total, name."""
    with _server(server, api_key) as http:
        page = http.get(f"{JOBS}?offset={offset}&limit={limit}")
    for info in page["jobs"]:
        typer.echo(f"{info['id']}\t{info['state']}\t{info['done']}/{info['total']}\t{info['name']}")
    if page["total"] > offset + len(page["jobs"]):
        err.print(f"{page['total']} jobs in all; see more with --offset {offset + len(page['jobs'])}", markup=False)


@job_app.command("cancel")
def cancel(job_id: JobId, server: Server = DEFAULT_SERVER, api_key: ApiKey = None) -> None:
    """Cancel a job: its batches not started never run; the results so far stay readable."""
    with _server(server, api_key) as http:
        info = http.request("DELETE", f"{JOBS}/{job_id}")
    _summary(info)
    typer.echo(info["state"])


# -- results -----------------------------------------------------------------------------------------------------------


@job_app.command("results")
def results(
    job_id: JobId,
    output: Annotated[Path, typer.Option("--output", help="the file to write (renamed into place when complete)")],
    format: Annotated[str, typer.Option("--format", help="jsonl (one line per input line, as `crop project "
                                        "--output`) or conll (the kept sentences)")] = "jsonl",
    server: Server = DEFAULT_SERVER,
    api_key: ApiKey = None,
) -> None:
    """Download a job's results in input order; of a job not finished, the part done so far (with a warning)."""
    if format not in ("jsonl", "conll"):
        fail(f"--format {format!r}: use jsonl or conll")
    if output.is_dir():
        fail(f"--output {output} is a folder: give a file name")
    with _server(server, api_key) as http:
        with http._client.stream("GET", f"{JOBS}/{job_id}/results", params={"format": format}, timeout=None) as resp:
            _check(resp)
            size = _save(resp, output)
        partial = resp.headers.get("x-crop-partial") == "true"
    err.print(f"{output}: {size} bytes, batches {resp.headers.get('x-crop-batches', '?')}", markup=False)
    if partial:
        warn(f"job {job_id} is {resp.headers.get('x-crop-job-state', 'not finished')}: {output} holds the results "
             "finished so far (in input order), not all of them")


def _save(resp: httpx.Response, output: Path) -> int:
    """Write the answer's body to `output` atomically (a download that breaks off leaves it as it was)."""
    out = AtomicFile(output)
    size = 0
    try:
        for chunk in resp.iter_bytes(CHUNK):
            out.file.buffer.write(chunk)
            size += len(chunk)
    except BaseException:
        out.discard()
        raise
    out.commit()
    return size
