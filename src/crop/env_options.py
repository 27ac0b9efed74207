"""Engine options from the environment (CROP_TAGGER_DEVICE=cuda, CROP_TRANSLATOR_BEAM_SIZE=5, ...), for the
options a spec string and the caller did not give."""

from __future__ import annotations

import os
from typing import Any


def options_from_env(options: dict[str, Any], prefix: str, types: dict[str, type]) -> dict[str, Any]:
    """`options` completed with `<prefix>_<KEY>` variables for the keys of `types` (converted to their type)."""
    out = dict(options)
    for key, kind in types.items():
        var = f"{prefix}_{key.upper()}"
        value = os.environ.get(var)
        if key in out or not value:
            continue
        try:
            out[key] = kind(value)
        except ValueError:
            raise ValueError(f"{var} must be {kind.__name__}, not {value!r}") from None
    return out
