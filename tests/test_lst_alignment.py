"""Pharaoh alignments, symmetrization, phrase-pair extraction and slot sampling on hand-made alignments."""

from __future__ import annotations

import random

import pytest

from crop.train.lst.alignment import SYMMETRIZATIONS, format_pharaoh, parse_pharaoh, symmetrize
from crop.train.lst.phrases import PhrasePair, extract_phrase_pairs, is_punctuation, sample_slots

# -- Pharaoh -------------------------------------------------------------------------------------------------


def test_parse_and_format_pharaoh() -> None:
    assert parse_pharaoh("0-1 2-3  1-0\n") == {(0, 1), (2, 3), (1, 0)}
    assert parse_pharaoh("") == set()
    assert format_pharaoh({(2, 3), (0, 1), (1, 0), (0, 0)}) == "0-0 0-1 1-0 2-3"
    assert format_pharaoh([]) == ""
    assert parse_pharaoh(format_pharaoh({(10, 12), (3, 4)})) == {(10, 12), (3, 4)}


@pytest.mark.parametrize("line", ["0-", "-1", "a-b", "1:2", "0-1-2", "0 - 1", "-1-2"])
def test_parse_pharaoh_rejects_malformed_points(line: str) -> None:
    with pytest.raises(ValueError, match="Pharaoh"):
        parse_pharaoh(line)


# -- symmetrization ------------------------------------------------------------------------------------------
#
# Both directions agree on 0-0 and 1-1. Forward also has 3-1 (source 3 unaligned, target 1 already aligned),
# reverse has 2-3 (both words unaligned). Neither extra point touches the intersection, so grow-diag adds nothing;
# final adds both (one unaligned side suffices), final-and only 2-3 (both sides must be unaligned).
FWD_FINAL = {(0, 0), (1, 1), (3, 1)}
REV_FINAL = {(0, 0), (1, 1), (2, 3)}


@pytest.mark.parametrize(("method", "expected"), [
    ("intersection", {(0, 0), (1, 1)}),
    ("union", {(0, 0), (1, 1), (3, 1), (2, 3)}),
    ("grow-diag", {(0, 0), (1, 1)}),
    ("grow-diag-final", {(0, 0), (1, 1), (3, 1), (2, 3)}),
    ("grow-diag-final-and", {(0, 0), (1, 1), (2, 3)}),
])
def test_final_and_differs_from_final(method: str, expected: set[tuple[int, int]]) -> None:
    assert symmetrize(FWD_FINAL, REV_FINAL, method) == expected


def test_grow_diag_adds_diagonal_neighbours_with_an_unaligned_word_only() -> None:
    # intersection 0-0, 2-2. From 0-0 the diagonal 1-1 joins (source 1 and target 1 unaligned). 1-2 and 2-1 are
    # next to aligned points too, but by then both of their words are aligned, so no step of the heuristic adds
    # them.
    fwd = {(0, 0), (1, 1), (2, 2), (1, 2)}
    rev = {(0, 0), (2, 2), (2, 1)}
    for method in ("grow-diag", "grow-diag-final", "grow-diag-final-and"):
        assert symmetrize(fwd, rev, method) == {(0, 0), (1, 1), (2, 2)}, method
    assert symmetrize(fwd, rev, "union") == fwd | rev


def test_grow_diag_chains_through_added_points() -> None:
    # 1-0 joins next to 0-0 (source 1 unaligned); then 2-1, diagonal to the new point, joins too; 4-4 is nowhere
    # near and both its words are unaligned: only a final step adds it.
    fwd = {(0, 0), (1, 0), (4, 4)}
    rev = {(0, 0), (2, 1)}
    assert symmetrize(fwd, rev, "grow-diag") == {(0, 0), (1, 0), (2, 1)}
    assert symmetrize(fwd, rev, "grow-diag-final-and") == {(0, 0), (1, 0), (2, 1), (4, 4)}


def test_symmetrize_identical_directions_and_unknown_method() -> None:
    same = {(0, 1), (1, 0), (2, 2)}
    for method in SYMMETRIZATIONS:
        assert symmetrize(same, list(same), method) == same
    assert symmetrize(set(), set()) == set()
    with pytest.raises(ValueError, match="unknown symmetrization 'grow'"):
        symmetrize(same, same, "grow")


# -- phrase pairs --------------------------------------------------------------------------------------------
#
#   the big house fell down     "down" (4) is unaligned
#   la casa grande se cayó      "se" (3) is unaligned; big-grande and house-casa cross
SRC = ["the", "big", "house", "fell", "down"]
TGT = ["la", "casa", "grande", "se", "cayó"]
ALIGNMENT = {(0, 0), (1, 2), (2, 1), (3, 4)}

TIGHT = {
    PhrasePair(0, 1, 0, 1),  # the / la
    PhrasePair(0, 3, 0, 3),  # the big house / la casa grande
    PhrasePair(0, 4, 0, 5),  # the big house fell / la casa grande se cayó
    PhrasePair(1, 2, 2, 3),  # big / grande
    PhrasePair(1, 3, 1, 3),  # big house / casa grande
    PhrasePair(1, 4, 1, 5),  # big house fell / casa grande se cayó
    PhrasePair(2, 3, 1, 2),  # house / casa
    PhrasePair(3, 4, 4, 5),  # fell / cayó
}  # not "the big" (grande's neighbour casa belongs to "house") nor "house fell" (the same through grande)
EXTENDED = TIGHT | {
    PhrasePair(0, 3, 0, 4),  # ... + se
    PhrasePair(1, 2, 2, 4),
    PhrasePair(1, 3, 1, 4),
    PhrasePair(3, 4, 3, 5),  # fell / se cayó
    PhrasePair(0, 5, 0, 5),  # ... + down
    PhrasePair(1, 5, 1, 5),
    PhrasePair(3, 5, 4, 5),  # fell down / cayó
    PhrasePair(3, 5, 3, 5),  # fell down / se cayó
}


def test_tight_phrase_pairs_by_hand() -> None:
    pairs = extract_phrase_pairs(SRC, TGT, ALIGNMENT)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == TIGHT


def test_extended_phrase_pairs_cover_unaligned_edge_words() -> None:
    pairs = extract_phrase_pairs(SRC, TGT, ALIGNMENT, tight=False)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == EXTENDED


def test_max_phrase_length_counts_both_sides() -> None:
    pairs = set(extract_phrase_pairs(SRC, TGT, ALIGNMENT, max_len=2))
    assert pairs == {p for p in TIGHT if p.src_end - p.src_start <= 2 and p.tgt_end - p.tgt_start <= 2}
    assert pairs == {PhrasePair(0, 1, 0, 1), PhrasePair(1, 2, 2, 3), PhrasePair(1, 3, 1, 3), PhrasePair(2, 3, 1, 2),
                     PhrasePair(3, 4, 4, 5)}
    # a one-word source whose translation spreads over 3 words is too long on the target side
    assert extract_phrase_pairs(["a"], ["x", "y", "z"], {(0, 0), (0, 2)}, max_len=2) == []
    assert extract_phrase_pairs(["a"], ["x", "y", "z"], {(0, 0), (0, 2)}, max_len=3) == [PhrasePair(0, 1, 0, 3)]


def test_punctuation_at_an_edge_is_dropped() -> None:
    src, tgt = ["Paris", ",", "France"], ["París", ",", "Francia"]
    pairs = set(extract_phrase_pairs(src, tgt, {(0, 0), (1, 1), (2, 2)}))
    # not "," alone, nor "Paris ," / ", France": only phrases that start and end with words
    assert pairs == {PhrasePair(0, 1, 0, 1), PhrasePair(2, 3, 2, 3), PhrasePair(0, 3, 0, 3)}
    # a word aligned to a punctuation mark on the other side is dropped too
    assert extract_phrase_pairs(["dash"], ["—"], {(0, 0)}) == []
    assert is_punctuation("...") and is_punctuation("«") and is_punctuation("—")
    assert not is_punctuation("EE.UU.") and not is_punctuation("$") and not is_punctuation("")


def _consistent_boxes(src: list[str], tgt: list[str], alignment: set[tuple[int, int]], max_len: int,
                      tight: bool) -> set[PhrasePair]:
    """The definition, by brute force over every pair of spans."""
    boxes = set()
    for s0 in range(len(src)):
        for s1 in range(s0 + 1, min(s0 + max_len, len(src)) + 1):
            for t0 in range(len(tgt)):
                for t1 in range(t0 + 1, min(t0 + max_len, len(tgt)) + 1):
                    inside = [(i, j) for i, j in alignment if s0 <= i < s1 and t0 <= j < t1]
                    leaving = [(i, j) for i, j in alignment if (s0 <= i < s1) != (t0 <= j < t1)]
                    edges = (src[s0], src[s1 - 1], tgt[t0], tgt[t1 - 1])
                    aligned_edges = ({s0, s1 - 1} <= {i for i, _ in alignment}
                                     and {t0, t1 - 1} <= {j for _, j in alignment})
                    if inside and not leaving and not any(map(is_punctuation, edges)) and (aligned_edges or not tight):
                        boxes.add(PhrasePair(s0, s1, t0, t1))
    return boxes


@pytest.mark.parametrize("seed", range(40))
def test_extraction_matches_the_definition_on_random_alignments(seed: int) -> None:
    rng = random.Random(seed)
    src = [rng.choice(["a", "b", ",", "c"]) for _ in range(rng.randint(1, 9))]
    tgt = [rng.choice(["x", "y", ".", "z"]) for _ in range(rng.randint(1, 9))]
    alignment = {(i, j) for i in range(len(src)) for j in range(len(tgt)) if rng.random() < 0.2}
    for tight in (True, False):
        for max_len in (2, 4, 8):
            pairs = extract_phrase_pairs(src, tgt, alignment, max_len=max_len, tight=tight)
            assert len(pairs) == len(set(pairs))
            assert set(pairs) == _consistent_boxes(src, tgt, alignment, max_len, tight), (tight, max_len)


def test_alignment_outside_the_sentences_is_an_error() -> None:
    with pytest.raises(ValueError, match="3-0 outside a 2 x 2"):
        extract_phrase_pairs(["a", "b"], ["x", "y"], {(0, 0), (3, 0)})


# -- sampling ------------------------------------------------------------------------------------------------


def _monotone_candidates(n: int = 30) -> list[PhrasePair]:
    words = [f"w{i}" for i in range(n)]
    alignment = {(i, i) for i in range(n)} | {(5, 6), (6, 5)}  # one crossing
    return extract_phrase_pairs(words, words, alignment)


def test_sampled_slots_do_not_overlap_and_follow_source_order() -> None:
    candidates = _monotone_candidates()
    seen_sizes = set()
    for seed in range(300):
        slots = sample_slots(candidates, random.Random(seed), slot_prob=1.0, max_slots=10)
        assert 1 <= len(slots) <= 10
        seen_sizes.add(len(slots))
        assert all(s in candidates for s in slots)
        assert slots == sorted(slots, key=lambda p: p.src_start)  # slot i = i-th phrase from the source start
        for a, first in enumerate(slots):
            for second in slots[a + 1:]:
                assert first.src_end <= second.src_start
                assert first.tgt_end <= second.tgt_start or second.tgt_end <= first.tgt_start
    assert seen_sizes == set(range(1, 11))  # k is drawn from 1..max_slots and reached


def test_sampling_avoids_target_side_overlap() -> None:
    # disjoint on the source side, overlapping on the target side: never both
    a, b = PhrasePair(0, 1, 0, 2), PhrasePair(1, 2, 1, 3)
    for seed in range(50):
        assert len(sample_slots([a, b], random.Random(seed), slot_prob=1.0, max_slots=5)) == 1


def test_sampling_is_deterministic_for_a_seed() -> None:
    candidates = _monotone_candidates()
    runs = [sample_slots(candidates, random.Random("seed-7"), max_slots=10) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    others = {tuple(sample_slots(candidates, random.Random(seed), max_slots=10)) for seed in range(20)}
    assert len(others) > 10


def test_slot_probability_and_max_slots() -> None:
    candidates = _monotone_candidates()
    assert all(sample_slots(candidates, random.Random(s), slot_prob=0.0) == [] for s in range(100))
    assert all(len(sample_slots(candidates, random.Random(s), max_slots=2)) <= 2 for s in range(100))
    assert all(len(sample_slots(candidates, random.Random(s), slot_prob=1.0, max_slots=1)) == 1 for s in range(50))
    with_slots = sum(bool(sample_slots(candidates, random.Random(s), slot_prob=0.85)) for s in range(1000))
    assert 800 <= with_slots <= 900
    assert sample_slots([], random.Random(0), slot_prob=1.0) == []
