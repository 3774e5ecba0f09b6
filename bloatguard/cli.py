"""Command-line entry points: check, init, merge, ci, rules, explain.

Start-up matters (this runs as a pre-commit hook), so heavy modules are imported inside the
commands that need them, never at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloatguard import __version__
from bloatguard.report import FORMATS

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT_EVALUATE = 0, 1, 2


def _split_codes(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [code.strip() for value in values for code in value.split(",") if code.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bloatguard",
        description="Keep machine-learning model files within their size, parameter and compute budgets.")
    parser.add_argument("--version", action="version", version=f"bloatguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="measure models and check them against the budgets")
    check.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                       help="model files or directories (default: the current directory)")
    check.add_argument("--config", type=Path, metavar="FILE",
                       help="config file (default: bloatguard.toml or pyproject.toml found by "
                            "walking up from the paths)")
    check.add_argument("--output-format", choices=FORMATS, default="text")
    check.add_argument("--output-file", type=Path, metavar="FILE",
                       help="write the report here instead of standard output")
    check.add_argument("--base", metavar="REF",
                       help="compare with this git ref: a branch is compared at its merge-base "
                            "with HEAD (what a pull request shows), a SHA as is")
    check.add_argument("--staged", action="store_true",
                       help="check the staged version of each file against HEAD (pre-commit); in a "
                            "pre-push hook, the pushed commits (PRE_COMMIT_FROM_REF..TO_REF)")
    check.add_argument("--fetch-base", action="store_true",
                       help="fetch the base commit from origin when a shallow clone lacks it")
    check.add_argument("--no-cache", action="store_true", help="do not read or write the metric cache")
    check.add_argument("--latency", action=argparse.BooleanOptionalAction, default=None,
                       help="measure onnxruntime CPU latency (default: on with --base, off "
                            "otherwise and in the pre-commit hook)")
    check.add_argument("--select", action="append", metavar="CODES",
                       help="only these rules (codes, prefixes or names; comma-separated)")
    check.add_argument("--ignore", action="append", metavar="CODES",
                       help="skip these rules (codes, prefixes or names; comma-separated)")
    check.add_argument("--shard", type=_shard, metavar="K/N",
                       help="check only the K-th of N parts of the models (split by a hash of each "
                            "path), for parallel CI jobs; `bloatguard merge` joins their JSON reports")
    check.add_argument("--jobs", type=_jobs, default=1, metavar="N",
                       help="check N models at a time in worker processes: the rules that read "
                            "the weights; latency is still timed one model at a time")
    check.add_argument("--strict", action="store_true",
                       help="a config table that matches no model is an error, not a warning")

    merge = commands.add_parser("merge", help="combine the JSON reports of sharded checks")
    merge.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json")
    merge.add_argument("--output-format", choices=FORMATS, default="text")
    merge.add_argument("--output-file", type=Path, metavar="FILE",
                       help="write the report here instead of standard output")

    commands.add_parser(
        "ci", help="run as the GitHub Action: check, annotate, summarize, comment",
        description="The GitHub Action's logic. Its inputs are read from BLOATGUARD_* environment "
                    "variables (see bloatguard/ci.py), the workflow run's from GITHUB_*.")

    init = commands.add_parser("init", help="write a starting config from today's measurements")
    init.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="model files or directories (default: the current directory)")
    init.add_argument("--config-file", type=Path, metavar="FILE",
                      help="where to write (default: pyproject.toml if present, else bloatguard.toml)")
    init.add_argument("--headroom", default="10%",
                      help="budgets = today's value plus this (default: 10%%)")
    init.add_argument("--growth", default="5%",
                      help="allowed growth per change against --base (default: 5%%)")

    from bloatguard.fix import command as fix_command

    fix_command.add_parser(commands)
    from bloatguard import compare

    compare.add_parser(commands)
    commands.add_parser("rules", help="list the rules")
    explain = commands.add_parser("explain", help="print a rule's documentation")
    explain.add_argument("code", metavar="CODE", help="rule code or name, e.g. BG002 or param-count")
    return parser


def entry() -> None:
    """The console script: `main`, then an immediate exit.

    Tearing down onnx, numpy and protobuf at interpreter exit costs 20-40 ms, a tenth of a
    static check, and buys nothing: every file and temporary directory is closed by the time
    `main` returns (with statements, not finalizers), so only the streams need flushing."""
    import os

    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, OSError):  # the reader went away (`bloatguard check | head`)
        pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bloatguard.errors import BloatguardError

    try:
        return _run(args)
    except BloatguardError as exc:
        print(f"bloatguard: error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_EVALUATE
    except BrokenPipeError:  # the reader went away (`bloatguard rules | head -1`)
        _discard_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("bloatguard: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug must still end in one line and exit 2, not a traceback
        import os

        if os.environ.get("BLOATGUARD_DEBUG"):
            raise
        print(f"bloatguard: internal error: {type(exc).__name__}: {exc} (set BLOATGUARD_DEBUG=1 "
              "for a traceback, and please report it)", file=sys.stderr)
        return EXIT_CANNOT_EVALUATE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that nothing else (a flush at exit) writes to a closed pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        return run_check(args)
    if args.command == "init":
        return run_init(args)
    if args.command == "merge":
        return run_merge(args)
    if args.command == "ci":
        from bloatguard import ci

        return ci.run()
    if args.command == "fix":
        from bloatguard.fix import command as fix_command

        return fix_command.run(args)
    if args.command == "compare":
        from bloatguard import compare

        return compare.run(args)
    if args.command == "rules":
        return run_rules()
    if args.command == "explain":
        return run_explain(args.code)
    build_parser().print_help()
    return EXIT_CANNOT_EVALUATE


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


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes, got {text!r}") from None
    if jobs < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return jobs


def run_check(args: argparse.Namespace) -> int:
    from bloatguard import engine
    from bloatguard.untrusted import one_line

    results, config, rules, unmatched = collect(args)
    write_report(results, args.output_format, args.output_file, rules=rules, unmatched=unmatched,
                 budgets_for=lambda result: config.resolve(Path(result.path)).budgets)
    # What could not be evaluated, and config tables that apply to nothing: one line each on
    # stderr whatever the format, unless the text report just showed them on this terminal.
    shown = args.output_format == "text" and args.output_file is None and _same_terminal()
    if not shown:
        for result in results:
            for finding in result.findings:
                if finding.code == "BG000":
                    print(one_line(f"bloatguard: {result.path}: {finding.message}"), file=sys.stderr)
        for table in unmatched:
            print(one_line(f"bloatguard: warning: {table.message}"), file=sys.stderr)
    if unmatched and args.strict:
        print(f"bloatguard: error: {len(unmatched)} config table(s) match no model (--strict)",
              file=sys.stderr)
        return EXIT_CANNOT_EVALUATE
    return engine.exit_code(results)


def _same_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def collect(args: argparse.Namespace):
    """Measure and check what `bloatguard check` was asked to: (results, config, rules that ran,
    config tables that matched no model)."""
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
    return results, config, rules, _unmatched_tables(config, paths, results)


def _unmatched_tables(config, paths: list[Path], results) -> list:
    """Config tables that match no model, judged when a directory was checked: a hook run on a
    few staged files says nothing about the tables for the others."""
    from bloatguard.coverage import unmatched_tables
    from bloatguard.discover import discover

    if not any(path.is_dir() for path in paths):
        return []
    checked = [result.settings_path or Path(result.path) for result in results]
    return unmatched_tables(config, checked, lambda: discover([config.root], config))


def write_report(results, output_format: str, output_file: Path | None, **context) -> None:
    import os

    from bloatguard.report import writer

    report = writer(output_format)(results, **context)
    if output_file:
        from bloatguard.errors import BloatguardError

        try:
            output_file.write_text(report, encoding="utf-8")
        except OSError as exc:
            raise BloatguardError(f"{output_file}: cannot write the report ({exc.strerror or exc})") from None
    else:
        try:
            sys.stdout.write(report)
            sys.stdout.flush()
        except BrokenPipeError:  # `bloatguard check | head`: the exit code still says the verdict
            _discard_stdout()
    if output_format == "github" and os.environ.get("GITHUB_STEP_SUMMARY"):
        # Findings beyond GitHub's annotation limits would be lost: list them in the summary.
        from bloatguard.ci import append_summary
        from bloatguard.report.github import overflow_markdown

        append_summary(Path(os.environ["GITHUB_STEP_SUMMARY"]), overflow_markdown(results))


def run_merge(args: argparse.Namespace) -> int:
    from bloatguard.engine import exit_code
    from bloatguard.merge import merge_reports

    results = merge_reports(args.reports)
    write_report(results, args.output_format, args.output_file)
    return exit_code(results)


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


def run_init(args: argparse.Namespace) -> int:
    from bloatguard.errors import BloatguardError
    from bloatguard.init import run_init as init
    from bloatguard.units import parse_growth

    try:
        headroom = parse_growth(args.headroom, "count").relative
        parse_growth(args.growth, "count")
    except ValueError as exc:
        raise BloatguardError(f"--headroom/--growth: {exc}") from None
    if headroom is None:
        raise BloatguardError("--headroom must be a percentage such as 10%")
    target = init(args.paths, target=args.config_file, headroom=headroom, growth=args.growth)
    print(f"bloatguard: wrote budgets for the models under {', '.join(map(str, args.paths or ['.']))} "
          f"to {target}")
    return EXIT_OK


def run_rules() -> int:
    from tabulate import tabulate

    from bloatguard.registry import all_rules

    rows = [(rule.code, rule.name, rule.default_severity.value, rule.summary) for rule in all_rules()]
    print(tabulate(rows, headers=["code", "name", "default", "checks"], tablefmt="simple"))
    return EXIT_OK


def run_explain(code: str) -> int:

    from bloatguard.errors import BloatguardError
    from bloatguard.registry import find_rule

    rule = find_rule(code)
    if rule is None:
        raise BloatguardError(f"unknown rule {code!r}; `bloatguard rules` lists them")
    print(f"# {rule.code} {rule.name}\n")
    print(f"{rule.summary}. Default severity: {rule.default_severity.value}.\n")
    print(rule.documentation())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
