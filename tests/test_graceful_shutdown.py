"""Graceful shutdown as Kubernetes does it: SIGTERM to the container's main process, SIGKILL once the grace period
(terminationGracePeriodSeconds in k8s/) is over.

- A service (`crop serve translator`, `crop serve tagger`: real uvicorn processes) that gets SIGTERM with
  requests in flight stops accepting connections, answers every request it holds (the one at its engine and those
  queued behind it), and exits (uvicorn re-raises the SIGTERM after its graceful shutdown: status 143 in a container).
- A projection worker (`crop worker`, a real Celery worker on a Redis server of the test's own) that gets SIGTERM
  while it holds a batch takes no new batch, finishes the one it holds and exits 0; one killed before it could
  finish gives its batch back (acks_late), and another worker runs it. Either way the job ends with every line
  exactly once.

The engine is a small OpenAI-compatible server in the test process whose answers wait at a gate the test opens:
the moment of SIGTERM is chosen, not raced (the translation is an echo; spaCy tags). Nothing asserts a duration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_harness import CROP, Cluster, Worker, results, submit, wait_finished, wait_for
from servers import free_port

from crop.jobs.dispatch import QUEUE
from crop.jobs.state import JobState

pytestmark = pytest.mark.integration

MODEL = "echo-model"
GATE_CAP = 120.0  # a held answer never waits longer than this (a failing test must not hang)


class GatedEngine(ThreadingHTTPServer):
    """An OpenAI-compatible server (`GET /v1/models`, `POST /v1/chat/completions`) that answers with the text it
    was asked to translate, once `gate` is set; `waiting` counts the answers held at the gate."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.waiting = 0
        self.answered = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that gave up: not our business
        pass


class _Handler(BaseHTTPRequestHandler):
    server: GatedEngine

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self._json(404, {"detail": "Not Found"})
            return
        # the prompt ends "<src>: <text>\n<tgt>:" (crop.translate.openai's templates): the answer echoes <text>
        line = body["messages"][-1]["content"].splitlines()[-2]
        text = line.partition(": ")[2]
        st = self.server
        with st.lock:
            st.waiting += 1
        try:
            st.gate.wait(GATE_CAP)
        finally:
            with st.lock:
                st.waiting -= 1
        self._json(200, {"id": "cmpl-echo", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]})
        with st.lock:
            st.answered += 1


@pytest.fixture
def engine() -> Iterator[GatedEngine]:
    server = GatedEngine()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.gate.set()
    server.shutdown()
    server.server_close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROP_")}
    env.update({"PYTHONUNBUFFERED": "1", "CROP_LOG_LEVEL": "INFO", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost"})
    env.update(extra)
    return env


# -- a service ---------------------------------------------------------------------------------------------------


def _connect_refused(url: str) -> bool:
    try:
        httpx.get(url + "/health/live", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.TransportError:
        return False
    return False


def _queue_depth(url: str) -> float:
    """crop_queue_depth from the service's /metrics: items waiting for the engine."""
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("crop_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no crop_queue_depth in /metrics")


# what each service is asked, and how its answer shows it went through the (echoing) engine
SERVICES = {
    "translator": ("CROP_TRANSLATOR_ENGINE", "/v1/translate",
                   lambda text: {"texts": [text], "src": "es", "tgt": "en"},
                   lambda body, text: body["translations"] == [text]),
    # mode crop: the forward translation (held at the gate), English tagging, the labeled back-translation
    "tagger": ("CROP_TAGGER_TRANSLATOR", "/v1/tag",
               lambda text: {"texts": [text], "lang": "es", "mode": "crop"},
               lambda body, text: [r["text"] for r in body["results"]] == [text]),
}


@pytest.mark.parametrize("service", list(SERVICES))
def test_service_answers_its_requests_in_flight_on_sigterm(service: str, engine: GatedEngine,
                                                           tmp_path: Path) -> None:
    variable, path, request, answered = SERVICES[service]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / f"{service}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([CROP, "serve", service, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=_env(**{variable: f"openai:{MODEL}@{engine.base_url}"}))
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"crop serve exited {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                return httpx.get(url + "/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 120, f"the {service} to be ready")
        texts = [f"Ana vive en Madrid con Pedro número {i}." for i in range(6)]
        answers: dict[int, httpx.Response | BaseException] = {}

        def call(i: int) -> None:
            try:
                answers[i] = httpx.post(url + path, json=request(texts[i]), timeout=GATE_CAP)
            except BaseException as exc:  # noqa: BLE001 - recorded, asserted below
                answers[i] = exc

        clients = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
        for c in clients:
            c.start()
        # every request is in the service: one batch held by its engine, the other requests queued behind it
        wait_for(lambda: engine.waiting >= 1 and engine.waiting + _queue_depth(url) == len(texts), 60,
                 "the requests to reach the service")

        proc.send_signal(signal.SIGTERM)  # what the kubelet sends the container's main process
        # it stops accepting at once, while it still holds the requests
        wait_for(lambda: _connect_refused(url), 30, "the service to stop accepting connections")
        assert proc.poll() is None, "the service exited with requests in flight"
        assert not answers, f"answered before the engine was: {answers}"

        engine.gate.set()
        for c in clients:
            c.join(GATE_CAP)
        # uvicorn re-raises the signal once it has shut down gracefully: killed by SIGTERM (143 in a container)
        assert proc.wait(60) in (0, -signal.SIGTERM), log.read_text(errors="replace")
        assert "Finished server process" in log.read_text(errors="replace")
    finally:
        engine.gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    for i, text in enumerate(texts):
        answer = answers[i]
        assert isinstance(answer, httpx.Response), f"request {i}: {answer!r}"
        assert answer.status_code == 200, answer.text
        assert answered(answer.json(), text), answer.json()
    assert engine.answered >= len(texts)


# -- a projection worker --------------------------------------------------------------------------------------------


LINES = 6
LINES_PER_BATCH = 2
RECEIVED = re.compile(r"crop\.project_batch\[[^\]]+\] received")


class Jobs(Cluster):
    def __init__(self, tmp_path: Path, engine: GatedEngine) -> None:
        super().__init__(tmp_path)
        self.engine = engine

    def worker(self, name: str, visibility_timeout: int = 3600) -> Worker:
        engines = {"default": {"translator": f"openai:{MODEL}@{self.engine.base_url}", "tagger": "spacy"}}
        return self.start_worker(name, {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"},
                                 job_engines=json.dumps(engines), job_visibility_timeout=visibility_timeout)

    def submit(self) -> str:
        data = "".join(f"Ana vive en Madrid con Pedro número {i}.\n" for i in range(1, LINES + 1)).encode()
        return submit(self.store, self.storage, data, name="corpus.txt", src_lang="es",
                      lines_per_batch=LINES_PER_BATCH, in_flight=2)

    def received(self, w: Worker) -> int:
        """Batches the worker took (Celery logs "Task crop.project_batch[<id>] received")."""
        return len(RECEIVED.findall(w.log.read_text(errors="replace")))

    def check_every_line_once(self, job_id: str) -> None:
        info = wait_finished(self.store, job_id, timeout=300, workers=self.workers)
        assert info.state == JobState.succeeded, info
        lines = [json.loads(line) for line in results(self.storage, self.store, job_id)]
        assert [r["id"] for r in lines] == [f"corpus-{n:06d}" for n in range(1, LINES + 1)]
        assert info.done == info.total == LINES and info.batches_done == info.batches
        assert "failed" not in {r["status"] for r in lines}, lines

    def close(self) -> None:
        self.engine.gate.set()  # a worker waiting on the engine can finish, and stop
        super().close()


@pytest.fixture
def jobs(tmp_path: Path, engine: GatedEngine) -> Iterator[Jobs]:
    j = Jobs(tmp_path, engine)
    yield j
    j.close()


def test_worker_finishes_the_batch_it_holds_on_sigterm(jobs: Jobs) -> None:
    a = jobs.worker("a")
    job_id = jobs.submit()
    # a holds one batch, stuck in its engine; the job's other batch in flight waits in the queue
    wait_for(lambda: jobs.engine.waiting >= 1, 120, "worker a to hold a batch in its engine")
    wait_for(lambda: jobs.store.redis.llen(QUEUE) >= 1, 30, "the other batch to wait in the queue")
    assert jobs.received(a) == 1

    os.kill(a.proc.pid, signal.SIGTERM)  # the main process only, as the kubelet does
    wait_for(lambda: "Warm shutdown" in a.log.read_text(errors="replace"), 30, "worker a's warm shutdown")
    assert a.proc.poll() is None, "worker a exited while it held a batch"
    assert jobs.store.done_batches(job_id) == []

    jobs.engine.gate.set()
    assert a.proc.wait(120) == 0, a.tail()
    a.out.close()
    # it finished the batch it held and took no other
    assert len(jobs.store.done_batches(job_id)) == 1, a.tail()
    assert jobs.received(a) == 1, a.tail()

    jobs.worker("b")  # what the Deployment starts in its place
    jobs.check_every_line_once(job_id)


def test_worker_killed_after_its_grace_period_gives_its_batch_back(jobs: Jobs) -> None:
    a = jobs.worker("a", visibility_timeout=5)
    job_id = jobs.submit()
    wait_for(lambda: jobs.engine.waiting >= 1, 120, "worker a to hold a batch in its engine")
    os.kill(a.proc.pid, signal.SIGTERM)
    wait_for(lambda: "Warm shutdown" in a.log.read_text(errors="replace"), 30, "worker a's warm shutdown")
    a.kill()  # the grace period is over: SIGKILL to every process of the container
    assert jobs.store.done_batches(job_id) == []

    jobs.engine.gate.set()
    b = jobs.worker("b", visibility_timeout=5)
    jobs.check_every_line_once(job_id)
    # b ran the given-back batch too: a took one and finished none
    assert jobs.received(b) >= LINES // LINES_PER_BATCH, b.tail()
