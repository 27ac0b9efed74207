"""The training pool: per language, the projected sentences of bulk jobs, each sentence text once.

Layout in the job storage (`crop.storage.Storage`, `CROP_STORAGE_ROOT`):

    pool/<lang>/<entry>.jsonl     one segment per added batch (`entry`: the `crop:projected` stream entry id that
                                  announced it, e.g. 1733550000000-0): the lines of that batch that were new to
                                  the pool, in batch order

and in Redis (the job store's):

    crop:pool:<lang>:owner        hash: sentence-text hash (16 bytes of blake2b) -> the entry whose segment holds it
    crop:pool:counts              hash: "<lang>:kept" / "<lang>:discarded" -> sentences in the pool

A line is the batch output's line (`ProjectionResult`: id, lang, text, tokens, tags, status, ...) plus `source`:
{"job", "batch", "entry"}. Only `kept` and `discarded` lines enter the pool (a `failed` one has no labels).

Why this order survives crashes: adding an entry first *claims* its sentences in one Lua script (HSETNX of each
hash to the entry id; a hash the same entry claimed before is its own again, so a redelivered entry gets exactly
the sentences it got the first time, and the counts move only on a first claim), then writes the segment (whole,
atomically, at a name fixed by the entry id), and only then is the entry acknowledged by the consumer. A crash
between claim and write leaves claims with no segment: the entry is still pending, and its redelivery claims the
same sentences and writes the segment. A crash after the write rewrites the same segment with the same lines.
Two consumers adding different entries that share a sentence never both keep it: HSETNX picks one. The
alternative, a set of hashes added after the segment is written, loses the second of two concurrent entries'
check-then-write races (or keeps both); the owner hash does not.

Scale: a million sentences are ~4000 segments of 256 lines, read in order (stream ids sort by time), and a Redis
hash of a million 16-byte fields (~90 MB). `rebuild_index` recreates the Redis side from the segments (a Redis
that lost its data)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import redis

from crop.io import dumps
from crop.storage import Storage

log = logging.getLogger(__name__)

PREFIX = "pool"
COUNTS_KEY = "crop:pool:counts"
STATUSES = ("kept", "discarded")
_SPACE = re.compile(r"\s+")

# KEYS: owner hash, counts hash. ARGV: entry id, lang, then (hash, status) pairs.
# Returns, per pair, 1 when the sentence is this entry's (claimed now, or by this entry before), else 0.
_CLAIM = """
local owner, counts, entry, lang = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local h, status = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', owner, h, entry) == 1 then
    redis.call('HINCRBY', counts, lang .. ':' .. status, 1)
    out[#out + 1] = 1
  elseif redis.call('HGET', owner, h) == entry then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
CLAIM_CHUNK = 2000  # pairs per script call: a huge batch never blocks Redis for long


def normalize_text(text: str) -> str:
    """The text a sentence is deduplicated by: NFC, whitespace runs as one space, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_hash(line: dict[str, Any]) -> bytes:
    """16 bytes of blake2b over the normalized text of a projection line (its tokens joined when it has no text)."""
    text = line.get("text") or " ".join(line.get("tokens") or [])
    return hashlib.blake2b(normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


def segment_key(lang: str, entry: str) -> str:
    return f"{PREFIX}/{lang}/{entry}.jsonl"


def _entry_order(key: str) -> tuple[int, int, str]:
    """Segments in stream order: "<ms>-<seq>.jsonl" sorted as numbers (others after them, by name)."""
    name = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    ms, _, seq = name.partition("-")
    if ms.isdigit() and seq.isdigit():
        return int(ms), int(seq), name
    return 1 << 62, 0, name


def _check_lang(lang: str) -> str:
    if not lang or not re.fullmatch(r"[A-Za-z0-9_-]+", lang):
        raise ValueError(f"bad language code {lang!r} for the pool")
    return lang


class Pool:
    """The training pool in `storage` (under `pool/`), its index in the Redis at `redis_client`."""

    def __init__(self, storage: Storage, redis_client: redis.Redis) -> None:
        self.storage = storage
        self.redis = redis_client
        self._claim = redis_client.register_script(_CLAIM)

    @classmethod
    def from_settings(cls, redis_url: str, storage_root: str) -> Pool:
        from crop.jobs.state import JobStore

        return cls(Storage(storage_root), JobStore(redis_url).redis)  # the job store's retrying client

    # ------------------------------------------------------------------------------------------------ adding

    def add(self, entry: str, lines: Iterable[dict[str, Any]], *, job: str = "", batch: int | str = "",
            ) -> dict[str, dict[str, int]]:
        """Add the kept and discarded `lines` of one batch (announced by stream entry `entry`): per language,
        {"kept", "discarded", "duplicates"} of the lines that are this entry's. Idempotent: adding the same entry
        again (a redelivery) writes the same segments with the same lines and counts nothing twice. Persisted
        when it returns (the caller may then acknowledge the entry)."""
        if not re.fullmatch(r"[0-9A-Za-z_.-]+", entry):
            raise ValueError(f"bad pool entry id {entry!r}")
        by_lang: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        seen: set[tuple[str, bytes]] = set()
        for line in lines:
            status = line.get("status", "kept")
            if status not in STATUSES or not line.get("tokens"):
                continue
            lang = _check_lang(str(line.get("lang") or ""))
            h = text_hash(line)
            if (lang, h) in seen:  # twice in the same batch: the first one only
                continue
            seen.add((lang, h))
            by_lang.setdefault(lang, []).append((h, line))
        report: dict[str, dict[str, int]] = {}
        for lang, items in by_lang.items():
            mine = self._claim_all(entry, lang, items)
            out = [{**line, "source": {"job": job, "batch": batch, "entry": entry}}
                   for (h, line), ok in zip(items, mine, strict=True) if ok]
            if out:
                data = "".join(dumps(x) + "\n" for x in out)
                self.storage.write_bytes(segment_key(lang, entry), data.encode("utf-8"))
            report[lang] = {"kept": sum(1 for x in out if x.get("status", "kept") == "kept"),
                            "discarded": sum(1 for x in out if x.get("status") == "discarded"),
                            "duplicates": len(items) - len(out)}
        return report

    def _claim_all(self, entry: str, lang: str, items: list[tuple[bytes, dict[str, Any]]]) -> list[bool]:
        mine: list[bool] = []
        for start in range(0, len(items), CLAIM_CHUNK):
            args: list[Any] = [entry, lang]
            for h, line in items[start:start + CLAIM_CHUNK]:
                args += [h, line.get("status", "kept")]
            mine += [bool(x) for x in self._claim(keys=[owner_key(lang), COUNTS_KEY], args=args)]
        return mine

    # ------------------------------------------------------------------------------------------------ reading

    def languages(self) -> list[str]:
        """The languages with at least one segment."""
        return sorted({key.split("/")[1] for key in self.storage.list(PREFIX) if key.count("/") == 2})

    def segments(self, lang: str) -> list[str]:
        """The segment keys of a language, in stream order."""
        keys = self.storage.list(f"{PREFIX}/{_check_lang(lang)}")
        return sorted((k for k in keys if k.endswith(".jsonl")), key=_entry_order)

    def read(self, lang: str, status: str | None = None) -> Iterator[dict[str, Any]]:
        """The pool's lines of `lang` (of one `status` when given), segment by segment: never all in memory."""
        for key in self.segments(lang):
            with self.storage.open_read(key) as f:
                for raw in f:
                    if raw.strip():
                        line = json.loads(raw)
                        if status is None or line.get("status") == status:
                            yield line

    def counts(self) -> dict[str, dict[str, int]]:
        """{lang: {"kept": n, "discarded": m}} from the index (Redis): cheap at any size."""
        out: dict[str, dict[str, int]] = {}
        for field, value in self.redis.hgetall(COUNTS_KEY).items():
            name = field.decode() if isinstance(field, bytes) else field
            lang, _, status = name.rpartition(":")
            out.setdefault(lang, {s: 0 for s in STATUSES})[status] = int(value)
        return dict(sorted(out.items()))

    def export(self, lang: str, path: Path, status: str | None = None) -> int:
        """Write the pool's lines of `lang` to a local JSONL file (the format of `crop project`'s output, which
        `run_selftraining`'s targets read); the number of lines."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for line in self.read(lang, status):
                f.write(dumps(line) + "\n")
                n += 1
        tmp.replace(path)
        return n

    def export_all(self, langs: Iterable[str], folder: Path) -> dict[str, Path]:
        """`export` of each language to `folder/<lang>.jsonl`: the `targets` of a SelfTrainConfig (lang -> path)."""
        return {lang: self._exported(lang, folder) for lang in langs}

    def _exported(self, lang: str, folder: Path) -> Path:
        path = folder / f"{lang}.jsonl"
        n = self.export(lang, path)
        log.info("pool exported", extra={"lang": lang, "lines": n, "path": str(path)})
        return path

    # ------------------------------------------------------------------------------------------------ repair

    def rebuild_index(self) -> dict[str, dict[str, int]]:
        """Recreate the Redis index and counts from the segments (after a Redis that lost its data); the counts.
        A sentence in two segments (which the index prevents) is kept where it comes first."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(COUNTS_KEY)
        for lang in self.languages():
            pipe.delete(owner_key(lang))
        pipe.execute()
        for lang in self.languages():
            for key in self.segments(lang):
                entry = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
                with self.storage.open_read(key) as f:
                    lines = [json.loads(raw) for raw in f if raw.strip()]
                self._claim_all(entry, lang, [(text_hash(x), x) for x in lines])
        return self.counts()


def owner_key(lang: str) -> str:
    return f"crop:pool:{lang}:owner"
