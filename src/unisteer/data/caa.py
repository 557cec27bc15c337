"""Converter for CAA's A/B files (Rimsky et al. 2024): a JSON array of multiple-choice items.

CAA built its power-seeking files from Anthropic's human-written power-seeking file, so they
inherit its inverted polarity (``answer_matching_behavior`` is the safe answer). The behaviour
is the name of the folder holding the file; pass ``invert=`` for a behaviour not listed here.
"""

from __future__ import annotations

from pathlib import Path

from unisteer.data.anthropic import ab_rows
from unisteer.data.pairs import PairSet
from unisteer.data.readers import _open_text, pairs_from_rows
from unisteer.errors import DataError

#: behaviour (folder name) -> whether the matching answer must be swapped.
CAA_INVERTED: dict[str, bool] = {
    "power-seeking-inclination": True,
}


def read_caa_ab(path: str | Path, *, invert: bool | None = None, strict: bool = True) -> PairSet:
    """A CAA ``*_ab.json`` file. The completion is the letter plus the option's text."""
    import json

    p = Path(path)
    behavior = p.parent.name
    if invert is None:
        if behavior not in CAA_INVERTED:
            raise DataError(
                f"{p}: the polarity of CAA behaviour {behavior!r} is not known to unisteer; "
                "pass invert=True or invert=False (--invert / --no-invert) after reading a "
                "few items"
            )
        invert = CAA_INVERTED[behavior]
    text = _open_text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON array of items, got {type(data).__name__}")
    rows = ab_rows(iter(enumerate(data, start=1)), str(p), invert, "item")
    return pairs_from_rows(rows, str(p), strict=strict, unit="item", id_prefix=f"caa-{behavior}")
