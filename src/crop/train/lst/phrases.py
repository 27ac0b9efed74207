"""Aligned phrase pairs of a sentence pair and the random choice of those that get slot markers.

A phrase pair is consistent with a word alignment (Och & Ney; Koehn's phrase extraction) when no alignment point
links a word inside it to a word outside it on the other side, and at least one point lies inside it.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterable, Sequence
from typing import NamedTuple


class PhrasePair(NamedTuple):
    """Token spans (end exclusive) of a source phrase and its translation. Sorts by source position."""

    src_start: int
    src_end: int
    tgt_start: int
    tgt_end: int

    def overlaps(self, other: PhrasePair) -> bool:
        """Whether the two share a token on the source side or on the target side."""
        return (self.src_start < other.src_end and other.src_start < self.src_end) or (
            self.tgt_start < other.tgt_end and other.tgt_start < self.tgt_end
        )


def is_punctuation(token: str) -> bool:
    """A token made of punctuation marks only (Unicode categories P*)."""
    return bool(token) and not token.isalnum() and all(unicodedata.category(ch).startswith("P") for ch in token)


def extract_phrase_pairs(src_tokens: Sequence[str], tgt_tokens: Sequence[str],
                         alignment: Iterable[tuple[int, int]], max_len: int = 8,
                         tight: bool = True) -> list[PhrasePair]:
    """All phrase pairs consistent with `alignment` ((src, tgt) token points), at most `max_len` words a side.

    `tight` (the default) keeps only pairs whose first and last word on both sides are aligned: an unaligned
    word at an edge would make the same translation available with and without it, an ambiguous span to mark.
    With `tight=False` pairs extend over unaligned edge words as in Koehn's extraction.
    Pairs with a punctuation token at an edge of either side (so also punctuation-only ones) are dropped:
    entities do not start or end with punctuation, and the slot decoder strips some marks (",", quotes,
    brackets) from span edges, so such a span would not read back unchanged.
    """
    n_src, n_tgt = len(src_tokens), len(tgt_tokens)
    tgt_links: list[list[int]] = [[] for _ in range(n_src)]
    src_min, src_max = [n_src] * n_tgt, [-1] * n_tgt  # the source words each target word links to
    for i, j in alignment:
        if not (0 <= i < n_src and 0 <= j < n_tgt):
            raise ValueError(f"alignment point {i}-{j} outside a {n_src} x {n_tgt} token sentence pair")
        tgt_links[i].append(j)
        src_min[j], src_max[j] = min(src_min[j], i), max(src_max[j], i)
    src_punct = [is_punctuation(t) for t in src_tokens]
    tgt_punct = [is_punctuation(t) for t in tgt_tokens]

    pairs: list[PhrasePair] = []
    for s_start in range(n_src):
        if (tight and not tgt_links[s_start]) or src_punct[s_start]:
            continue
        t_min, t_max = n_tgt, -1  # the target words the source phrase links to
        seen_min, seen_max = n_tgt, -1  # the target words whose links have been folded into linked_min/max
        linked_min, linked_max = n_src, -1  # the source words those target words link to
        for s_end in range(s_start, min(s_start + max_len, n_src)):  # inclusive
            for j in tgt_links[s_end]:
                t_min, t_max = min(t_min, j), max(t_max, j)
            if t_max < 0:
                continue  # nothing aligned yet
            if t_max - t_min >= max_len:
                break  # a longer source phrase only widens the target side
            if seen_max < 0:
                unseen = [*range(t_min, t_max + 1)]
            else:
                unseen = [*range(t_min, seen_min), *range(seen_max + 1, t_max + 1)]
            for j in unseen:
                linked_min, linked_max = min(linked_min, src_min[j]), max(linked_max, src_max[j])
            seen_min, seen_max = t_min, t_max
            if linked_min < s_start:
                break  # a target word inside links before the phrase: no longer phrase can include that word
            if linked_max > s_end or (tight and not tgt_links[s_end]) or src_punct[s_end]:
                continue
            for t_start, t_end in _target_spans(t_min, t_max, src_max, max_len, tight):
                if not (tgt_punct[t_start] or tgt_punct[t_end - 1]):
                    pairs.append(PhrasePair(s_start, s_end + 1, t_start, t_end))
    return pairs


def _target_spans(t_min: int, t_max: int, src_max: Sequence[int], max_len: int,
                  tight: bool) -> list[tuple[int, int]]:
    """[t_min, t_max] as an end-exclusive span and, unless tight, its extensions over unaligned words."""
    if tight:
        return [(t_min, t_max + 1)]
    starts = [t_min]
    while starts[-1] > 0 and src_max[starts[-1] - 1] < 0 and t_max - starts[-1] + 1 < max_len:
        starts.append(starts[-1] - 1)
    spans = []
    for start in starts:
        end = t_max + 1
        spans.append((start, end))
        while end < len(src_max) and src_max[end] < 0 and end + 1 - start <= max_len:
            end += 1
            spans.append((start, end))
    return spans


def sample_slots(pairs: Sequence[PhrasePair], rng: random.Random, slot_prob: float = 0.85,
                 max_slots: int = 10) -> list[PhrasePair]:
    """The phrase pairs that get slots, in source order (the i-th gets `__SLOT{i}__`), possibly none.

    With probability `slot_prob` a sentence pair gets slots: k is drawn uniformly from 1..max_slots and up to k
    pairs are taken in random order, skipping any that overlaps an already taken one on either side.
    """
    if not pairs or rng.random() >= slot_prob:
        return []
    k = rng.randint(1, max_slots)
    chosen: list[PhrasePair] = []
    for pair in rng.sample(list(pairs), len(pairs)):
        if not any(pair.overlaps(c) for c in chosen):
            chosen.append(pair)
            if len(chosen) == k:
                break
    return sorted(chosen)
