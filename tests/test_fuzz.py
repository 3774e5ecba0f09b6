"""The CLI on a corpus of damaged and hostile model files (tests/fuzz/corpus.py).

For every file: no traceback, no hang, exit code 0/1/2 (0 only when the mutation happened to
leave a valid model), one line on stderr per unreadable model naming the file, and nothing from
the file executed (the canary a malicious pickle would create never appears). The corpus is left
byte-identical.

Hostile names (issue 20): valid and damaged models whose names carry line breaks, markdown, HTML,
workflow commands, bidi overrides, invalid UTF-8, a leading `-` or 255 bytes, through every
report format: the exit code says what the model is, each report parses and names every file, and
no name starts a line of its own or renders as markup (the promise of tests/test_untrusted_output.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import pytest

from bloatguard.report.markdown import code as markdown_code
from bloatguard.untrusted import one_line, printable

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import corpus  # noqa: E402

PER_FILE_SECONDS = 60


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    canary = root / "CANARY"
    files = corpus.build(root / "corpus", canary)
    return root, canary, files


def _digest(files: list[Path]) -> dict[str, str]:
    return {str(f): _fingerprint(f) for f in files}


def _fingerprint(file: Path) -> str:
    """A link by where it points (its target is not the corpus's), a FIFO by its kind (reading
    it would block), anything else by its bytes."""
    if file.is_symlink():
        return f"link to {os.readlink(file)}"
    if not file.is_file():
        return "special file"
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _alarm(signum, frame):
    raise TimeoutError(f"a check took longer than {PER_FILE_SECONDS} s")


def test_cli_survives_the_corpus(built, run_cli):
    root, canary, files = built
    before = _digest(files)
    assert len(files) > 300
    outcomes: dict[int, int] = {}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for file in files:
            signal.alarm(PER_FILE_SECONDS)
            code, out, err = run_cli("check", file, "--output-format", "json", "--no-latency", "--no-cache")
            signal.alarm(0)
            outcomes[code] = outcomes.get(code, 0) + 1
            assert code in (0, 1, 2), (file, code, err)
            assert "Traceback" not in err and "internal error" not in err, (file, err)
            report = json.loads(out)
            unreadable = [m for m in report["models"] if any(f["code"] == "BG000" for f in m["findings"])]
            if code == 2:
                assert unreadable, (file, err)
                lines = err.strip().splitlines()
                assert len(lines) == len(unreadable), (file, err)
                # The path as bloatguard prints untrusted names: a newline in it is `\n`.
                assert all(line.startswith(f"bloatguard: {one_line(report['models'][0]['path'])}: ")
                           for line in lines), (file, err)
            else:
                assert not unreadable and err == "", (file, err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not canary.exists()
    assert _digest(files) == before
    # The corpus is hostile by construction: most files must be rejected, not measured.
    assert outcomes.get(2, 0) > len(files) // 2, outcomes


def test_malicious_pickles_are_errors_not_unreadable(built, run_cli):
    _, canary, files = built
    evil = [f for f in files if f.name.startswith("evil_")]
    assert len(evil) >= 20
    for file in evil:
        code, out, _ = run_cli("check", file, "--output-format", "json", "--no-latency", "--no-cache")
        findings = json.loads(out)["models"][0]["findings"]
        assert code == 1, file
        assert [f["code"] for f in findings] == ["BG900"], (file, findings)
    assert not canary.exists()


SECOND_ROUND = ("casefold_", "overlap_", "hash_bomb_", "huge_int_key", "bzip2_bomb")


def test_second_round_attacks_are_unreadable_models(built, run_cli):
    """Each is BG000 with its cause: none is measured, none hangs, none is followed or opened."""
    _, canary, files = built
    hostile = [f for f in files if f.name.startswith(SECOND_ROUND)
               or f.parent.name.startswith(("symlink_", "fifo_"))]
    assert len(hostile) >= 30
    for file in hostile:
        code, out, err = run_cli("check", file, "--output-format", "json", "--no-latency",
                                 "--no-cache")
        findings = json.loads(out)["models"][0]["findings"]
        assert code == 2 and [f["code"] for f in findings] == ["BG000"], (file, findings)
        assert "internal error" not in err, err
    assert not canary.exists()


def test_real_cli_process_prints_one_line_per_bad_file(built):
    """The installed entry point, as a separate process, over a directory of hostile files."""
    root, canary, files = built
    directory = files[0].parent.parent
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", str(directory),
                             "--output-format", "json", "--no-latency", "--no-cache"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    # One line per unreadable model, besides the progress lines a long run prints to a log.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("bloatguard: [")]
    assert report["summary"]["unreadable"] == len(lines)
    assert not canary.exists()


# --- hostile names (issue 20) ---------------------------------------------------------------------

FORMATS = ("text", "json", "github", "markdown", "sarif", "junit")
KINDS = ("valid", "damaged")
EXIT_CODES = {"valid": 0, "damaged": 2}  # valid: three dead-weight warnings, which pass a check
# Where the Actions runner ends a log line (.NET's ReadLine); it strips leading white space and
# takes a line that then starts with `::` for a workflow command.
LINE_BREAK = re.compile(r"\r\n|\r|\n")
PROPERTY = r"(?:file|title)=[^,:\r\n]*"  # escaped: no `:` or `,` left in a value
COMMAND = re.compile(rf"::(?:error|warning|notice)(?: {PROPERTY}(?:,{PROPERTY})*)?::.*")
WORKFLOW_NAME = corpus.HOSTILE_NAMES["workflow command"]
DASH_NAME = corpus.HOSTILE_NAMES["leading dash"]
CHECK = ("check", ".", "--no-latency", "--no-cache")


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """The hostile-name models on their own (build() writes the same under the corpus)."""
    root = tmp_path_factory.mktemp("names")
    (root / "work").mkdir()
    return corpus.hostile_names(root / "names", root / "work")


def _in_process(directory: Path, *args: str) -> tuple[int, str, str]:
    """The CLI in `directory`, so reports name the models relatively: a leading `-` or `::` of
    a name starts the path. The streams are those Python gives a process on a GitHub runner
    (LANG=C.UTF-8): UTF-8 with surrogateescape on stdout (a name that is not UTF-8 goes out as its
    bytes), backslashreplace on stderr; read back the same way."""
    from bloatguard.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        patch.chdir(directory)
        code = main(list(args))
    out.flush()
    err.flush()
    return (code, out.buffer.getvalue().decode("utf-8", "surrogateescape"),
            err.buffer.getvalue().decode("utf-8", "surrogateescape"))


@pytest.fixture(scope="module")
def name_reports(names, tmp_path_factory):
    """Each format over the valid models and over the damaged ones, one run each; and likewise
    for the names that are not UTF-8 (under `bytes`) when the file system takes them."""
    kinds = [(kind, names.root / kind) for kind in KINDS]
    if names.byte_names:
        kinds += [(f"bytes {kind}", names.root / "bytes" / kind) for kind in KINDS]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        return {(output_format, kind): _in_process(directory, *CHECK, "--output-format", output_format)
                for output_format in FORMATS for kind, directory in kinds}


def _lines(text: str) -> list[str]:
    return LINE_BREAK.split(text)


def _forged_commands(output_format: str, out: str, err: str) -> list[str]:
    """Lines that a GitHub runner would take for a workflow command, other than the well-formed
    ones of the github format."""
    forged = [line for line in _lines(err) if line.lstrip().startswith("::")]
    return forged + [line for line in _lines(out) if line.lstrip().startswith("::")
                     and not (output_format == "github" and COMMAND.fullmatch(line))]


def _outside_code_spans(line: str) -> str:
    """A markdown line without its code spans (CommonMark: a run of n backticks up to the next run
    of exactly n) and with each backslash-escaped character blanked: the text that renders."""
    out, position = [], 0
    while position < len(line):
        char = line[position]
        if char == "\\" and position + 1 < len(line):
            out.append("\0")
            position += 2
        elif char == "`":
            run = re.match("`+", line[position:]).group()
            end = re.compile(f"(?<!`){run}(?!`)").search(line, position + len(run))
            out.append(" " if end else run)
            position = end.end() if end else position + len(run)
        else:
            out.append(char)
            position += 1
    return "".join(out)


def _unescape_property(value: str) -> str:
    for escaped, char in (("%3A", ":"), ("%2C", ","), ("%0D", "\r"), ("%0A", "\n"), ("%25", "%")):
        value = value.replace(escaped, char)
    return value


def _check_report(output_format: str, out: str, err: str, paths: list[str], damaged: set[str]) -> None:
    """The report is well-formed in its format and names every model, and stderr has one line per
    damaged model, naming it: no line of either comes from a line break in a name."""
    # A real stderr writes what is not UTF-8 as `\udcff` (Python's backslashreplace).
    # Inside a line (`bloatguard: NAME: ...`) a name keeps a leading `::`, which only the start
    # of a line makes a command; every report prints a non-UTF-8 byte as \xNN.
    shown = {path: {one_line(path), one_line(f" {path}")[1:],
                    one_line(f" {path}")[1:].encode("utf-8", "backslashreplace").decode("utf-8")}
             for path in paths}
    # Progress lines, which a slow run prints, name a model each.
    progress = [line for line in _lines(err) if line.startswith("bloatguard: [")]
    assert all(any(re.fullmatch(rf"bloatguard: \[\d+/\d+\] {re.escape(text)}", line)
                   for texts in shown.values() for text in texts) for line in progress), err
    stderr_lines = [line for line in _lines(err) if line and line not in progress]
    assert len(stderr_lines) == len(damaged), err
    for path in damaged:
        assert any(line.startswith(f"bloatguard: {text}: not a valid ONNX protobuf")
                   for line in stderr_lines for text in shown[path]), (path, err)
    if output_format == "json":
        report = json.loads(out)  # strict: a raw control character in a string fails
        assert sorted(model["path"] for model in report["models"]) == sorted(paths)
        assert {model["path"] for model in report["models"]
                if any(f["code"] == "BG000" for f in model["findings"])} == damaged
    elif output_format == "sarif":
        results = json.loads(out)["runs"][0]["results"]
        assert {unquote(location["physicalLocation"]["artifactLocation"]["uri"], errors="surrogateescape")
                for result in results for location in result["locations"]} == set(paths)
    elif output_format == "junit":  # a name that is not UTF-8 with its bytes as \xNN
        suites = ET.fromstring(out.encode("utf-8")).iter("testsuite")
        assert sorted(suite.get("name") for suite in suites) == sorted(map(printable, paths))
    elif output_format == "github":
        assert all(COMMAND.fullmatch(line) for line in _lines(out)[:-1]) and _lines(out)[-1] == "", out
        files = {_unescape_property(match.group(1))
                 for match in re.finditer(r"^::\w+ file=([^,:\r\n]*)", out, re.MULTILINE)}
        # GitHub annotates 10 findings of a kind: every damaged model (one error each), and
        # the first of the valid ones (three warnings each).
        shown_damaged, shown_paths = set(map(printable, damaged)), set(map(printable, paths))
        assert (shown_damaged <= files if damaged else files) and files <= shown_paths, (files, out)
    elif output_format == "text":
        assert "\u202e" not in out  # a bidi override would reverse how the rest of the line reads
        headers = {f"{one_line(path)} ({'unknown' if path in damaged else 'onnx'})" for path in paths}
        summary = re.compile(r"\d+ models? checked: .*")
        stray = [line for line in _lines(out) if line and not line.startswith("  ")
                 and line not in headers and not summary.fullmatch(line)]
        assert stray == [], out
        assert headers <= set(_lines(out))
    elif output_format == "markdown":
        assert "\u202e" not in out  # printed as \u202e, in code spans
        lines = _lines(out)
        for path in paths:  # a row of the model table, its name in a code span
            assert any(line.startswith(f"| {icon} | {markdown_code(path)} | ") for icon in ("⚠️", "❌")
                       for line in lines), path
        rows = [line for line in lines if line.startswith("|")]
        cells = {len(re.findall(r"(?<!\\)\|", row)) for row in rows}
        assert len(cells) == 1, rows  # no name splits a cell or adds a row
        for line in lines:
            rendered = _outside_code_spans(line)
            assert "<script" not in rendered.lower() and "<img" not in rendered.lower(), line
            assert not re.search(r"@\w", rendered), line  # a mention, outside code
            assert "](" not in rendered and "[pwn]" not in rendered, line  # a link
            assert not re.search(r"\*bold\*|_em_|__strong__", rendered), line  # emphasis


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output_format", FORMATS)
def test_hostile_names_in_every_format(names, name_reports, output_format, kind):
    code, out, err = name_reports[output_format, kind]
    assert code == EXIT_CODES[kind], (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    _check_report(output_format, out, err, names.names, set(names.names) if kind == "damaged" else set())
    # A line break in a name never starts a line, nor does a name that starts with `::`.
    assert _forged_commands(output_format, out, err) == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_name_starting_with_colons_does_not_start_a_text_line(name_reports, kind):
    _, out, err = name_reports["text", kind]
    assert _forged_commands("text", out, err) == []


def _fix_commands(output_format: str, out: str) -> list[str]:
    """The `bloatguard fix ...` commands a report suggests."""
    if output_format == "text":
        return [match.group(1) for match in re.finditer(
            r"^ +fix: (bloatguard fix .*?)(?: \(saves about [^)]*\))?$", out, re.MULTILINE)]
    spans = re.findall(r"(?<!`)(`+) ?(bloatguard fix .*?) ?\1(?!`)", out)
    return [command.replace("\\|", "|") for _, command in spans]


def _fix_targets(output_format: str, out: str, name: str) -> list[list[Path]]:
    """What bloatguard's own parser makes of each suggested command that quotes `name`."""
    from bloatguard.cli import build_parser

    targets = []
    for command in _fix_commands(output_format, out):
        if name not in command:
            continue
        try:
            targets.append(build_parser().parse_args(shlex.split(command)[1:]).paths)
        except SystemExit:
            targets.append([])
    return targets


@pytest.mark.parametrize("output_format", ["text", "markdown"])
def test_fix_hints_name_their_model(names, name_reports, output_format):
    """A suggested command, pasted into a shell, fixes the model it is about (names with control
    characters excepted: the hint prints them escaped, as every line does)."""
    _, out, _ = name_reports[output_format, "valid"]
    checked = 0
    for name in names.names:
        if name == DASH_NAME or one_line(name) != name:
            continue
        targets = _fix_targets(output_format, out, name)
        assert targets and all(paths == [Path(name)] for paths in targets), (name, targets)
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("output_format", ["text", "markdown"])
def test_fix_hint_for_a_leading_dash_name(name_reports, output_format):
    _, out, _ = name_reports[output_format, "valid"]
    targets = _fix_targets(output_format, out, DASH_NAME)
    assert targets and all(paths == [Path(DASH_NAME)] for paths in targets), targets


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("output_format", FORMATS)
def test_names_that_are_not_utf8(names, name_reports, output_format, kind):
    if not names.byte_names:
        pytest.skip("this file system takes only UTF-8 names")
    code, out, err = name_reports[output_format, f"bytes {kind}"]
    assert code == EXIT_CODES[kind], (code, err)
    assert "Traceback" not in err and "internal error" not in err, err
    _check_report(output_format, out, err, names.byte_names,
                  set(names.byte_names) if kind == "damaged" else set())
    assert _forged_commands(output_format, out, err) == []


@pytest.mark.parametrize("output_format", FORMATS)
def test_names_that_are_not_utf8_in_a_report_file(names, tmp_path, monkeypatch, output_format):
    if not names.byte_names:
        pytest.skip("this file system takes only UTF-8 names")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    report = tmp_path / "report"
    code, out, err = _in_process(names.root / "bytes", *CHECK, "--output-format", output_format,
                                 "--output-file", str(report))
    assert code == 2 and "internal error" not in err, err
    paths = [f"{kind}/{name}" for kind in KINDS for name in names.byte_names]
    _check_report(output_format, report.read_bytes().decode("utf-8"), err, paths,
                  {f"damaged/{name}" for name in names.byte_names})
