"""Errors that more than one layer understands.

`EngineUnavailable` separates "the engine is down" from "the engine failed on this input". The first is not
the sentence's fault: isolating it item by item (the pipeline's halving, the service queue's one-by-one retry)
only multiplies the wait, so every layer stops at once, the services answer 503 with Retry-After, the CLI
exits non-zero and a job retries the batch later.
"""

from __future__ import annotations


class EngineUnavailable(RuntimeError):
    """The engine itself cannot work now (a service that cannot be reached or answers 502/503/504 after its
    retries, a process that keeps dying): retry later, not item by item. `retry_after` is a hint in seconds."""

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
