"""Command-line entry points: check, init, merge, ci, rules, explain.

Start-up matters (this runs as a pre-commit hook), so heavy modules are imported inside the
commands that need them, never at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bloatguard import __version__, app
from bloatguard.history import CHARTED
from bloatguard.report import FORMATS
from bloatguard.show import FORMATS as SHOW_FORMATS
from bloatguard.show import GROUPINGS as SHOW_GROUPINGS
from bloatguard.show import SORT_KEYS as SHOW_SORT_KEYS

EXIT_OK, EXIT_FINDINGS, EXIT_CANNOT_EVALUATE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bloatguard",
        description="Keep machine-learning model files within their size, parameter and compute budgets.")
    parser.add_argument("--version", action="version", version=f"bloatguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="measure models and check them against the budgets")
    app.add_check_arguments(check)

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

    history = commands.add_parser(
        "history", help="a model's metrics at every commit that changed it (with a chart)",
        description="One point per first-parent commit that changed the model (renames "
                    "followed), each distinct version measured once through the metric cache.")
    history.add_argument("path", type=Path, metavar="PATH", help="a committed model file")
    history.add_argument("--since", metavar="REF", help="only commits after this one")
    history.add_argument("--max-count", type=app.at_least_one("a whole number"), metavar="N", help="at most N commits")
    history.add_argument("--metric", default="params", choices=CHARTED,
                         help="what the text, markdown and chart show (default: params)")
    history.add_argument("--output-format", choices=("text", "json", "markdown", "csv"),
                         default="text")
    history.add_argument("--plot", type=Path, metavar="FILE.png|FILE.svg",
                         help="also draw the metric as a line chart (needs matplotlib)")
    history.add_argument("--config", type=Path, metavar="FILE", help="config file (input shapes)")
    history.add_argument("--no-cache", action="store_true", help="do not read or write the metric cache")

    show = commands.add_parser(
        "show", help="where a model's params, bytes, MACs and activations are, layer by layer",
        description="One row per node that owns weights or computes (ONNX, TFLite), or per module "
                    "(state dicts, safetensors, GGUF); the rows add up to check's totals.")
    show.add_argument("path", type=Path, metavar="PATH", help="a model file")
    show.add_argument("--sort", default="params", choices=tuple(SHOW_SORT_KEYS),
                      help="largest first by this (order: the model's own; default: params)")
    show.add_argument("--top", type=app.at_least_one("a whole number"), metavar="N", help="only the N largest rows")
    show.add_argument("--by", default="layer", choices=SHOW_GROUPINGS,
                      help="one row per layer (default), per op type, or per weight dtype")
    show.add_argument("--output-format", choices=SHOW_FORMATS, default="text")
    show.add_argument("--config", type=Path, metavar="FILE", help="config file (input shapes)")

    baseline = commands.add_parser(
        "baseline", help="accept today's error findings (bounded, with a reason and an expiry)",
        description="Write one [[accept]] waiver per current error finding into the config, "
                    "bounded at today's value, so adopting bloatguard does not start red.")
    baseline.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                          help="model files or directories (default: the current directory)")
    baseline.add_argument("--config", type=Path, metavar="FILE", help="config file to extend")
    baseline.add_argument("--reason", default="baseline: accepted when bloatguard was adopted",
                          help="why these findings are accepted (written into each waiver)")
    when = baseline.add_mutually_exclusive_group()
    when.add_argument("--expires", type=_date, metavar="YYYY-MM-DD", help="when the waivers expire")
    when.add_argument("--days", type=int, metavar="N", help="expire in N days (default: 90)")

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
    from bloatguard.untrusted import CommandGuard

    # Everything bloatguard prints may reach a CI log: no name may carry a runner command.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = CommandGuard(stdout), CommandGuard(stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main(argv: list[str] | None) -> int:
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
    if args.command == "baseline":
        return run_baseline(args)
    if args.command == "history":
        return run_history(args)
    if args.command == "show":
        return run_show(args)
    if args.command == "compare":
        from bloatguard import compare

        return compare.run(args)
    if args.command == "rules":
        return run_rules()
    if args.command == "explain":
        return run_explain(args.code)
    build_parser().print_help()
    return EXIT_CANNOT_EVALUATE


def run_check(args: argparse.Namespace) -> int:
    from bloatguard.result import exit_code
    from bloatguard.untrusted import one_line

    run = app.collect(args)
    results, config, unmatched = run.results, run.config, run.unmatched
    write_report(results, args.output_format, args.output_file, rules=run.rules, unmatched=unmatched,
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
    return exit_code(results)


def _same_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


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
        from bloatguard.report.github import append_summary, overflow_markdown

        append_summary(Path(os.environ["GITHUB_STEP_SUMMARY"]), overflow_markdown(results))


def run_merge(args: argparse.Namespace) -> int:
    from bloatguard.merge import merge_reports
    from bloatguard.result import exit_code

    results = merge_reports(args.reports)
    write_report(results, args.output_format, args.output_file)
    return exit_code(results)


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


def _date(text: str):
    import datetime

    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date such as 2027-01-31, got {text!r}") from None


def run_baseline(args: argparse.Namespace) -> int:
    import datetime

    from bloatguard.baseline import DEFAULT_DAYS
    from bloatguard.baseline import run_baseline as baseline

    expires = args.expires or datetime.date.today() + datetime.timedelta(
        days=args.days if args.days is not None else DEFAULT_DAYS)
    target, count = baseline(args.paths, config_path=args.config, reason=args.reason,
                             expires=expires)
    print(f"bloatguard: accepted {count} finding(s) until {expires.isoformat()} in {target}; "
          "`bloatguard check` now passes, and fails if any of these models grows further")
    return EXIT_OK


def run_history(args: argparse.Namespace) -> int:
    from bloatguard import history

    config = app.load_config(args.config, [args.path])
    relpath, points = history.collect(args.path, config, since=args.since, max_count=args.max_count,
                                      use_cache=not args.no_cache)
    try:
        sys.stdout.write(history.render(relpath, points, args.metric, args.output_format))
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
    if args.plot:
        history.plot(relpath, points, args.metric, args.plot)
        print(f"bloatguard: wrote {args.plot}", file=sys.stderr)
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from bloatguard import show
    from bloatguard.engine import display_path
    from bloatguard.errors import BloatguardError

    if not args.path.is_file():
        raise BloatguardError(f"{args.path}: no such model file; give the path of one model")
    config = app.load_config(args.config, [args.path])
    profile = show.arrange(show.profile(args.path, config, display_path(args.path)),
                           sort=args.sort, top=args.top, by=args.by)
    try:
        sys.stdout.write(show.render(profile, args.output_format))
        sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
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
