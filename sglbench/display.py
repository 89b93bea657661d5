"""How values are shown to people and written to files: secrets masked, numbers formatted.

One home for the mask, for what counts as a secret (a settings key, a command-line flag) and for
the number formats of every table (the console, the report, the run summary).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

MASK = "********"
# A settings key or a flag whose name holds one of these carries a secret value.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")
# A key that names a key's location or kind, not a secret (IB_DEVICE is not a key at all).
_NOT_SECRET = re.compile(r"(KEYS?_(FILE|PATH|ID)|KEYFILE)$")


def is_secret(name: str) -> bool:
    """True for a settings key or flag whose value must never be shown (HF_TOKEN, --api-key).

    Args:
        name: ``HF_TOKEN``, ``--api-key``, ``--hf-token=x`` (the part before ``=``), ...
    """
    word = name.split("=", 1)[0].lstrip("-").upper().replace("-", "_")
    if _NOT_SECRET.search(word):
        return False
    return any(part in _SECRET_WORDS or part.endswith(_SECRET_WORDS) for part in word.split("_"))


def mask_args(args: Sequence[str]) -> list[str]:
    """Command-line words with the value of every secret flag masked.

    ``--api-key abc`` -> ``--api-key ********``; ``--api-key=abc`` -> ``--api-key=********``.
    """
    out: list[str] = []
    hide_next = False
    for word in args:
        if hide_next and not word.startswith("--"):
            out.append(MASK)
        elif word.startswith("--") and "=" in word and is_secret(word):
            out.append(word.split("=", 1)[0] + "=" + MASK)
        else:
            out.append(word)
        hide_next = word.startswith("--") and "=" not in word and is_secret(word)
    return out


def scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with secret keys masked and every secret string replaced, recursively."""
    if isinstance(value, Mapping):
        return {k: MASK if is_secret(str(k)) and v not in (None, "") else scrub(v, secrets)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, MASK)
    return value


def as_number(value: Any) -> float | None:
    """A finite or infinite number as float; None for anything else (None, NaN, text, bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def number(value: Any, digits: int = 1, *, missing: str = "-") -> str:
    """A number with ``digits`` decimals (``inf`` as ``inf``), ``missing`` when there is none."""
    found = as_number(value)
    if found is None:
        return missing
    return "inf" if math.isinf(found) else f"{found:.{digits}f}"


def amount(value: Any, *, missing: str = "-") -> str:
    """A quantity for a table: thousands separated, decimals only for small fractional values."""
    found = as_number(value)
    if found is None:
        return missing if value is None or isinstance(value, float) else str(value)
    if math.isinf(found):
        return "inf"
    whole = found.is_integer() or abs(found) >= 100
    return f"{found:,.0f}" if whole else f"{found:,.1f}"


def compact(value: Any, *, missing: str = "?") -> str:
    """A value in a label: whole floats without ``.0`` (``128``), unknowns as ``missing``."""
    found = as_number(value)
    if found is not None:
        return str(int(found)) if found.is_integer() else f"{found:g}"
    return missing if value is None or isinstance(value, float) else str(value)
