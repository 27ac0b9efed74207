"""An LLM behind an OpenAI-compatible server (`vllm serve <model>`, llama.cpp, TGI, OpenAI itself) as a
translation engine.

One request per sentence, sent concurrently (at most `max_concurrency` in flight) from a private event loop,
so the public methods stay synchronous. Labeled translation goes through the ``bracket`` marker codec
(``[ entity ]``): the prompt asks the model to keep each bracket pair around the translation of the words it
encloses, and `n > 1` adds sampled alternatives (n-best, best first) that the projector can fall back on.
Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff and jitter,
honouring `Retry-After`; anything else, or a failure that outlives the retries, raises
`TranslationServerError`, which the pipeline isolates to the sentence that caused it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("the openai translation engine needs httpx: pip install 'httpx>=0.27'") from exc

from crop.langcodes import to_iso1
from crop.markers import get_codec
from crop.remote_http import retry_after_seconds
from crop.translate.base import UnsupportedPair
from crop.translate.labeled import translate_labeled_with_codec
from crop.types import LabeledItem, LabeledResult

__all__ = [
    "DEFAULT_BASE_URL",
    "LABELED_PROMPT",
    "LANGUAGE_NAMES",
    "PLAIN_PROMPT",
    "SYSTEM_PROMPT",
    "OpenAITranslator",
    "TranslationServerError",
    "clean_output",
    "language_name",
    "parse_model_spec",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"

#: English names of the languages the prompts can name, by ISO 639-1 code (ISO 639-3 where there is none).
LANGUAGE_NAMES: dict[str, str] = {
    "af": "Afrikaans", "am": "Amharic", "an": "Aragonese", "ar": "Arabic", "ast": "Asturian", "az": "Azerbaijani",
    "be": "Belarusian", "bg": "Bulgarian", "bm": "Bambara", "bn": "Bengali", "br": "Breton", "bs": "Bosnian",
    "ca": "Catalan", "cs": "Czech", "cy": "Welsh", "da": "Danish", "de": "German", "ee": "Ewe", "el": "Greek",
    "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "ga": "Irish", "gl": "Galician", "gu": "Gujarati", "ha": "Hausa",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "hy": "Armenian", "id": "Indonesian",
    "ig": "Igbo", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ka": "Georgian", "kk": "Kazakh",
    "km": "Khmer", "kn": "Kannada", "ko": "Korean", "ku": "Kurdish", "ky": "Kyrgyz", "lb": "Luxembourgish",
    "lg": "Luganda", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese", "my": "Burmese",
    "nb": "Norwegian Bokmål", "ne": "Nepali", "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian",
    "ny": "Chichewa", "oc": "Occitan", "om": "Oromo", "pa": "Punjabi", "pl": "Polish", "ps": "Pashto",
    "pt": "Portuguese", "qu": "Quechua", "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda", "si": "Sinhala",
    "sk": "Slovak", "sl": "Slovenian", "sn": "Shona", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya",
    "tl": "Tagalog", "tn": "Setswana", "tr": "Turkish", "tw": "Twi", "uk": "Ukrainian", "ur": "Urdu",
    "uz": "Uzbek", "vi": "Vietnamese", "wo": "Wolof", "xh": "Xhosa", "yo": "Yoruba", "zh": "Chinese",
    "zu": "Zulu",
    # no ISO 639-1 code
    "bbj": "Ghomálá'", "fon": "Fon", "luo": "Dholuo", "mos": "Mossi", "pcm": "Nigerian Pidgin",
}

SYSTEM_PROMPT = (
    "You are a professional translator. You translate faithfully and completely, and you reply with the "
    "translation only."
)

#: Plain translation; placeholders: {src} and {tgt} (English language names) and {text}.
PLAIN_PROMPT = (
    "Translate the following text from {src} into {tgt}. Reply with the {tgt} translation only, on a single "
    "line, without quotes, notes or explanations.\n\n"
    "{src}: {text}\n{tgt}:"
)

#: Labeled translation with ``[ entity ]`` markers (the bracket codec); same placeholders as PLAIN_PROMPT.
LABELED_PROMPT = (
    "Translate the following text from {src} into {tgt}. Some words are enclosed in square brackets, like "
    "[ this ]. In the translation, put each pair of square brackets around the translation of the words it "
    "encloses, keep exactly as many bracket pairs as the text has, and add no other brackets. Reply with the "
    "{tgt} translation only, on a single line, without quotes, notes or explanations.\n\n"
    "Examples:\n"
    "English: [ Barack Obama ] visited [ Paris ] with [ Michelle ] last week.\n"
    "Spanish: [ Barack Obama ] visitó [ París ] con [ Michelle ] la semana pasada.\n"
    "English: The [ European Union ] fined [ Google ] in [ Brussels ].\n"
    "German: Die [ Europäische Union ] hat [ Google ] in [ Brüssel ] mit einer Geldstrafe belegt.\n\n"
    "Now the text to translate:\n"
    "{src}: {text}\n{tgt}:"
)

_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
_MAX_RETRY_AFTER = 300.0
_BODY_LIMIT = 500
_WS_RE = re.compile(r"\s+")


class TranslationServerError(RuntimeError):
    """The server failed (after the retries, where retrying made sense) or answered something unusable."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body


def parse_model_spec(arg: str) -> tuple[str, str | None]:
    """`<model>` or `<model>@<base_url>` (the part of an `openai:` spec after the colon) -> (model, base_url)."""
    m = re.match(r"^(.*?)@(https?://.*)$", arg)  # the first "@http": a URL may carry user:password@
    model, at, url = (m.group(1), "@", m.group(2)) if m else arg.rpartition("@") if "@" in arg else (arg, "", "")
    model, url = model.strip(), url.strip()
    if not model or (at and not url):
        raise ValueError(f"bad openai spec {'openai:' + arg!r}: use openai:<model> or openai:<model>@<base_url>, "
                         "e.g. openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
    if url and not url.startswith(("http://", "https://")):
        url = "http://" + url
    return model, url or None


# -- languages --------------------------------------------------------------------------------------------------


def _normalize_code(code: str) -> str:
    return to_iso1(code)


def language_name(code: str, names: Mapping[str, str] | None = None) -> str:
    """The English name of a language code (ISO 639-1 or -3, region suffixes ignored); ValueError if unknown."""
    table = LANGUAGE_NAMES if names is None else names
    key = _normalize_code(code)
    if key in table:
        return table[key]
    raise ValueError(f"no language name for code {code!r}: pass languages={{{key!r}: 'Name', ...}} "
                     "to OpenAITranslator")


# -- output cleaning ------------------------------------------------------------------------------------------

_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"^\s*(```|~~~)")
# a line that only announces the translation ("Here is the translation:", "Spanish translation:")
_PREAMBLE_RE = re.compile(r"^.{0,60}\btranslat\w*\b.{0,40}[:：]\W*$", re.IGNORECASE)
# "Translation:", "Spanish translation:", "The translation into Spanish:", "Translated text:" (not "Output:" or
# "Result:", which can begin a real sentence when translating into English)
_GENERIC_PREFIX = r"(?:the\s+)?(?:\w+\s+)?translation(?:\s+(?:in|into)\s+\w+)?|translated\s+(?:text|sentence)"
_QUOTES = {'"': '"', "'": "'", "“": "”", "”": "”", "«": "»", "»": "«", "„": "“", "‘": "’", "「": "」",
           "『": "』", "`": "`"}


def _strip_quotes(line: str, source: str) -> str:
    if len(line) < 2 or source.lstrip()[:1] in _QUOTES:
        return line
    close = _QUOTES.get(line[0])
    if close is None or line[-1] != close:
        return line
    inner = line[1:-1]
    if close in inner or line[0] in inner:  # "a" and "b": not one quoted string
        return line
    return inner.strip()


def clean_output(output: str, source: str = "", target: str = "") -> str:
    """The translation in a model's reply: reasoning (<think>), code fences, preambles ("Here is the
    translation:"), "Translation:" / "<target name>:" prefixes and quotes around the whole line are removed,
    and only the first line is kept (models append notes). `source` is the text that was translated (quotes it
    starts with are kept), `target` the target language's name."""
    text = _THINK_RE.sub("", output)
    if re.search(r"<think>", text, re.IGNORECASE):  # reasoning cut off by max_tokens: no translation
        text = re.split(r"<think>", text, flags=re.IGNORECASE)[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not _FENCE_RE.match(ln)]
    while len(lines) > 1 and (_PREAMBLE_RE.match(lines[0])
                              or (target and lines[0].strip(" *:：").casefold() == target.casefold())):
        lines.pop(0)
    if not lines:
        return ""
    line = lines[0]
    names = [_GENERIC_PREFIX] + ([re.escape(target) + r"(?:\s+translation)?"] if target else [])
    prefix = re.compile(r"^\**\s*(?:" + "|".join(names) + r")\s*\**\s*[:：]\s*\**\s*", re.IGNORECASE)
    while True:
        before = line
        line = prefix.sub("", line, count=1).strip()
        if line.startswith("**") and line.endswith("**") and len(line) > 4:
            line = line[2:-2].strip()
        line = _strip_quotes(line, source)
        if line == before:
            return line


# -- the engine ---------------------------------------------------------------------------------------------------


def _error_message(body: str) -> str:
    """The server's own error message in a response body (OpenAI, vLLM, FastAPI shapes), else the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if msg:
                return str(msg)
        elif isinstance(err, str):
            return err
        if "detail" in data:
            return str(data["detail"])
    return body.strip()


def _truncate(s: str, limit: int = _BODY_LIMIT) -> str:
    return s if len(s) <= limit else s[:limit] + "…"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), at most 300 s."""
    return retry_after_seconds(value, _MAX_RETRY_AFTER)


async def _gather_or_cancel(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await all, results in order; on the first failure cancel the others, wait for them, re-raise."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _run_sync(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code; in a thread whose event loop is running (called
    from async code), in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crop-openai") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class OpenAITranslator:
    """Translation by an LLM behind an OpenAI-compatible server (`/chat/completions` or `/completions`)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        endpoint: Literal["chat", "completions"] = "chat",
        languages: Sequence[str] | Mapping[str, str] | None = None,
        n: int = 1,
        temperature: float = 0.0,
        sample_temperature: float = 0.7,
        max_tokens: int | None = None,
        max_tokens_cap: int = 1024,
        max_concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        system_prompt: str | None = SYSTEM_PROMPT,
        prompt: str = PLAIN_PROMPT,
        labeled_prompt: str = LABELED_PROMPT,
        extra_body: Mapping[str, Any] | None = None,
        trust_env: bool = True,
    ) -> None:
        """
        model: the served model name (`GET /models` ids). base_url: up to and including `/v1`; default
        CROP_OPENAI_BASE_URL or http://127.0.0.1:8000/v1. api_key: sent as `Authorization: Bearer`; default
        CROP_OPENAI_API_KEY or OPENAI_API_KEY (none: no header). endpoint: "chat" or "completions" (for base
        models; the reply stops at the first newline). languages: codes the model is trusted with (a mapping
        gives their names), default every LANGUAGE_NAMES entry. n: hypotheses per labeled sentence (best
        first); at temperature 0 the best is the greedy one and the n-1 others come from a second, sampled
        request at `sample_temperature`. max_tokens: fixed limit per reply, default 32 + 2 per input
        character, at most `max_tokens_cap`. timeout: seconds per request; max_retries: retries after the
        first attempt on 408/409/425/429/5xx, timeouts and connection errors, waiting
        `backoff_base * 2**attempt` (capped at `backoff_max`, with jitter) or the server's Retry-After.
        prompt / labeled_prompt: templates with {src}, {tgt}, {text}. extra_body: more request fields
        (e.g. vLLM's `top_k`, `repetition_penalty`). trust_env: use proxy settings from the environment.
        """
        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', not {endpoint!r}")
        if n < 1 or max_concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need n >= 1, max_concurrency >= 1, max_retries >= 0 and timeout > 0")
        for name, template in (("prompt", prompt), ("labeled_prompt", labeled_prompt)):
            try:
                template.format(src="A", tgt="B", text="C")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"{name} must be a str.format template with only {{src}}, {{tgt}} and "
                                 f"{{text}} (literal braces doubled): {exc}") from None
        self.model = model
        self.name = f"openai:{model}"
        url = base_url or os.environ.get("CROP_OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = url.rstrip("/")
        self.api_key = api_key or os.environ.get("CROP_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        self.endpoint = endpoint
        self.n = n
        self.temperature = temperature
        self.sample_temperature = sample_temperature
        self.max_tokens = max_tokens
        self.max_tokens_cap = max_tokens_cap
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.system_prompt = system_prompt
        self.prompt = prompt
        self.labeled_prompt = labeled_prompt
        self.extra_body = dict(extra_body or {})
        self.trust_env = trust_env
        self._codec = get_codec("bracket")
        self._names: dict[str, str] = {}
        if languages is None:
            self._names = dict(LANGUAGE_NAMES)
        elif isinstance(languages, Mapping):
            self._names = {_normalize_code(k): v for k, v in languages.items()}
        else:
            self._names = {_normalize_code(c): language_name(c) for c in languages}

    def __repr__(self) -> str:
        return f"OpenAITranslator(model={self.model!r}, base_url={self.base_url!r}, endpoint={self.endpoint!r})"

    # -- languages ---------------------------------------------------------------------------------------------

    def pairs(self) -> list[tuple[str, str]]:
        """Every ordered pair of distinct configured languages."""
        codes = sorted(self._names)
        return [(a, b) for a in codes for b in codes if a != b]

    def _pair_names(self, src: str, tgt: str) -> tuple[str, str]:
        a, b = _normalize_code(src), _normalize_code(tgt)
        if a not in self._names or b not in self._names or a == b:
            raise UnsupportedPair(f"{self.name} is configured for {', '.join(sorted(self._names))}; "
                                  f"no {src}->{tgt} (set `languages`)")
        return self._names[a], self._names[b]

    # -- public API --------------------------------------------------------------------------------------------

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        """Translate each text (the first choice), in input order."""
        names = self._pair_names(src, tgt)
        hyps = _run_sync(lambda: self._translate_all(list(texts), names, [False] * len(texts)))
        return [h[0] for h in hyps]

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        """Translate with ``[ entity ]`` markers; with `n > 1` each result carries its alternatives."""
        names = self._pair_names(src, tgt)
        labeled = [bool(it.spans) for it in items]

        def translate_n(marked: list[str]) -> list[list[str]]:
            return _run_sync(lambda: self._translate_all(marked, names, labeled))

        return translate_labeled_with_codec(items, self._codec, translate_n)

    def check(self) -> list[str]:
        """Verify that the server answers `GET /models` and serves `model`; returns the served model ids."""
        url = f"{self.base_url}/models"
        try:
            with httpx.Client(timeout=self.timeout, trust_env=self.trust_env) as client:
                resp = client.get(url, headers=self._headers())
        except httpx.HTTPError as exc:
            raise TranslationServerError(f"cannot reach the translation server at {url}: {type(exc).__name__}: "
                                         f"{exc}", url=url) from exc
        if resp.status_code != 200:
            body = _truncate(_error_message(resp.text))
            raise TranslationServerError(f"GET {url} failed with HTTP {resp.status_code}: {body}", url=url,
                                         status=resp.status_code, body=body)
        try:
            served = [str(m["id"]) for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TranslationServerError(f"GET {url} returned no model list: {_truncate(resp.text)}",
                                         url=url, status=resp.status_code) from exc
        if self.model not in served:
            raise TranslationServerError(
                f"model {self.model!r} is not served at {self.base_url} (it serves: {', '.join(served) or 'none'})",
                url=url, status=resp.status_code)
        return served

    # -- requests ----------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _body(self, text: str, template: str, names: tuple[str, str], n: int, temperature: float) -> dict[str, Any]:
        user = template.format(src=names[0], tgt=names[1], text=text)
        limit = self.max_tokens or min(self.max_tokens_cap, 32 + 2 * len(text))
        body: dict[str, Any] = {"model": self.model, "temperature": temperature, "max_tokens": limit}
        if n > 1:
            body["n"] = n
        if self.endpoint == "chat":
            messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            body["messages"] = [*messages, {"role": "user", "content": user}]
        else:
            body["prompt"] = f"{self.system_prompt}\n\n{user}" if self.system_prompt else user
            body["stop"] = ["\n"]
        body.update(self.extra_body)
        return body

    async def _translate_all(self, texts: list[str], names: tuple[str, str], labeled: list[bool]) -> list[list[str]]:
        if not texts:
            return []
        sem = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers(),
                                     trust_env=self.trust_env) as client:
            return await _gather_or_cancel(
                [self._hypotheses(client, sem, t, names, lab) for t, lab in zip(texts, labeled, strict=True)])

    async def _hypotheses(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, text: str,
                          names: tuple[str, str], labeled: bool) -> list[str]:
        """One sentence: its hypotheses, cleaned and deduplicated, best first (at least one)."""
        text = _WS_RE.sub(" ", text).strip()
        if not text:
            return [""]
        template = self.labeled_prompt if labeled else self.prompt
        k = self.n if labeled else 1
        if k == 1 or self.temperature > 0:
            outs = await self._complete(client, sem, self._body(text, template, names, k, self.temperature))
        else:  # greedy best + sampled alternatives
            best, alts = await _gather_or_cancel([
                self._complete(client, sem, self._body(text, template, names, 1, self.temperature)),
                self._complete(client, sem, self._body(text, template, names, k - 1, self.sample_temperature)),
            ])
            outs = best[:1] + alts
        hyps: list[str] = []
        for i, out in enumerate(outs):
            h = clean_output(out, text, names[1])
            if i == 0 or (h and h not in hyps):
                hyps.append(h)
        return hyps

    async def _complete(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, body: dict[str, Any]) -> list[str]:
        """The choices' texts of one completion request, in choice order."""
        url = self.base_url + ("/chat/completions" if self.endpoint == "chat" else "/completions")
        data = await self._post(client, sem, url, body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            if self.endpoint == "chat":
                outs = [c["message"].get("content") or "" for c in choices]
            else:
                outs = [c.get("text") or "" for c in choices]
        except (KeyError, TypeError, AttributeError) as exc:
            raise TranslationServerError(f"POST {url} returned no choices: {_truncate(str(data))}",
                                         url=url, status=200) from exc
        if not outs:
            raise TranslationServerError(f"POST {url} returned no choices: {_truncate(str(data))}", url=url,
                                         status=200)
        if any(c.get("finish_reason") == "length" for c in choices):
            log.warning("translation cut off by max_tokens", extra={"model": self.model, "max_tokens":
                                                                     body.get("max_tokens")})
        return outs

    def _backoff(self, attempt: int) -> float:
        delay = min(self.backoff_max, self.backoff_base * 2**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    async def _post(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, url: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries; the decoded JSON answer, or TranslationServerError."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            wait: float | None = None
            async with sem:
                try:
                    async with asyncio.timeout(self.timeout):
                        resp = await client.post(url, json=body)
                except (TimeoutError, httpx.TimeoutException) as exc:
                    error = TranslationServerError(
                        f"POST {url}: no answer within {self.timeout:g} s ({type(exc).__name__})", url=url)
                except httpx.TransportError as exc:
                    error = TranslationServerError(f"POST {url}: connection failed: {type(exc).__name__}: {exc}",
                                                   url=url)
                else:
                    if resp.status_code == 200:
                        try:
                            data = resp.json()
                        except ValueError as exc:
                            raise TranslationServerError(f"POST {url} returned a non-JSON answer: "
                                                         f"{_truncate(resp.text)}", url=url, status=200) from exc
                        if not isinstance(data, dict):
                            raise TranslationServerError(f"POST {url} returned {_truncate(resp.text)}", url=url,
                                                         status=200)
                        return data
                    status = resp.status_code
                    message = _truncate(_error_message(resp.text))
                    error = TranslationServerError(f"POST {url} failed with HTTP {status}: {message}", url=url,
                                                   status=status, body=message)
                    if status < 500 and status not in _RETRYABLE_STATUS:
                        raise error
                    wait = _retry_after(resp.headers.get("retry-after"))
            if attempt + 1 == attempts:
                if attempts > 1:
                    raise TranslationServerError(f"{error} (gave up after {attempts} attempts)", url=error.url,
                                                 status=error.status, body=error.body)
                raise error
            delay = wait if wait is not None else self._backoff(attempt)
            log.warning("translation request failed, retrying",
                        extra={"url": url, "status": error.status, "attempt": attempt + 1, "delay_s": round(delay, 3),
                               "error": str(error)[:200]})
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover
