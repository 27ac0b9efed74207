"""Language codes: ISO 639-1 <-> ISO 639-3 for the languages crop is used with."""

from __future__ import annotations

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
ISO3_TO_ISO1 = {v: k for k, v in ISO1_TO_ISO3.items()}


def to_iso1(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO3_TO_ISO1.get(base, base)


def to_iso3(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO1_TO_ISO3.get(base, base)
