"""Language codes: ISO 639-1 <-> ISO 639-3 for the languages crop is used with, and the one normalization every
service request and CLI option goes through (`normalize_lang`: `spa`, `spa_Latn`, `es-ES` and `ES` are all `es`).
"""

from __future__ import annotations

import re

ISO1_TO_ISO3 = {
    "en": "eng", "es": "spa", "ca": "cat", "gl": "glg", "eu": "eus", "pt": "por", "fr": "fra", "it": "ita",
    "de": "deu", "nl": "nld", "oc": "oci", "an": "arg", "ast": "ast", "sw": "swa", "zh": "zho", "ja": "jpn",
    "ko": "kor", "ar": "ara", "ru": "rus", "uk": "ukr", "pl": "pol", "cs": "ces", "ro": "ron", "tr": "tur",
    "hi": "hin", "th": "tha", "vi": "vie", "id": "ind", "fi": "fin", "sv": "swe", "da": "dan", "nb": "nob",
    "nn": "nno", "is": "isl", "cy": "cym", "ga": "gle", "br": "bre", "mt": "mlt", "sq": "sqi", "el": "ell",
    "he": "heb", "fa": "fas", "ur": "urd", "bn": "ben", "ta": "tam", "te": "tel", "yo": "yor", "ha": "hau",
    "ig": "ibo", "zu": "zul", "xh": "xho", "af": "afr", "kk": "kaz", "ka": "kat", "hy": "hye", "be": "bel",
    "bg": "bul", "mk": "mkd", "sr": "srp", "hr": "hrv", "bs": "bos", "sl": "slv", "sk": "slk", "hu": "hun",
    "et": "est", "lv": "lav", "lt": "lit",
}
ISO1_TO_ISO3.update({
    "am": "amh", "az": "aze", "bm": "bam", "eo": "epo", "ee": "ewe", "gu": "guj", "kn": "kan", "km": "khm",
    "rw": "kin", "ky": "kir", "ku": "kur", "lo": "lao", "ln": "lin", "lb": "ltz", "lg": "lug", "ml": "mal",
    "mr": "mar", "mn": "mon", "ms": "msa", "my": "mya", "ne": "nep", "no": "nor", "ny": "nya", "om": "orm",
    "pa": "pan", "ps": "pus", "qu": "que", "si": "sin", "sn": "sna", "so": "som", "tg": "tgk", "ti": "tir",
    "tl": "tgl", "tn": "tsn", "tw": "twi", "uz": "uzb", "wo": "wol",
})
ISO3_TO_ISO1 = {v: k for k, v in ISO1_TO_ISO3.items()}
# individual languages and other codes that stand for a macrolanguage above (NLLB's swh_Latn, cmn, arb, ...)
ISO3_TO_ISO1.update({"swh": "sw", "cmn": "zh", "pes": "fa", "arb": "ar", "zsm": "ms", "fil": "tl", "nob": "nb",
                     "lvs": "lv", "ekk": "et", "khk": "mn", "uzn": "uz", "als": "sq", "kmr": "ku", "pbt": "ps",
                     "npi": "ne", "ory": "or", "quy": "qu", "azj": "az", "plt": "mg", "gaz": "om"})
# ISO 639-2/B (bibliographic) codes that differ from the 639-3 ones above
ISO3_TO_ISO1.update({"alb": "sq", "arm": "hy", "baq": "eu", "bur": "my", "chi": "zh", "cze": "cs", "dut": "nl",
                     "fre": "fr", "geo": "ka", "ger": "de", "gre": "el", "ice": "is", "mac": "mk", "may": "ms",
                     "per": "fa", "rum": "ro", "slo": "sk", "wel": "cy"})

# a 2- or 3-letter language, then BCP-47 subtags (es-ES, zh-Hant-TW) or a FLORES script (spa_Latn)
LANG_CODE_PATTERN = r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{1,8})*$"
_LANG_CODE = re.compile(LANG_CODE_PATTERN)


def normalize_lang(code: str) -> str:
    """The code crop and its engines use for a language code as users write it: case-insensitive, BCP-47
    subtags (region, script) and FLORES script suffixes dropped, ISO 639-3 (and 639-2/B) mapped to ISO 639-1
    where there is one (`spa_Latn`, `es-ES`, `ES` -> `es`; `ast` stays `ast`). ValueError for what is no
    language code."""
    if not _LANG_CODE.fullmatch(code):  # not match: "$" would let a trailing newline through
        raise ValueError(f"{code!r} is not a language code: use ISO 639-1 or 639-3 (es, spa), optionally with a "
                         "region or script (es-ES, spa_Latn)")
    return to_iso1(code)


def to_iso1(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO3_TO_ISO1.get(base, base)


def to_iso3(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO1_TO_ISO3.get(base, base)
