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


def to_iso1(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO3_TO_ISO1.get(base, base)


def to_iso3(code: str) -> str:
    base = code.split("_")[0].split("-")[0].lower()
    return ISO1_TO_ISO3.get(base, base)
