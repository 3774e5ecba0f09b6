"""Small helpers shared by the hygiene rules (BG1xx): option parsers, and how findings name
tensors and cap long lists so that a 1000-layer model still gets a readable message."""

from __future__ import annotations

import re
from typing import Any, Iterable, TypeVar

# Messages name this many items, then "and N more"; details lists keep this many entries.
MESSAGE_ITEMS = 5
DETAIL_ITEMS = 50

_Entry = TypeVar("_Entry")


def parse_bool(value: Any) -> bool:
    """A TOML boolean, strictly: `"yes"` or 1 is a config error, not a guess."""
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def parse_fraction(value: Any) -> float:
    """`"50%"` or `0.5` -> 0.5; must lie in [0, 1]."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError('expected a share such as "50%" or 0.5') from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError('expected a share such as "50%" or 0.5')
    if not 0 <= number <= 1:
        raise ValueError("a share must lie between 0% and 100%")
    return number


def parse_tolerance(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("expected a non-negative number such as 1e-3")
    return float(value)


def tensor_label(name: str, where: str) -> str:
    """The tensor's name, plus the subgraph or function it lives in when that is not the main
    graph: silero-vad stores a tensor of the same name in each `If` branch."""
    scope = where.rpartition("/")[0]
    return f"{name} in {scope}" if scope else name


def listing(items: Iterable[str], total: int | None = None, limit: int = MESSAGE_ITEMS) -> str:
    """`a, b, c, d, e and 7 more`."""
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(items[:limit])
    return f"{shown} and {total - limit} more" if total > limit else shown


def capped(entries: list[_Entry], limit: int = DETAIL_ITEMS) -> list[_Entry]:
    """The first `limit` entries of a details list, of dicts or of names (the count goes in a
    separate key)."""
    return entries[:limit]


def percent(part: float, whole: float) -> str:
    if not whole:
        return "0%"
    share = 100 * part / whole
    return f"{share:.0f}%" if share >= 1 or share == 0 else f"{share:.1g}%"


# --- which tensors of a state dict are layer weights ---------------------------------------------

# State dicts have no graph: a layer weight is a 2-D+ tensor named like one, minus the tables
# that are not matrix products (position embeddings, rotary frequencies).
_WEIGHT_NAME = re.compile(r"(^|\.)(weight\w*|kernel)$", re.IGNORECASE)
_NOT_A_LAYER = re.compile(r"(^|[._])(pos|positions?|positional|rel_pos|rotary\w*|inv_freq|wpe)"
                          r"(_|\.|$|emb)", re.IGNORECASE)


def named_like_layer_weight(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and bool(_WEIGHT_NAME.search(name)) and not _NOT_A_LAYER.search(name)


def guess_layer_op(name: str, shape: tuple[int, ...]) -> str:
    """The ONNX op a state-dict weight would export to, from torch's naming and layouts."""
    lowered = name.lower()
    if re.search(r"weight_(ih|hh)", lowered):
        return "LSTM"  # torch's LSTM/GRU/RNN and their cells
    if "embed" in lowered or re.search(r"(^|\.)(wte|tok\w*)\.weight$", lowered):
        return "Gather"
    return "Conv" if len(shape) >= 3 else "MatMul"
