"""Word alignment for LST data: eflomal in both directions, Pharaoh `i-j` lines and symmetrization.

An alignment is a set of `(source index, target index)` token pairs. eflomal writes both of its link files in
that `src-tgt` order (checked on a corpus whose target sentences are longer than their sources, see the tests):
the forward file comes from the model that generates the target from the source (each target token has at most
one link), the reverse file from the other direction (each source token has at most one link); neither is
written `tgt-src`.

eflomal seeds its samplers from /dev/urandom and has no seed option, so two runs may differ slightly; the
driver can save the symmetrized alignments and read them back for reproducible output.
"""

from __future__ import annotations

import heapq
import io
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

Alignment = set[tuple[int, int]]

SYMMETRIZATIONS = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")

#: eflomal's binary writes no links for a sentence of 1024 tokens or more (measured with eflomal 2.0).
EFLOMAL_MAX_TOKENS = 1023

# Koehn's neighbourhood for grow-diag: the four adjacent points, then the four diagonal ones.
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def parse_pharaoh(line: str) -> Alignment:
    """`"0-0 1-2 ..."` -> {(0, 0), (1, 2), ...}; raises ValueError on anything else."""
    points: Alignment = set()
    for item in line.split():
        src, sep, tgt = item.partition("-")
        if not sep or not src.isdigit() or not tgt.isdigit():
            raise ValueError(f"not a Pharaoh alignment point (i-j): {item!r}")
        points.add((int(src), int(tgt)))
    return points


def format_pharaoh(points: Iterable[tuple[int, int]]) -> str:
    """Sorted `i-j` points separated by spaces (empty string for no points)."""
    return " ".join(f"{i}-{j}" for i, j in sorted(points))


def symmetrize(forward: Iterable[tuple[int, int]], reverse: Iterable[tuple[int, int]],
               method: str = "grow-diag-final-and") -> Alignment:
    """Combine the two directional alignments (both as (src, tgt) points) with one of `SYMMETRIZATIONS`.

    grow-diag starts from the intersection and, sweeping the points in (src, tgt) order until nothing changes,
    adds each union point next to an aligned point (diagonals included) when its source or its target word is
    still unaligned. final then adds the remaining union points (forward ones first) whose source or target word
    is unaligned; final-and only those whose source and target words are both unaligned.
    """
    fwd, rev = set(forward), set(reverse)
    if method == "intersection":
        return fwd & rev
    if method == "union":
        return fwd | rev
    if method not in SYMMETRIZATIONS:
        raise ValueError(f"unknown symmetrization {method!r}; choose one of {', '.join(SYMMETRIZATIONS)}")
    union = fwd | rev
    grown = _Growing(fwd & rev)
    grown.grow_diag(union)
    if method == "grow-diag-final":
        grown.final(fwd, both_unaligned=False)
        grown.final(rev, both_unaligned=False)
    elif method == "grow-diag-final-and":
        grown.final(fwd, both_unaligned=True)
        grown.final(rev, both_unaligned=True)
    return grown.points


class _Growing:
    """An alignment being grown, with how many links each source and target word has."""

    def __init__(self, points: Alignment) -> None:
        self.points = set(points)
        self.src_links = Counter(i for i, _ in points)
        self.tgt_links = Counter(j for _, j in points)

    def _add(self, point: tuple[int, int]) -> None:
        self.points.add(point)
        self.src_links[point[0]] += 1
        self.tgt_links[point[1]] += 1

    def grow_diag(self, union: Alignment) -> None:
        # Koehn's loop scans the grid in (src, tgt) order and sees points added during the scan once it reaches
        # them; a heap of the points still ahead of the scan does the same without visiting the whole grid.
        added = True
        while added:
            added = False
            ahead = sorted(self.points)
            while ahead:
                i, j = heapq.heappop(ahead)
                for di, dj in _NEIGHBOURS:
                    new = (i + di, j + dj)
                    if new in union and new not in self.points and (
                        not self.src_links[new[0]] or not self.tgt_links[new[1]]
                    ):
                        self._add(new)
                        added = True
                        if new > (i, j):
                            heapq.heappush(ahead, new)

    def final(self, direction: Alignment, both_unaligned: bool) -> None:
        for i, j in sorted(direction - self.points):
            src_free, tgt_free = not self.src_links[i], not self.tgt_links[j]
            if (src_free and tgt_free) if both_unaligned else (src_free or tgt_free):
                self._add((i, j))


def eflomal_align(src_sentences: Sequence[Sequence[str]],
                  tgt_sentences: Sequence[Sequence[str]]) -> tuple[list[Alignment], list[Alignment]]:
    """Align tokenized sentence pairs with eflomal; returns the forward and reverse alignments, (src, tgt) points.

    Every sentence needs 1..EFLOMAL_MAX_TOKENS tokens without whitespace inside (eflomal splits lines on
    spaces and writes nothing for empty or overlong sentences). Tokens are lowercased here (eflomal's own
    reader lowercases too; doing it here keeps that independent of its defaults).
    """
    try:
        import eflomal  # an optional dependency (the `lst` extra)
    except ImportError as exc:
        raise RuntimeError("eflomal is not installed: pip install 'crop-ner[lst]'") from exc

    if len(src_sentences) != len(tgt_sentences):
        raise ValueError(f"{len(src_sentences)} source but {len(tgt_sentences)} target sentences")
    if not src_sentences:
        return [], []
    src_text = io.StringIO(_eflomal_text(src_sentences, "source"))
    tgt_text = io.StringIO(_eflomal_text(tgt_sentences, "target"))
    with tempfile.TemporaryDirectory(prefix="crop-eflomal-") as tmp:
        fwd_path, rev_path = Path(tmp, "forward.links"), Path(tmp, "reverse.links")
        eflomal.Aligner().align(src_text, tgt_text, links_filename_fwd=str(fwd_path),
                                links_filename_rev=str(rev_path))
        forward = _read_links(fwd_path, len(src_sentences))
        reverse = _read_links(rev_path, len(src_sentences))
    return forward, reverse


def _eflomal_text(sentences: Sequence[Sequence[str]], side: str) -> str:
    """One lowercased line of space-joined tokens per sentence, checked so that eflomal sees the same tokens."""
    lines = []
    for k, tokens in enumerate(sentences):
        if not 0 < len(tokens) <= EFLOMAL_MAX_TOKENS:
            raise ValueError(f"{side} sentence {k} has {len(tokens)} tokens; eflomal needs 1..{EFLOMAL_MAX_TOKENS}")
        line = " ".join(tokens).lower()
        if len(line.split()) != len(tokens):
            raise ValueError(f"{side} sentence {k} has an empty token or one with whitespace inside")
        lines.append(line + "\n")
    return "".join(lines)


def _read_links(path: Path, expected: int) -> list[Alignment]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != expected:
        raise RuntimeError(f"eflomal wrote {len(lines)} alignment lines for {expected} sentence pairs")
    return [parse_pharaoh(line) for line in lines]
