"""OpenAI-compatible translation engine against a fake vLLM server: a real HTTP server on 127.0.0.1 (stdlib
ThreadingHTTPServer in a thread) that "translates" English to Spanish with a tiny dictionary, keeps brackets,
answers `n` choices, records every request and fails on demand (429 + Retry-After, 500, 400, slow answers, answers
held back until the test releases them)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crop.translate import load_translator
from crop.translate.base import Translator, UnsupportedPair
from crop.translate.openai import (
    LABELED_PROMPT,
    PLAIN_PROMPT,
    OpenAITranslator,
    TranslationServerError,
    _retry_after,
    clean_output,
    language_name,
    parse_model_spec,
)
from crop.types import LabeledItem, Span

MODEL = "fake/llm-7b"
API_KEY = "sk-test"
HOLD_CAP = 30.0  # a held answer is sent after this many seconds at most: a client that never gives up fails, not hangs

EN_ES = {
    "the": "el", "president": "presidente", "visited": "visitó", "paris": "París", "london": "Londres",
    "yesterday": "ayer", "met": "conoció a", "in": "en", "and": "y", "city": "ciudad", "hello": "hola",
    "world": "mundo", "house": "casa", "big": "grande", "today": "hoy", "sentence": "frase", "number": "número",
}


def fake_translate(text: str) -> str:
    """Word-by-word English -> Spanish; brackets, punctuation, spacing and unknown words kept."""

    def word(m: re.Match[str]) -> str:
        w = m.group()
        t = EN_ES.get(w.lower())
        if t is None:
            return w
        return t[0].upper() + t[1:] if w[0].isupper() else t

    return re.sub(r"\w+", word, text)


def drop_first_pair(text: str) -> str:
    return re.sub(r"\[ (.*?) \]", r"\1", text, count=1)


@dataclass
class Reply:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeState:
    models: list[str] = field(default_factory=lambda: [MODEL])
    script: list[Reply] = field(default_factory=list)  # replies for the next requests, one each, then normal
    always: Reply | None = None  # reply to every request
    fail_texts: dict[str, Reply] = field(default_factory=dict)  # reply to requests for these source texts
    delays: dict[str, float] = field(default_factory=dict)  # before the answer, per source text
    held: set[str] = field(default_factory=set)  # source texts whose answers wait for `release`
    release: threading.Event = field(default_factory=threading.Event)
    answers: int = 0  # answers sent to POST requests
    decorate: bool = False  # wrap answers like a chatty model
    requests: list[dict[str, Any]] = field(default_factory=list)
    active: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def source_text(prompt: str) -> str:
    return re.findall(r"^English: (.*)$", prompt, re.MULTILINE)[-1]


class FakeVLLMHandler(BaseHTTPRequestHandler):
    server: FakeVLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, reply: Reply) -> None:
        payload = (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass

    def do_GET(self) -> None:
        st = self.server.state
        if self.path == "/v1/models":
            self._send(Reply(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in st.models]}))
        else:
            self._send(Reply(404, {"detail": "Not Found"}))

    def do_POST(self) -> None:
        st = self.server.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path == "/v1/chat/completions"
        if not chat and self.path != "/v1/completions":
            self._send(Reply(404, {"detail": "Not Found"}))
            return
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        text = source_text(prompt)
        with st.lock:
            st.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body, "text": text})
            st.active += 1
            st.peak = max(st.peak, st.active)
            scripted = st.script.pop(0) if st.script else None
        active = True
        try:
            reply = scripted or st.always or st.fail_texts.get(text)
            if reply is None and body["model"] not in st.models:
                reply = Reply(404, {"object": "error", "message": f"The model `{body['model']}` does not exist.",
                                    "type": "NotFoundError", "code": 404})
            if text in st.held:
                st.release.wait(HOLD_CAP)
            delay = st.delays.get(text, 0.0)
            if delay:
                time.sleep(delay)
            if reply is None:
                reply = Reply(200, self._completion(body, text, chat))
            # no longer active once the answer goes out: the client may send its next request as soon as it has
            # read this one, before this thread would get back to the counter (a peak of max_concurrency + 1)
            with st.lock:
                st.active -= 1
                active = False
            self._send(reply)
            with st.lock:
                st.answers += 1
        finally:
            if active:
                with st.lock:
                    st.active -= 1

    def _completion(self, body: dict[str, Any], text: str, chat: bool) -> dict[str, Any]:
        n = body.get("n", 1)
        best = fake_translate(text)
        outs = []
        for i in range(n):
            # sampled choices: even ones lose the first bracket pair, odd ones equal the greedy translation
            out = drop_first_pair(best) if body.get("temperature", 1.0) > 0 and i % 2 == 0 else best
            if self.server.state.decorate:
                out = f'Translation: "{out}"\n\nNote: this is a word-by-word translation.'
            outs.append(out)
        if chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": o}, "finish_reason": "stop"}
                       for i, o in enumerate(outs)]
        else:
            choices = [{"index": i, "text": " " + o, "finish_reason": "stop"} for i, o in enumerate(outs)]
        return {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
                "model": body["model"], "choices": choices}


class FakeVLLMServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeVLLMHandler)
        self.state = FakeState()

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet about dropped clients
        pass

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeVLLMServer]:
    server = FakeVLLMServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_vllm(fake_server: FakeVLLMServer) -> Iterator[FakeVLLMServer]:
    fake_server.state = FakeState()
    state = fake_server.state
    yield fake_server
    state.release.set()  # no handler stays held after its test


def make(server: FakeVLLMServer, **options: Any) -> OpenAITranslator:
    """A translator on the fake server with tiny backoffs."""
    defaults: dict[str, Any] = dict(base_url=server.base_url, api_key=API_KEY, timeout=2.0, max_retries=3,
                                    backoff_base=0.001, backoff_max=0.01, trust_env=False)
    return OpenAITranslator(MODEL, **{**defaults, **options})


def span(text: str, word: str, label: str) -> Span:
    start = text.index(word)
    return Span(start=start, end=start + len(word), label=label, text=word)


# -- plain translation ----------------------------------------------------------------------------------------


def test_plain_translation_fake_vllm_order_and_concurrency_bound(fake_vllm: FakeVLLMServer) -> None:
    texts = [f"The president visited Paris, sentence number {i}." for i in range(12)]
    # the first sentences answer last, so completion order differs from input order
    fake_vllm.state.delays = {t: 0.01 * (12 - i) for i, t in enumerate(texts)}
    tr = make(fake_vllm, max_concurrency=4)
    out = tr.translate(texts, "en", "es")
    assert out == [f"El presidente visitó París, frase número {i}." for i in range(12)]
    st = fake_vllm.state
    assert len(st.requests) == 12
    assert 2 <= st.peak <= 4
    for req in st.requests:
        body = req["body"]
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["Authorization"] == f"Bearer {API_KEY}"
        assert body["model"] == MODEL
        assert body["temperature"] == 0
        assert 0 < body["max_tokens"] <= 1024
        assert "n" not in body
        system, user = body["messages"]
        assert system["role"] == "system" and user["role"] == "user"
        assert "from English into Spanish" in user["content"]
        assert user["content"].endswith(f"English: {req['text']}\nSpanish:")
        assert "square brackets" not in user["content"]


def test_translator_protocol_and_edge_inputs_fake_vllm(fake_vllm: FakeVLLMServer) -> None:
    tr = make(fake_vllm)
    assert isinstance(tr, Translator)
    assert tr.name == f"openai:{MODEL}"
    assert tr.translate([], "en", "es") == []
    # empty input needs no request; line breaks inside a sentence are collapsed
    assert tr.translate(["", "hello\nworld"], "eng", "spa") == ["", "hola mundo"]
    assert [r["text"] for r in fake_vllm.state.requests] == ["hello world"]


def test_completions_endpoint_fake_vllm(fake_vllm: FakeVLLMServer) -> None:
    tr = make(fake_vllm, endpoint="completions")
    assert tr.translate(["Hello world"], "en", "es") == ["Hola mundo"]
    (req,) = fake_vllm.state.requests
    assert req["path"] == "/v1/completions"
    assert req["body"]["stop"] == ["\n"]
    assert req["body"]["prompt"].startswith("You are a professional translator")
    assert req["body"]["prompt"].endswith("English: Hello world\nSpanish:")


def test_custom_prompt_and_no_api_key_fake_vllm(fake_vllm: FakeVLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("CROP_OPENAI_API_KEY", raising=False)
    tr = make(fake_vllm, api_key=None, system_prompt=None, prompt="{src} to {tgt}, please.\nEnglish: {text}\n",
              max_tokens=77, extra_body={"top_k": 1})
    assert tr.translate(["big house {x}"], "en", "es") == ["grande casa {x}"]
    (req,) = fake_vllm.state.requests
    assert "Authorization" not in req["headers"]
    content = "English to Spanish, please.\nEnglish: big house {x}\n"
    assert req["body"]["messages"] == [{"role": "user", "content": content}]
    assert req["body"]["max_tokens"] == 77 and req["body"]["top_k"] == 1
    with pytest.raises(ValueError, match="template"):
        make(fake_vllm, prompt="Translate {source}")


def test_api_key_from_env_fake_vllm(fake_vllm: FakeVLLMServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-generic")
    monkeypatch.setenv("CROP_OPENAI_API_KEY", "sk-crop")
    tr = make(fake_vllm, api_key=None)
    tr.translate(["hello"], "en", "es")
    assert fake_vllm.state.requests[0]["headers"]["Authorization"] == "Bearer sk-crop"


def test_chatty_reply_cleaned_fake_vllm(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.decorate = True
    tr = make(fake_vllm)
    assert tr.translate(["The big city today."], "en", "es") == ["El grande ciudad hoy."]


# -- labeled translation --------------------------------------------------------------------------------------


def test_labeled_translation_fake_vllm_keeps_brackets(fake_vllm: FakeVLLMServer) -> None:
    text = "The president met Obama in London yesterday."
    items = [
        LabeledItem(text=text, spans=[span(text, "Obama", "PER"), span(text, "London", "LOC")]),
        LabeledItem(text="Hello world."),  # no spans: the plain prompt
    ]
    tr = make(fake_vllm)
    res = tr.translate_labeled(items, "en", "es")
    assert res[0].text == "El presidente conoció a Obama en Londres ayer."
    assert [(s.text, s.label, s.ref) for s in res[0].spans] == [("Obama", "PER", 0), ("Londres", "LOC", 1)]
    assert all(res[0].text[s.start : s.end] == s.text for s in res[0].spans)
    assert res[0].lost == [] and res[0].alternatives == []
    assert res[0].raw == "El presidente conoció a [ Obama ] en [ Londres ] ayer."
    assert res[1].text == "Hola mundo." and res[1].spans == []
    by_text = {r["text"]: r for r in fake_vllm.state.requests}
    labeled_prompt = by_text["The president met [ Obama ] in [ London ] yesterday."]["body"]["messages"][-1]["content"]
    assert "square brackets" in labeled_prompt and "add no other brackets" in labeled_prompt
    assert "[ Barack Obama ] visitó [ París ]" in labeled_prompt  # few-shot example
    assert "square brackets" not in by_text["Hello world."]["body"]["messages"][-1]["content"]


def test_labeled_translation_fake_vllm_nbest_alternatives(fake_vllm: FakeVLLMServer) -> None:
    texts = ["Obama visited Paris yesterday.", "The president visited London and Paris."]
    items = [
        LabeledItem(text=texts[0], spans=[span(texts[0], "Obama", "PER"), span(texts[0], "Paris", "LOC")]),
        LabeledItem(text=texts[1], spans=[span(texts[1], "London", "LOC"), span(texts[1], "Paris", "LOC")]),
    ]
    tr = make(fake_vllm, n=3, max_concurrency=2)
    res = tr.translate_labeled(items, "en", "es")
    # best = greedy with every pair; the sampled request (n=2) gives one without the first pair and one
    # equal to the best, which is dropped as a duplicate
    assert [(s.text, s.ref) for s in res[0].spans] == [("Obama", 0), ("París", 1)]
    (alt,) = res[0].alternatives
    assert alt.text == "Obama visitó París ayer."
    assert [(s.text, s.ref) for s in alt.spans] == [("París", 1)] and alt.lost == [0]
    assert [(s.text, s.ref) for s in res[1].spans] == [("Londres", 0), ("París", 1)]
    assert [(s.text, s.ref) for s in res[1].alternatives[0].spans] == [("París", 1)]
    reqs = fake_vllm.state.requests
    assert len(reqs) == 4 and fake_vllm.state.peak <= 2
    assert sorted((r["body"]["temperature"], r["body"].get("n", 1)) for r in reqs) == [(0, 1), (0, 1), (0.7, 2),
                                                                                         (0.7, 2)]


def test_labeled_sampling_single_request_fake_vllm(fake_vllm: FakeVLLMServer) -> None:
    text = "Obama visited Paris."
    tr = make(fake_vllm, n=2, temperature=0.5)
    (res,) = tr.translate_labeled([LabeledItem(text=text, spans=[span(text, "Paris", "LOC")])], "en", "es")
    (req,) = fake_vllm.state.requests
    assert req["body"]["n"] == 2 and req["body"]["temperature"] == 0.5
    # choice 0 (the server's first) is the best even though it lost its pair; choice 1 is the alternative
    assert res.text == "Obama visitó París." and res.lost == [0]
    assert [(s.text, s.ref) for s in res.alternatives[0].spans] == [("París", 0)]


# -- failures and retries -------------------------------------------------------------------------------------


def test_retry_fake_vllm_429_honours_retry_after(fake_vllm: FakeVLLMServer) -> None:
    too_many = Reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.2"})
    fake_vllm.state.script = [too_many, too_many]
    tr = make(fake_vllm)
    t0 = time.perf_counter()
    assert tr.translate(["hello"], "en", "es") == ["hola"]
    assert time.perf_counter() - t0 >= 0.38  # two waits of Retry-After, not the 1 ms backoff
    assert len(fake_vllm.state.requests) == 3


def test_retry_fake_vllm_500_then_success(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.script = [Reply(500, "Internal Server Error"), Reply(503, {"error": "busy"})]
    tr = make(fake_vllm, max_retries=2)
    assert tr.translate(["hello world", "the city"], "en", "es") == ["hola mundo", "el ciudad"]
    assert len(fake_vllm.state.requests) == 4


def test_fake_vllm_500_exhausted_raises_with_status_and_body(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.always = Reply(500, {"object": "error", "message": "CUDA out of memory " + "x" * 2000})
    tr = make(fake_vllm, max_retries=2)
    with pytest.raises(TranslationServerError) as info:
        tr.translate(["hello"], "en", "es")
    msg = str(info.value)
    assert f"{fake_vllm.base_url}/chat/completions" in msg
    assert "HTTP 500" in msg and "CUDA out of memory" in msg and "3 attempts" in msg
    assert len(msg) < 800  # the body is truncated
    assert info.value.status == 500 and isinstance(info.value, RuntimeError)
    assert len(fake_vllm.state.requests) == 3


def test_fake_vllm_400_not_retried(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.always = Reply(400, {"object": "error", "message": "This model's maximum context length is 4096",
                                         "type": "BadRequestError", "code": 400})
    tr = make(fake_vllm, max_retries=5)
    with pytest.raises(TranslationServerError, match=r"HTTP 400: This model's maximum context length is 4096"):
        tr.translate(["hello"], "en", "es")
    assert len(fake_vllm.state.requests) == 1


def test_fake_vllm_unknown_model_is_a_clear_error(fake_vllm: FakeVLLMServer) -> None:
    tr = OpenAITranslator("no-such-model", fake_vllm.base_url, trust_env=False, max_retries=3)
    with pytest.raises(TranslationServerError, match="HTTP 404: The model `no-such-model` does not exist"):
        tr.translate(["hello"], "en", "es")
    assert len(fake_vllm.state.requests) == 1


def test_fake_vllm_timeout_retried_then_error(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.held = {"hello"}  # not answered while the client waits
    tr = make(fake_vllm, timeout=0.15, max_retries=1)
    with pytest.raises(TranslationServerError, match=r"no answer within 0.15 s.*2 attempts"):
        tr.translate(["hello"], "en", "es")
    assert fake_vllm.state.answers == 0  # the client gave up on its own timeout, it did not wait for the answer
    assert len(fake_vllm.state.requests) == 2


def test_fake_vllm_connection_refused_retried_then_error(fake_vllm: FakeVLLMServer) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tr = OpenAITranslator(MODEL, f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_base=0.001, trust_env=False)
    with pytest.raises(TranslationServerError, match=r"connection failed.*3 attempts"):
        tr.translate(["hello"], "en", "es")


def test_fake_vllm_one_failing_sentence_cancels_the_others(fake_vllm: FakeVLLMServer) -> None:
    texts = [f"sentence {i}" for i in range(8)]
    fake_vllm.state.fail_texts = {"sentence 5": Reply(400, {"error": {"message": "bad sentence"}})}
    fake_vllm.state.held = set(texts) - {"sentence 5"}  # the others are answered only once the client has failed
    tr = make(fake_vllm, max_concurrency=8)
    with pytest.raises(TranslationServerError, match="bad sentence"):
        tr.translate(texts, "en", "es")
    # it failed on the 400, without waiting for the 7 held answers (they wait for `release`, not set yet); the
    # server counts its 400 after sending it, so the client may have raised a moment before that count
    deadline = time.monotonic() + 10
    while fake_vllm.state.answers < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_vllm.state.answers == 1
    fake_vllm.state.release.set()
    fake_vllm.state = FakeState()
    assert tr.translate(["hello"], "en", "es") == ["hola"]  # nothing left behind


# -- calling contexts -----------------------------------------------------------------------------------------


def test_fake_vllm_called_inside_running_event_loop(fake_vllm: FakeVLLMServer) -> None:
    tr = make(fake_vllm, max_concurrency=3)

    async def main() -> list[str]:
        await asyncio.sleep(0)
        return tr.translate(["hello world", "big house"], "en", "es")

    assert asyncio.run(main()) == ["hola mundo", "grande casa"]


def test_fake_vllm_called_from_threads(fake_vllm: FakeVLLMServer) -> None:
    tr = make(fake_vllm, max_concurrency=2)
    results: dict[int, list[str]] = {}

    def work(i: int) -> None:
        results[i] = tr.translate([f"hello {i}", "world"], "en", "es")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: [f"hola {i}", "mundo"] for i in range(3)}


# -- health check ---------------------------------------------------------------------------------------------


def test_check_fake_vllm(fake_vllm: FakeVLLMServer) -> None:
    fake_vllm.state.models = ["other-model", MODEL]
    assert make(fake_vllm).check() == ["other-model", MODEL]
    assert fake_vllm.state.requests == []  # GET /models is not a translation
    missing = OpenAITranslator("missing-model", fake_vllm.base_url, trust_env=False)
    with pytest.raises(TranslationServerError, match=r"'missing-model' is not served at .*other-model, fake/llm-7b"):
        missing.check()
    bad_url = OpenAITranslator(MODEL, fake_vllm.base_url.removesuffix("/v1"), trust_env=False)
    with pytest.raises(TranslationServerError, match="HTTP 404"):
        bad_url.check()


def test_check_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tr = OpenAITranslator(MODEL, f"http://127.0.0.1:{port}/v1", trust_env=False, timeout=2)
    with pytest.raises(TranslationServerError, match="cannot reach the translation server"):
        tr.check()


# -- languages, registry, post-processing (no server) -------------------------------------------------------


def test_pairs_and_language_names() -> None:
    tr = OpenAITranslator(MODEL, languages=["en", "spa", "ca_ES"])
    assert tr.pairs() == [("ca", "en"), ("ca", "es"), ("en", "ca"), ("en", "es"), ("es", "ca"), ("es", "en")]
    with pytest.raises(UnsupportedPair, match="en->sw"):
        tr.translate(["hello"], "en", "sw")
    with pytest.raises(UnsupportedPair):
        tr.translate(["hello"], "en", "en")
    default = set(OpenAITranslator(MODEL).pairs())
    assert {("en", "es"), ("sw", "en"), ("en", "zh"), ("eu", "gl"), ("en", "pcm")} <= default
    assert language_name("es") == language_name("spa") == "Spanish"
    assert language_name("zh-Hans") == "Chinese"
    assert language_name("kin") == "Kinyarwanda" and language_name("eus") == "Basque"
    with pytest.raises(ValueError, match="no language name for code 'xx'"):
        OpenAITranslator(MODEL, languages=["en", "xx"])
    custom = OpenAITranslator(MODEL, languages={"en": "English", "tlh": "Klingon"})
    assert custom.pairs() == [("en", "tlh"), ("tlh", "en")]
    assert custom._pair_names("en", "tlh") == ("English", "Klingon")


def test_registry_spec_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROP_OPENAI_BASE_URL", raising=False)
    tr = load_translator("openai:Qwen/Qwen2.5-7B-Instruct")
    assert isinstance(tr, OpenAITranslator)
    assert (tr.model, tr.base_url) == ("Qwen/Qwen2.5-7B-Instruct", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("CROP_OPENAI_BASE_URL", "http://gpu-box:9000/v1/")
    tr = load_translator("openai:my-llm", n=4, max_concurrency=32)
    assert isinstance(tr, OpenAITranslator)
    assert (tr.model, tr.base_url, tr.n, tr.max_concurrency) == ("my-llm", "http://gpu-box:9000/v1", 4, 32)
    tr = load_translator("openai:org/model:q4@https://user:pw@llm.example.org/v1")
    assert isinstance(tr, OpenAITranslator)
    assert (tr.model, tr.base_url) == ("org/model:q4", "https://user:pw@llm.example.org/v1")
    assert parse_model_spec("m@localhost:8001/v1") == ("m", "http://localhost:8001/v1")
    for bad in ("openai:", "openai:@http://x/v1", "openai:model@"):
        with pytest.raises(ValueError, match="openai:<model>"):
            load_translator(bad)
    with pytest.raises(ValueError, match="available: apertium, transformers, ctranslate2, openai"):
        load_translator("nosuch:model")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Hola mundo", "Hola mundo"),
        ('  "Hola mundo."  ', "Hola mundo."),
        ("«Hola mundo.»", "Hola mundo."),
        ("“Hola mundo.”", "Hola mundo."),
        ("Translation: Hola mundo.", "Hola mundo."),
        ('Spanish translation: "Hola mundo."', "Hola mundo."),
        ("Spanish: Hola mundo.", "Hola mundo."),
        ("**Translation:** Hola mundo.", "Hola mundo."),
        ("Here is the translation:\n\nHola mundo.", "Hola mundo."),
        ("Sure! Here's the Spanish translation:\nHola mundo.\n\nNote: informal register.", "Hola mundo."),
        ("```\nHola [ mundo ].\n```", "Hola [ mundo ]."),
        ("```text\nHola mundo.\n```\nExplanation: ...", "Hola mundo."),
        ("<think>The user wants Spanish.</think>\n\nHola mundo.", "Hola mundo."),
        ("<think>The user wants Spanish. Let me think", ""),
        ("Hola mundo.\n(Literally: hello world.)", "Hola mundo."),
        ('"Hola" dijo "él"', '"Hola" dijo "él"'),  # not one quoted string
        ("Result: 3-1 for Madrid.", "Result: 3-1 for Madrid."),  # a real sentence, not a label
        ("Spanish:\nHola mundo.", "Hola mundo."),
        ("", ""),
    ],
)
def test_clean_output(reply: str, expected: str) -> None:
    assert clean_output(reply, source="Hello world.", target="Spanish") == expected


def test_clean_output_keeps_quotes_the_source_has() -> None:
    assert clean_output('"Hola mundo."', source='"Hello world."', target="Spanish") == '"Hola mundo."'


def test_retry_after_parsing() -> None:
    assert _retry_after("2") == 2.0 and _retry_after("0.25") == 0.25 and _retry_after(None) is None
    assert _retry_after("soon") is None and _retry_after("100000") == 300.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (_retry_after(future) or 0) <= 31


def test_prompt_templates_have_the_placeholders() -> None:
    for template in (PLAIN_PROMPT, LABELED_PROMPT):
        filled = template.format(src="English", tgt="Basque", text="[ Bilbao ] is big.")
        assert filled.endswith("English: [ Bilbao ] is big.\nBasque:")
