"""The last step of a job with the option `type_vote`: types consistent across the job (crop.project.type_vote).

It runs as the job's step `batches` (one past its last batch), released once every batch is done
(`JobStore.complete_batch`), on the same queue and with the same redelivery and sweeper guarantees as a batch.
Two passes over the batch outputs, memory bounded by the number of distinct surface forms: the types of every
entity are counted, then each batch is written again, re-typed, to `jobs/<id>/voted/<index>.jsonl`. The batch
outputs themselves are left as the projection wrote them, so a step delivered again computes the same votes and
writes the same files. Then each batch is announced on `crop:projected` (once, with its re-typed output: the
training pool learns the voted types), the summary is stored with the job and the step is recorded, which ends
the job.

`CROP_TEST_VOTE_PAUSE` (seconds, tests only) sleeps after the first batch is announced: the window in which a
test SIGKILLs the worker, so that a second delivery finds the votes written and part of the job announced."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from crop.io import dumps
from crop.jobs.options import ProjectionOptions, type_vote_config
from crop.jobs.state import JobStore
from crop.jobs.tasks import batch_key
from crop.project.type_vote import TypeVotes
from crop.storage import Storage

log = logging.getLogger(__name__)

PAUSE_ENV = "CROP_TEST_VOTE_PAUSE"


def voted_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/voted/{index:06d}.jsonl"


def _lines(storage: Storage, key: str) -> Iterator[dict[str, Any]]:
    with storage.open_read(key) as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def run_vote(store: JobStore, storage: Storage, job_id: str, fields: dict[str, str], stream_maxlen: int) -> None:
    """The vote step of a job whose batches are all done: its fields (the job's hash) say how many."""
    batches = int(fields["batches"])
    opts = ProjectionOptions.model_validate_json(fields.get("options") or "{}")
    votes = TypeVotes(type_vote_config(opts))
    for index in range(batches):
        for line in _lines(storage, batch_key(job_id, index)):
            votes.add(line)
    announcements = []
    for index in range(batches):
        out: list[str] = []
        langs: set[str] = set()
        counts: Counter[str] = Counter()
        for line in _lines(storage, batch_key(job_id, index)):
            out.append(dumps(votes.apply(line)))
            counts[str(line.get("status"))] += 1
            if line.get("lang"):
                langs.add(str(line["lang"]))
        storage.write_bytes(voted_key(job_id, index), "".join(x + "\n" for x in out).encode("utf-8"))
        announcements.append((index, sorted(langs), dict(counts), len(out)))
    summary = votes.summary()
    pause = float(os.environ.get(PAUSE_ENV) or 0)
    for n, (index, langs, counts, sentences) in enumerate(announcements):
        store.announce(job_id, index, langs, storage.url(voted_key(job_id, index)), counts, sentences,
                       stream_maxlen)
        if n == 0 and pause > 0:
            log.warning("type vote paused", extra={"job": job_id, "seconds": pause})
            time.sleep(pause)
    store.set_type_vote(job_id, summary)
    log.info("type vote done", extra={"job": job_id, "batches": batches, **summary})
