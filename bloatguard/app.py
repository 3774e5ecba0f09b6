"""What `bloatguard check` does, as an application: the options it takes, the config it finds,
the run it makes. The command line (cli), the GitHub Action (ci) and `fix` all call this; none
of them calls another's entry point.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloatguard.report import FORMATS


@dataclass
class CheckRun:
    """What one check produced: per-model results, the config and rules used, and the config
    tables that matched no model (bloatguard.coverage)."""

    results: list
    config: Any
    rules: list
    unmatched: list


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `bloatguard check` (also what the Action's `args` input may hold)."""
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                       help="model files or directories (default: the current directory)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                       help="config file (default: bloatguard.toml or pyproject.toml found by "
                            "walking up from the paths)")
    parser.add_argument("--output-format", choices=FORMATS, default="text")
    parser.add_argument("--output-file", type=Path, metavar="FILE",
                       help="write the report here instead of standard output")
    parser.add_argument("--base", metavar="REF",
                       help="compare with this git ref: a branch is compared at its merge-base "
                            "with HEAD (what a pull request shows), a SHA as is")
    parser.add_argument("--staged", action="store_true",
                       help="check the staged version of each file against HEAD (pre-commit); in a "
                            "pre-push hook, the pushed commits (PRE_COMMIT_FROM_REF..TO_REF)")
    parser.add_argument("--fetch-base", action="store_true",
                       help="fetch the base commit from origin when a shallow clone lacks it")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the metric cache")
    parser.add_argument("--latency", action=argparse.BooleanOptionalAction, default=None,
                       help="measure onnxruntime CPU latency and peak memory (default: on with "
                            "--base, off otherwise and in the pre-commit hook)")
    parser.add_argument("--select", action="append", metavar="CODES",
                       help="only these rules (codes, prefixes or names; comma-separated)")
    parser.add_argument("--ignore", action="append", metavar="CODES",
                       help="skip these rules (codes, prefixes or names; comma-separated)")
    parser.add_argument("--shard", type=_shard, metavar="K/N",
                       help="check only the K-th of N parts of the models (split by a hash of each "
                            "path), for parallel CI jobs; `bloatguard merge` joins their JSON reports")
    parser.add_argument("--jobs", type=at_least_one("a number of processes"), default=1, metavar="N",
                       help="check N models at a time in worker processes: the rules that read "
                            "the weights; latency is still timed one model at a time")
    parser.add_argument("--strict", action="store_true",
                       help="a config table (or waiver) that matches nothing is an error, not a warning")
    parser.add_argument("--accept-regressions", metavar="REASON",
                        help="accept every regression finding (growth against --base; never an "
                             "absolute budget, an unreadable model or unsafe content) with this "
                             "reason: what the Action's accept label does")


def check_parser() -> argparse.ArgumentParser:
    """A parser of `bloatguard check`'s arguments alone (the Action builds its run with it)."""
    parser = argparse.ArgumentParser(prog="bloatguard check")
    add_check_arguments(parser)
    return parser


def _split_codes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [code.strip() for value in values for code in value.split(",") if code.strip()]


def load_config(config_path: Path | None, paths: list[Path]):
    from bloatguard import config

    if config_path is None:
        start = Path(_common_parent(paths)) if paths else Path.cwd()
        config_path = config.find_config_file(start)
    return config.load(config_path)


def _common_parent(paths: list[Path]) -> str:
    import os

    resolved = [str(p.resolve()) for p in paths]
    return os.path.commonpath(resolved) if len(resolved) > 1 else resolved[0]


def _shard(text: str):
    from bloatguard.engine import Shard

    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def at_least_one(what: str):
    """An argparse type: a whole number >= 1, `what` naming it in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    return parse


def collect(args: argparse.Namespace) -> CheckRun:
    """Measure and check what `bloatguard check` was asked to."""
    from bloatguard import engine
    from bloatguard.progress import Progress

    paths = args.paths or [Path(".")]
    config = load_config(args.config, paths)
    selection = engine.Selection(select=_split_codes(args.select), ignore=_split_codes(args.ignore) or [])
    rules = selection.rules(config)  # a typo in --select fails now, not after measuring everything
    progress = Progress()
    base, head = _comparison(args)
    # Latency is noisy and slow: on by default only for a CI comparison, never in the hook.
    latency = args.latency if args.latency is not None else (args.base is not None and not args.staged)
    if base is not None or args.staged:
        results = engine.check_against_base(paths, config, selection, base, staged=args.staged and head is None,
                                            head_ref=head, fetch=args.fetch_base,
                                            use_cache=not args.no_cache, progress=progress,
                                            latency=latency, shard=args.shard, jobs=args.jobs)
    else:
        results = engine.check(paths, config, selection, progress=progress, latency=latency,
                               shard=args.shard, jobs=args.jobs)
    progress.done()
    warnings = _unmatched_tables(config, paths, results)
    stale = _apply_waivers(args, config, results, base, head)
    if any(path.is_dir() for path in paths):  # a hook's few files say nothing of the others
        warnings += stale
    return CheckRun(results, config, rules, warnings)


def _apply_waivers(args: argparse.Namespace, config, results, base: str | None,
                   head: str | None) -> list:
    """Accept what the config's waivers, the compared range's trailers and the accept label
    cover; returns the config waivers that matched nothing."""
    import datetime

    from bloatguard import waivers

    found = [*config.accept, *_trailer_waivers(args, base, head)]
    if args.accept_regressions:
        found.append(waivers.for_label(args.accept_regressions))
    if not found:
        return []
    return waivers.apply(results, found, waivers.relative_to(config.root),
                         today=datetime.date.today())


def _trailer_waivers(args: argparse.Namespace, base: str | None, head: str | None) -> list:
    """Waivers from `Bloatguard-Accept:` trailers of the commits being compared (base..head)."""
    if base is None:
        return []
    from bloatguard import waivers
    from bloatguard.errors import BloatguardError
    from bloatguard.gitbase import GitRepo

    repo = GitRepo(args.paths[0] if args.paths else Path.cwd())
    try:
        return waivers.from_trailers(repo.messages(repo.resolve_base(base), head or "HEAD"))
    except ValueError as exc:
        raise BloatguardError(str(exc)) from None


def _unmatched_tables(config, paths: list[Path], results) -> list:
    """Config tables that match no model, judged when a directory was checked: a hook run on a
    few staged files says nothing about the tables for the others."""
    from bloatguard.coverage import unmatched_tables
    from bloatguard.discover import discover

    if not any(path.is_dir() for path in paths):
        return []
    checked = [result.settings_path or Path(result.path) for result in results]
    return unmatched_tables(config, checked, lambda: discover([config.root], config))


def _comparison(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(base ref, head ref) for this run. Head None means the working tree, or the index with
    --staged. pre-commit's pre-push stage exports the pushed range as PRE_COMMIT_FROM_REF/TO_REF."""
    import os

    if args.staged:
        from_ref, to_ref = os.environ.get("PRE_COMMIT_FROM_REF"), os.environ.get("PRE_COMMIT_TO_REF")
        if from_ref and to_ref:
            # A new branch is pushed with an all-zero FROM ref: nothing to compare with, so its
            # models are new (absolute budgets only) unless --base names a comparison point.
            return args.base or (None if set(from_ref) <= {"0"} else from_ref), to_ref
        return args.base or _head_if_any(args), None
    return args.base, None


def _head_if_any(args: argparse.Namespace) -> str | None:
    """HEAD, or None before the first commit (then every staged model is new)."""
    from bloatguard.gitbase import GitRepo

    repo = GitRepo(args.paths[0] if args.paths else Path.cwd())
    return "HEAD" if repo.commit_of("HEAD") else None


