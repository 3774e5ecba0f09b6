"""`bloatguard history PATH`: a model's metrics at every first-parent commit that changed it.

Teams lose ground through many small regressions that each stay under the per-change budget;
this shows the whole curve. Renames are followed, each distinct blob is measured once (through
the metric cache), and the points come out as a table, JSON, CSV, or markdown with a Mermaid
`xychart-beta` chart (GitHub renders it); `--plot` writes a PNG or SVG line chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloatguard.errors import BloatguardError

CHARTED = ("params", "file_size", "macs", "activation_memory", "weight_bytes")


@dataclass
class Point:
    sha: str
    date: str
    subject: str
    path: str  # the model's path in that commit (it may have been renamed since)
    metrics: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.sha, "date": self.date, "subject": self.subject, "path": self.path,
                "metrics": self.metrics}


def collect(path: Path, config, *, since: str | None = None, max_count: int | None = None,
            use_cache: bool = True) -> tuple[str, list[Point]]:
    """(the model's repository path, its points, oldest first)."""
    from bloatguard.engine import measure_blobs
    from bloatguard.gitbase import GitRepo

    repo = GitRepo(path)
    relpath = repo.relpath(path)
    commits = repo.path_history(relpath, since=since, max_count=max_count)
    if not commits:
        raise BloatguardError(f"{path}: no commit changed this file"
                              + (f" since {since}" if since else "") + "; is it committed?")
    blobs: list[tuple] = []
    order: dict[str, int] = {}
    for sha, _, _, old_path in commits:
        blob = repo.tree_blob(sha, old_path)
        if blob is not None and blob.sha not in order:  # a revert: measured once
            order[blob.sha] = len(blobs)
            blobs.append((blob, sha, old_path, repo.root / relpath))
    facts = measure_blobs(repo, blobs, config, use_cache=use_cache)
    points = []
    for sha, date, subject, old_path in reversed(commits):
        blob = repo.tree_blob(sha, old_path)
        if blob is None:
            continue  # deleted in this commit
        measured = facts[order[blob.sha]]
        metrics = measured.metrics() if not measured.unreadable else {"unreadable": measured.unreadable}
        points.append(Point(sha, date, subject, old_path, metrics))
    return relpath, points


def render(relpath: str, points: list[Point], metric: str, output_format: str) -> str:
    import json

    if output_format == "json":
        return json.dumps({"path": relpath, "points": [p.to_json() for p in points]}, indent=2) + "\n"
    if output_format == "csv":
        return _csv(points)
    if output_format == "markdown":
        return _markdown(relpath, points, metric)
    return _text(relpath, points, metric)


def _text(relpath: str, points: list[Point], metric: str) -> str:
    from tabulate import tabulate

    from bloatguard.metrics import BY_KEY
    from bloatguard.units import format_amount

    kind = BY_KEY[metric].kind
    rows, previous = [], None
    for point in points:
        value = point.metrics.get(metric)
        rows.append([point.date[:10], point.sha[:7], _clip(point.subject, 50),
                     format_amount(value, kind), _delta(previous, value, kind)])
        previous = value if value is not None else previous
    table = tabulate(rows, headers=["date", "commit", "subject", BY_KEY[metric].label, "change"],
                     tablefmt="simple", disable_numparse=True)
    return f"{relpath}: {BY_KEY[metric].label} at {len(points)} commit(s)\n{table}\n"


def _delta(before: Any, after: Any, kind: str) -> str:
    from bloatguard.units import format_amount

    if before is None or after is None:
        return ""
    delta = after - before
    if not delta:
        return "0"
    percent = f" ({delta / before * 100:+.1f}%)" if before else ""
    return ("+" if delta > 0 else "-") + format_amount(abs(delta), kind) + percent


def _clip(text: str, width: int) -> str:
    from bloatguard.untrusted import one_line

    text = one_line(text)
    return text if len(text) <= width else text[:width - 1] + "…"


def _csv(points: list[Point]) -> str:
    import csv
    import io

    from bloatguard.metrics import BY_KEY

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = [metric for metric in BY_KEY if any(metric in p.metrics for p in points)]
    writer.writerow(["sha", "date", "subject", "path", *keys])
    for point in points:
        writer.writerow([point.sha, point.date, point.subject, point.path,
                         *("" if point.metrics.get(key) is None else point.metrics[key] for key in keys)])
    return out.getvalue()


def _markdown(relpath: str, points: list[Point], metric: str) -> str:
    """A Mermaid xychart-beta (GitHub renders it in comments, issues and files) and the table."""
    from bloatguard.metrics import BY_KEY
    from bloatguard.report.markdown import code, text
    from bloatguard.units import format_amount

    spec = BY_KEY[metric]
    charted = [(p, p.metrics.get(metric)) for p in points if p.metrics.get(metric) is not None]
    lines = [f"### {spec.label} of {code(relpath)}", ""]
    if charted:
        labels = ", ".join(f'"{p.sha[:7]}"' for p, _ in charted)
        values = ", ".join(str(value) for _, value in charted)
        lines += ["```mermaid", "xychart-beta", f'    title "{spec.label} per commit"',
                  f"    x-axis [{labels}]", f'    y-axis "{spec.label}"', f"    line [{values}]",
                  "```", ""]
    lines += ["| date | commit | subject | " + spec.label + " |", "|---|---|---|---|"]
    lines += [f"| {p.date[:10]} | `{p.sha[:7]}` | {text(p.subject)} | "
              f"{format_amount(p.metrics.get(metric), spec.kind)} |" for p in points]
    return "\n".join(lines) + "\n"


def plot(relpath: str, points: list[Point], metric: str, target: Path) -> None:
    """A line chart of one metric, PNG or SVG by the target's suffix (matplotlib: the `plot`
    extra)."""
    from bloatguard.metrics import BY_KEY

    if target.suffix.lower() not in (".png", ".svg"):
        raise BloatguardError(f"{target}: --plot writes .png or .svg files")
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: render to a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise BloatguardError("--plot needs matplotlib: pip install 'bloatguard[plot]'") from None
    spec = BY_KEY[metric]
    charted = [(p, float(p.metrics[metric])) for p in points if p.metrics.get(metric) is not None]
    figure, axes = plt.subplots(figsize=(8, 3.5), dpi=100)
    axes.plot(range(len(charted)), [value for _, value in charted], marker="o")
    axes.set_xticks(range(len(charted)), [p.sha[:7] for p, _ in charted], rotation=45, fontsize=8)
    axes.set_ylabel(f"{spec.label} ({spec.kind})")
    axes.set_title(f"{relpath}: {spec.label} per commit")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    try:
        figure.savefig(target, format=target.suffix.lower()[1:])
    except OSError as exc:
        raise BloatguardError(f"{target}: cannot write the chart ({exc.strerror or exc})") from None
    finally:
        plt.close(figure)
