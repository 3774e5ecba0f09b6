"""`bloatguard show PATH`: where a model's params, bytes, compute and activations are, layer by
layer (bloatguard.layers), so that a budget finding can be traced to the layers that cause it.

For ONNX a row is a node: its weights, params and bytes, its MACs and the bytes of the values it
computes, counted by the same shape inference as `check` (in a child process, like `check`), so
the rows add up to the totals `check` reports. Formats without a graph list modules instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloatguard.errors import BloatguardError

if TYPE_CHECKING:  # the CLI imports this module for its choices: keep start-up light
    from bloatguard.facts import ModelFacts
    from bloatguard.layers import LayerRow

SORT_KEYS = {"macs": "macs", "params": "params", "bytes": "weight_bytes",
             "memory": "activation_bytes", "order": None}
GROUPINGS = ("layer", "op-type", "dtype")
FORMATS = ("text", "json", "csv", "markdown")
# The CSV columns (the README's `show` section lists them; the first six are the contract).
CSV_COLUMNS = ("name", "op", "params", "weight_bytes", "macs", "activation_bytes",
               "params_share", "macs_share", "dtypes", "weights")


@dataclass
class Profile:
    """One model's rows and the totals they add up to."""

    path: str
    format: str
    rows: list[LayerRow]
    params: int | None
    weight_bytes: int | None
    macs: int | None
    by: str = "layer"
    notes: list[str] = field(default_factory=list)
    macs_formula: str | None = None  # when MACs are unknown for want of symbolic dims' values
    shown: int = 0  # rows before --top cut them


def profile(path: Path, config, display: str) -> Profile:
    """Read the model and measure its layers."""
    from bloatguard.formats import read_model
    from bloatguard.layers import layer_rows

    facts = read_model(path, display)
    if facts.unreadable:
        raise BloatguardError(f"{display}: {facts.unreadable}" + (f"; {facts.remedy}" if facts.remedy else ""))
    if facts.weights_unknown:
        raise BloatguardError(f"{display}: its weights were not read ({'; '.join(facts.notes[:1])}); "
                              "`bloatguard check` says why")
    if hasattr(facts.handle, "layers"):
        shapes = config.resolve(path).inputs
        if shapes:
            from bloatguard.measure.dims import check_configured

            # As in check and fix: rows for a shape the model cannot run describe nothing.
            check_configured(display, {value.name: value.shape for value in facts.inputs}, shapes)
        _measure_graph(facts, shapes)
    rows = layer_rows(facts)
    return Profile(display, facts.format, rows, facts.params, facts.weight_bytes, facts.macs,
                   notes=list(facts.notes), shown=len(rows),
                   macs_formula=facts.macs_formula["text"] if facts.macs_formula else None)


def _measure_graph(facts: ModelFacts, input_shapes: dict[str, list[int]]) -> None:
    """MACs per node and every value's bytes, from shape inference in a child process (native
    code fed with untrusted input), into the facts' layers."""
    from bloatguard.isolate import IsolationError, Queue

    [outcome] = Queue(_profile_file, [(facts.file, input_shapes)], workers=1).results(timeout=120)
    if isinstance(outcome, (IsolationError, Exception)):
        facts.note(f"MACs not measured: shape inference {outcome}")
        facts.layers = facts.handle.layers(facts, None)
        return
    facts.macs = outcome["macs"]
    if outcome.get("formula"):
        facts.macs_formula = {"exact": outcome["formula"], "text": outcome["formula_text"]}
    for note in outcome["notes"]:
        facts.note(note)
    by_node = outcome["by_node"] if outcome["macs"] is not None else None
    facts.layers = facts.handle.layers(facts, by_node, outcome["sizes"])


def _profile_file(job) -> dict:
    from dataclasses import asdict

    from bloatguard.formats.onnx import read_proto
    from bloatguard.measure.compute import profile as node_profile

    path, shapes = job
    macs, sizes = node_profile(read_proto(path), shapes)
    return {**asdict(macs), "sizes": sizes}


def arrange(profile: Profile, *, sort: str = "params", top: int | None = None,
            by: str = "layer") -> Profile:
    """Group (--by), sort (--sort, largest first; `order`: the model's own) and cut (--top)."""
    rows = profile.rows if by == "layer" else _grouped(profile.rows, by)
    key = SORT_KEYS[sort]
    if key is not None:
        rows = sorted(rows, key=lambda row: getattr(row, key) or 0, reverse=True)
    total = len(rows)
    if top is not None:
        rows = rows[:top]
    return Profile(profile.path, profile.format, rows, profile.params, profile.weight_bytes,
                   profile.macs, by, profile.notes, profile.macs_formula, shown=total)


def _grouped(rows: list[LayerRow], by: str) -> list[LayerRow]:
    """One row per op type (counting its layers), or per weight dtype (counting its tensors)."""
    from bloatguard.layers import LayerRow

    groups: dict[str, LayerRow] = {}
    for row in rows:
        if by == "op-type":
            name = row.op or "(no op)"
            if name not in groups:
                groups[name] = LayerRow(name, "", macs=0, activation_bytes=0, count=0)
            group = groups[name]
            group.count += 1
            group.tensors += row.tensors
            group.macs = None if group.macs is None or row.macs is None else group.macs + row.macs
            group.activation_bytes = (None if group.activation_bytes is None
                                      or row.activation_bytes is None
                                      else group.activation_bytes + row.activation_bytes)
        else:
            for tensor in row.tensors:
                group = groups.setdefault(tensor.dtype, LayerRow(tensor.dtype, "", count=0))
                group.tensors.append(tensor)
                group.count += 1
    return list(groups.values())


# --- writers ---------------------------------------------------------------------------------

def render(profile: Profile, output_format: str) -> str:
    return {"text": _text, "json": _json, "csv": _csv, "markdown": _markdown}[output_format](profile)


def _share(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else part / whole


def _row_json(row: LayerRow, profile: Profile) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": row.name}
    if profile.by == "layer":
        entry["op"] = row.op
    else:
        entry["layers" if profile.by == "op-type" else "tensors"] = row.count
    entry.update({
        "params": row.params, "weight_bytes": row.weight_bytes, "macs": row.macs,
        "activation_bytes": row.activation_bytes,
        "params_share": _share(row.params, profile.params), "macs_share": _share(row.macs, profile.macs),
        "dtypes": row.dtypes})
    if profile.by == "layer":
        entry["weights"] = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in row.tensors]
    return entry


def _json(profile: Profile) -> str:
    import json

    document = {"path": profile.path, "format": profile.format, "by": profile.by,
                "totals": {"params": profile.params, "weight_bytes": profile.weight_bytes,
                           "macs": profile.macs, "macs_formula": profile.macs_formula},
                "rows": [_row_json(row, profile) for row in profile.rows],
                "rows_total": profile.shown, "notes": profile.notes}
    return json.dumps(document, indent=2) + "\n"


def _csv(profile: Profile) -> str:
    """A header row and one row per layer, for spreadsheets and pandas. A cell a spreadsheet
    would take for a formula (a name starting with =, +, - or @) is quoted with a leading '."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in profile.rows:
        entry = _row_json(row, profile)
        weights = ";".join(f"{t.name}:{t.dtype}[{','.join(map(str, t.shape))}]" for t in row.tensors) \
            if profile.by == "layer" else ""
        writer.writerow([_cell(row.name), _cell(entry.get("op", row.count)),
                         *(_number(entry[key]) for key in CSV_COLUMNS[2:8]),
                         _cell(" ".join(row.dtypes)), _cell(weights)])
    return out.getvalue()


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _cell(value: Any) -> str:
    from bloatguard.untrusted import one_line

    text = one_line(str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _columns(profile: Profile) -> list[tuple[str, Any]]:
    """(heading, row -> cell text) of the text and markdown tables."""
    from bloatguard.units import format_amount

    def amount(key: str, kind: str):
        return lambda row: format_amount(getattr(row, key), kind)

    def share(key: str, whole: int | None):
        return lambda row: "" if (value := _share(getattr(row, key), whole)) is None else f"{value:.1%}"

    second = {"layer": ("op", lambda row: row.op or "-"),
              "op-type": ("layers", lambda row: str(row.count)),
              "dtype": ("tensors", lambda row: str(row.count))}[profile.by]
    columns = [second, ("params", amount("params", "count")), ("%", share("params", profile.params)),
               ("weight bytes", amount("weight_bytes", "bytes"))]
    if profile.by == "dtype":  # compute belongs to layers, not to a dtype
        return columns
    if profile.macs is not None or any(row.macs for row in profile.rows):
        columns += [("MACs", amount("macs", "count")), ("%", share("macs", profile.macs))]
    if any(row.activation_bytes is not None for row in profile.rows):
        columns.append(("activations", amount("activation_bytes", "bytes")))
    if profile.by == "layer":
        columns.append(("dtype", lambda row: ",".join(row.dtypes)))
    return columns


def _heading(profile: Profile) -> str:
    return {"layer": "layer", "op-type": "op type", "dtype": "dtype"}[profile.by]


def _totals_line(profile: Profile) -> str:
    from bloatguard.units import format_amount

    rows = f"{profile.shown} {'row' if profile.shown == 1 else 'rows'}"
    macs = profile.macs_formula if profile.macs is None and profile.macs_formula else \
        format_amount(profile.macs, "count")
    return (f"total ({rows}): {format_amount(profile.params, 'count')} params, "
            f"{format_amount(profile.weight_bytes, 'bytes')}, {macs} MACs")


def _text(profile: Profile) -> str:
    from bloatguard.untrusted import one_line

    columns = _columns(profile)
    table = [[_heading(profile), *(heading for heading, _ in columns)]]
    table += [[_clip(one_line(row.name), 60), *(one_line(cell(row)) for _, cell in columns)]
              for row in profile.rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(table[0]))]
    out = [one_line(f"{profile.path} ({profile.format})")]
    words = {0} | {index + 1 for index, (heading, _) in enumerate(columns) if heading in ("op", "dtype")}
    for index, line in enumerate(table):
        out.append("  " + "  ".join(
            cell.ljust(width) if column in words else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths))).rstrip())
        if index == 0:
            out.append("  " + "  ".join("-" * width for width in widths))
    if len(profile.rows) < profile.shown:
        out.append(f"  … {profile.shown - len(profile.rows)} more (--top shows more)")
    out.append("  " + _totals_line(profile))
    out += [one_line(f"  note: {note}") for note in profile.notes]
    return "\n".join(out) + "\n"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _markdown(profile: Profile) -> str:
    from bloatguard.report.markdown import code, text

    columns = _columns(profile)
    lines = [f"### {code(profile.path)} by {_heading(profile)}", "",
             "| " + " | ".join([_heading(profile), *(heading for heading, _ in columns)]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for row in profile.rows:
        cells = [code(row.name), *(code(cell(row)) if heading in ("op", "dtype") and cell(row) != "-"
                                   else text(cell(row)) for heading, cell in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    if len(profile.rows) < profile.shown:
        lines.append(f"| … {profile.shown - len(profile.rows)} more |" + " |" * len(columns))
    lines += ["", _totals_line(profile), ""]
    lines += [f"- note: {text(note)}" for note in profile.notes]
    return "\n".join(lines).rstrip() + "\n"
