"""What the neural translators share, without a model: language codes per family, batches under a token
budget, pieces with slot tokens kept whole."""

from __future__ import annotations

import pytest

from crop.translate.base import UnsupportedPair
from crop.translate.seq2seq import (
    M2M100Family,
    MarianFamily,
    ModelFamily,
    NllbFamily,
    PieceCodec,
    pair_from_name,
    token_batches,
)

NLLB_VOCAB = {"es", "eng_Latn", "spa_Latn", "cat_Latn", "glg_Latn", "eus_Latn", "swh_Latn", "zho_Hans", "zho_Hant",
              "arb_Arab", "ary_Arab", "▁hola"}
M2M_VOCAB = {"__en__", "__es__", "__ca__", "__gl__", "__zh__", "▁hola"}


def test_m2m100_codes_from_iso1_and_iso3():
    fam = M2M100Family(M2M_VOCAB)
    assert fam.code("es") == "__es__"
    assert fam.code("spa") == "__es__"
    assert fam.source_prefix("es", "en") == ["__es__"]
    assert fam.target_prefix("en") == ["__en__"]
    assert ("es", "en") in fam.pairs() and ("en", "es") in fam.pairs() and ("es", "es") not in fam.pairs()
    with pytest.raises(UnsupportedPair, match="no language token __eu__"):
        fam.check("eu", "en")


def test_nllb_codes_prefer_the_flores_code_nllb_uses():
    fam = NllbFamily(NLLB_VOCAB)
    assert fam.code("es") == "spa_Latn"
    assert fam.code("eus") == "eus_Latn"
    assert fam.code("sw") == "swh_Latn"  # not swa_*
    assert fam.code("zh") == "zho_Hans"
    assert fam.code("ar") == "arb_Arab"
    assert fam.code("spa_Latn") == "spa_Latn"
    assert {"es", "ca", "gl", "eu", "en", "zh", "sw", "ar"} <= set(fam.languages())
    with pytest.raises(UnsupportedPair, match="no FLORES-200 code"):
        fam.code("fi")


def test_marian_pairs_from_name_and_target_tokens():
    assert pair_from_name("Helsinki-NLP/opus-mt-en-es") == ("en", "es")
    assert pair_from_name("/models/opus-mt-es-en/") == ("es", "en")
    single = MarianFamily({"▁hola"}, ("en", "es"))
    assert single.pairs() == [("en", "es")]
    assert single.source_prefix("en", "es") == []
    with pytest.raises(UnsupportedPair, match="en->es"):
        single.check("es", "en")
    multi = MarianFamily({">>spa<<", ">>cat<<", "▁a"}, ("en", "roa"))
    assert multi.source_prefix("en", "ca") == [">>cat<<"]
    assert ("en", "es") in multi.pairs()


def test_generic_family_without_a_pair_serves_nothing():
    assert ModelFamily(set()).pairs() == []


@pytest.mark.parametrize("lengths,budget,most", [
    ([5, 50, 7, 48, 6, 20], 100, 64), ([3] * 10, 12, 64), ([3] * 10, 1000, 4), ([200, 1, 2], 50, 8), ([], 10, 2)])
def test_token_batches_cover_everything_within_the_budget(lengths, budget, most):
    batches = token_batches(lengths, budget, most)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= most
        width = max(lengths[i] for i in b)
        assert len(b) * width <= budget or len(b) == 1  # a sentence longer than the budget goes alone
    # similar lengths together: longest first
    firsts = [max(lengths[i] for i in b) for b in batches]
    assert firsts == sorted(firsts, reverse=True)


class _SpmLike:
    """Splits words into ▁-prefixed pieces of up to 3 characters, as a sentencepiece model might."""

    def tokenize(self, text: str) -> list[str]:
        out = []
        for w in text.split():
            out += ["▁" + w[:3]] + [w[i:i + 3] for i in range(3, len(w), 3)]
        return out

    def convert_tokens_to_string(self, pieces: list[str]) -> str:
        return "".join(pieces).replace("▁", " ").strip()


def test_piece_codec_keeps_slots_whole_and_drops_special_pieces():
    codec = PieceCodec(_SpmLike(), {"</s>", "__es__"})
    pieces = codec.pieces("__SLOT0__ Barcelona __SLOT0__ es grande __SLOT1__ UE __SLOT1__")
    assert pieces[0] == "__SLOT0__" and pieces.count("__SLOT1__") == 2
    assert "▁Bar" in pieces and "▁es" in pieces
    assert codec.text(["__es__", *pieces, "</s>"]) == "__SLOT0__ Barcelona __SLOT0__ es grande __SLOT1__ UE __SLOT1__"
    assert codec.pieces("") == []
    assert codec.pieces("no markers") == ["▁no", "▁mar", "ker", "s"]
