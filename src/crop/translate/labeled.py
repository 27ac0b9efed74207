"""Labeled translation through a marker codec, shared by the engines that translate plain strings (neural
seq2seq models, LLM servers): encode each sentence's spans as inline markers, translate the marked strings
(n-best when the engine can), decode and repair the markers of every hypothesis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crop.markers import MarkerCodec
from crop.types import LabeledItem, LabeledResult

# marked strings in -> for each, its hypotheses (best first, at least one)
TranslateNBest = Callable[[list[str]], list[list[str]]]


def translate_labeled_with_codec(items: Sequence[LabeledItem], codec: MarkerCodec,
                                 translate_n: TranslateNBest) -> list[LabeledResult]:
    """The best hypothesis of each item, with the others as `alternatives`. An item without spans is
    translated as it is (no markers to keep)."""
    marked = [codec.encode(it.text, it.spans) for it in items]
    hypotheses = translate_n(marked)
    if len(hypotheses) != len(items):
        raise RuntimeError(f"engine returned {len(hypotheses)} translations for {len(items)} sentences")
    results = []
    for it, hyps in zip(items, hypotheses, strict=True):
        if not hyps:
            raise RuntimeError("engine returned no hypothesis")
        decoded = [codec.decode(h, it.spans) for h in hyps]
        best = decoded[0]
        best.alternatives = decoded[1:]
        results.append(best)
    return results
