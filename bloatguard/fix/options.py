"""Command-line options `bloatguard fix` and `bloatguard compare` share: how candidates are
timed against the original, and the fidelity thresholds of lossy changes.

Imports stay light: `bloatguard --help` builds both parsers.
"""

from __future__ import annotations

import argparse


def add_verification_options(parser, *, candidates: str, unsafe: str) -> None:
    """The options `fix` and `compare` share: how candidates are timed, and the fidelity
    thresholds of lossy changes (`unsafe`: how the help names what they apply to)."""
    parser.add_argument("--no-latency", dest="latency", action="store_false",
                        help=f"do not time the {candidates} against the original (a lossy "
                             "one is then judged without its latency)")
    parser.add_argument("--latency-budget", metavar="TIME",
                        help=f"time budget for timing the {candidates} of one model against the "
                             "original (default: time-budget in [tool.bloatguard.latency])")
    parser.add_argument("--min-cosine", type=share, metavar="X",
                        help=f"{unsafe}smallest cosine similarity of each float output and each "
                             "of its slices (default: 0.99, or min-cosine in the config)")
    parser.add_argument("--min-top1", type=share, metavar="X",
                        help=f"{unsafe}smallest top-1 agreement of classifier-like outputs and "
                             "equal share of integer outputs (default: 0.95, or min-top1 in the "
                             "config)")
    parser.add_argument("--max-error", type=nonnegative, metavar="X",
                        help=f"{unsafe}largest output change relative to the output's scale (a "
                             "slice's: its own) (default: not checked, or max-error in the config)")


def threshold_options(args: argparse.Namespace) -> dict[str, float]:
    """The fidelity thresholds given on the command line, by config key."""
    given = (("tolerance", getattr(args, "tolerance", None)), ("min-cosine", args.min_cosine),
             ("min-top1", args.min_top1), ("max-error", args.max_error))
    return {key: value for key, value in given if value is not None}


def latency_settings(config, budget: str | None):
    """[tool.bloatguard.latency], with --latency-budget if given (BloatguardError if bad)."""
    from dataclasses import replace

    from bloatguard.errors import BloatguardError
    from bloatguard.units import parse_time_ms

    if not budget:
        return config.latency
    try:
        return replace(config.latency, time_budget_ms=parse_time_ms(budget))
    except ValueError as exc:
        raise BloatguardError(f"--latency-budget: {exc}") from None


def share(text: str) -> float:
    """argparse type: a share between 0 and 1, or a percentage (the config's parser)."""
    from bloatguard.hygiene import parse_fraction

    try:
        value: float | str = float(text)
    except ValueError:
        value = text  # "50%", or a form parse_fraction names in its error
    try:
        return parse_fraction(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def nonnegative(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
