"""The GitHub Action, run locally: action.yml's own steps and `bloatguard ci` in a simulated
workflow (event payload, step summary, outputs, and the REST API served on loopback)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

import factories
from gitrepo import GIT_ENV, Repo

REPO = Path(__file__).resolve().parent.parent
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
TOKEN = "ghs_test-token-never-printed"
MARKER = "<!-- bloatguard-report -->"
CONFIG = '[budgets."models/**"]\nmax-params-increase = "5%"\n'


# --- a loopback stand-in for the GitHub REST API ---------------------------------------------

class FakeGitHub:
    """Issue comments of one pull request, served two per page (so the client must follow the
    Link headers), recording every request. `forbidden` answers writes like a fork's token."""

    PAGE = 2

    def __init__(self, forbidden: bool = False, redirect_to: str = "") -> None:
        self.forbidden, self.redirect_to = forbidden, redirect_to
        self.user = ""  # the token's login when it may read /user (a personal token)
        self.requests: list[dict] = []
        self.comments = [{"id": 101, "body": "LGTM", "user": {"login": "alice"}},
                         {"id": 102, "body": "nit: rename", "user": {"login": "bob"}},
                         {"id": 103, "body": "> quoted text", "user": {"login": "carol"}}]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _answer(self, status: int, payload, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                fake.requests.append({"method": self.command, "path": self.path, "body": body,
                                      "auth": self.headers.get("Authorization")})
                return urlsplit(self.path), body

            def do_GET(self):
                url, _ = self._record()
                if fake.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", fake.redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if url.path == "/user":  # what the Actions token answers; a user token knows itself
                    return (self._answer(200, {"login": fake.user}) if fake.user else
                            self._answer(403, {"message": "Resource not accessible by integration"}))
                if url.path != "/repos/owner/repo/issues/7/comments":
                    return self._answer(404, {"message": "Not Found"})
                page = int(parse_qs(url.query).get("page", ["1"])[0])
                items = fake.comments[(page - 1) * fake.PAGE: page * fake.PAGE]
                headers = {}
                if page * fake.PAGE < len(fake.comments):
                    headers["Link"] = (f'<{fake.url}{url.path}?per_page=100&page={page + 1}>; rel="next", '
                                       f'<{fake.url}{url.path}?page=1>; rel="first"')
                self._answer(200, items, headers)

            def do_POST(self):
                url, body = self._record()
                if fake.forbidden:
                    return self._answer(403, {"message": "Resource not accessible by integration"})
                if url.path != "/repos/owner/repo/issues/7/comments":
                    return self._answer(404, {"message": "Not Found"})
                comment = {"id": 900 + len(fake.comments), "body": body["body"],
                           "user": {"login": fake.user or "github-actions[bot]"}}
                fake.comments.append(comment)
                self._answer(201, comment)

            def do_PATCH(self):
                url, body = self._record()
                if fake.forbidden:
                    return self._answer(403, {"message": "Resource not accessible by integration"})
                match = re.fullmatch(r"/repos/owner/repo/issues/comments/(\d+)", url.path)
                comment = next((c for c in fake.comments if match and c["id"] == int(match[1])), None)
                if comment is None:
                    return self._answer(404, {"message": "Not Found"})
                comment["body"] = body["body"]
                self._answer(200, comment)

        return Handler

    def writes(self) -> list[dict]:
        return [r for r in self.requests if r["method"] in ("POST", "PATCH")]

    def __enter__(self) -> FakeGitHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def forbidden_api():
    with FakeGitHub(forbidden=True) as fake:
        yield fake


# --- a pull request whose head breaks a budget -----------------------------------------------

class PullRequest:
    def __init__(self, tmp_path: Path, grow: bool = True) -> None:
        self.repo = Repo(tmp_path / "repo")
        self.repo.write("bloatguard.toml", CONFIG)
        factories.mlp(self.repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
        factories.mlp(self.repo.root / "models" / "b.onnx", sizes=(8, 8))
        self.base = self.repo.commit("base models")
        self.repo.git("checkout", "-q", "-b", "feature")
        factories.mlp(self.repo.root / "models" / "a.onnx", sizes=(16, 64 if grow else 33, 4))
        self.head = self.repo.commit("change a")
        self.dir = tmp_path / "github"
        self.dir.mkdir()
        self.summary = self.dir / "summary.md"
        self.output = self.dir / "output.txt"
        self.event = self.dir / "event.json"
        self.write_event("pull_request", {
            "number": 7, "pull_request": {"number": 7, "base": {"sha": self.base, "ref": "main"},
                                          "head": {"sha": self.head, "ref": "feature"}}})

    def write_event(self, name: str, payload: dict) -> None:
        self.event_name = name
        self.event.write_text(json.dumps(payload))

    def env(self, api_url: str, **inputs: str) -> dict[str, str]:
        """The variables a runner sets for a step, plus the Action's inputs as action.yml
        passes them (BLOATGUARD_*)."""
        env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": self.event_name,
               "GITHUB_EVENT_PATH": str(self.event), "GITHUB_STEP_SUMMARY": str(self.summary),
               "GITHUB_OUTPUT": str(self.output), "GITHUB_API_URL": api_url,
               "GITHUB_SERVER_URL": "https://github.example", "GITHUB_REPOSITORY": "owner/repo",
               "GITHUB_RUN_ID": "4242", "RUNNER_TEMP": str(self.dir),
               "BLOATGUARD_PATHS": "models", "BLOATGUARD_LATENCY": "off",
               "BLOATGUARD_GITHUB_TOKEN": TOKEN}
        env.update({f"BLOATGUARD_{key.upper()}": value for key, value in inputs.items()})
        return env

    def outputs(self) -> dict[str, str]:
        """$GITHUB_OUTPUT parsed as the runner parses it (name<<DELIMITER ... DELIMITER)."""
        values, lines = {}, iter(self.output.read_text().splitlines())
        for line in lines:
            name, delimiter = line.split("<<", 1)
            body = []
            for value_line in lines:
                if value_line == delimiter:
                    break
                body.append(value_line)
            values[name] = "\n".join(body)
        return values


@pytest.fixture
def pr(tmp_path, monkeypatch):
    pull = PullRequest(tmp_path)
    monkeypatch.chdir(pull.repo.root)
    for name in [n for n in os.environ if n.startswith(("GITHUB_", "BLOATGUARD_", "RUNNER_"))]:
        monkeypatch.delenv(name)
    return pull


def run_ci(run_cli, monkeypatch, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return run_cli("ci")


# --- the Action's steps, as GitHub would run them ---------------------------------------------

def _step(step_id: str) -> dict:
    return next(step for step in ACTION["runs"]["steps"] if step.get("id") == step_id)


def _evaluate(template: str, inputs: dict[str, str], steps: dict[str, dict[str, str]]) -> str:
    """GitHub's expression evaluation, for the only forms action.yml uses in `env:`."""
    def value(match: re.Match) -> str:
        expression = match[1].strip()
        if expression.startswith("inputs."):
            return inputs[expression[len("inputs."):]]
        step, _, output = expression.removeprefix("steps.").partition(".outputs.")
        return steps.get(step, {}).get(output, "")

    return re.sub(r"\$\{\{(.*?)\}\}", value, template)


def test_run_step_of_action_yml_end_to_end(pr, api):
    """The "Run bloatguard" step of action.yml, its env evaluated like GitHub does and its script
    run by bash, against the pull request and the loopback API: annotations, summary, outputs,
    and the comment created once, then updated in place."""
    inputs = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    inputs.update({"paths": "models", "latency": "off", "github-token": TOKEN})
    step = _step("run")
    bin_dir = Path(shutil.which("bloatguard") or Path(sys.executable).parent / "bloatguard").parent
    env = {**os.environ, **GIT_ENV, **pr.env(api.url)}
    env.update({key: _evaluate(str(value), inputs, {"install": {"bin": str(bin_dir)}})
                for key, value in step["env"].items()})

    def run():
        return subprocess.run(["bash", "-c", step["run"]], cwd=pr.repo.root, env=env,
                              capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 1, first.stderr  # fail-on: error, and the head breaks a budget
    assert ("::error file=models/a.onnx,title=BG002 param-count::parameter count grew from 676 to "
            "1.35K (+99.4%25)") in first.stdout
    assert TOKEN not in first.stdout + first.stderr
    summary = pr.summary.read_text()
    assert "| ❌ | `models/a.onnx` | modified | " in summary and "676 → **1.35K** (+99.4%)" in summary
    outputs = pr.outputs()
    assert outputs["errors"] == "1" and outputs["warnings"] == "0"
    report = json.loads(Path(outputs["report"]).read_text())
    assert report["summary"]["errors"] == 1
    posts = [r for r in api.writes() if r["method"] == "POST"]
    assert len(posts) == 1 and posts[0]["path"] == "/repos/owner/repo/issues/7/comments"
    assert posts[0]["auth"] == f"Bearer {TOKEN}"
    body = posts[0]["body"]["body"]
    assert body.startswith(MARKER) and "| ❌ | `models/a.onnx` |" in body
    assert "https://github.example/owner/repo/actions/runs/4242" in body and pr.head[:7] in body
    # The list of comments had two pages: both were read before deciding to create.
    assert [r["path"] for r in api.requests if r["method"] == "GET"] == [
        "/user", "/repos/owner/repo/issues/7/comments?per_page=100",
        "/repos/owner/repo/issues/7/comments?per_page=100&page=2"]

    api.requests.clear()
    second = run()
    assert second.returncode == 1
    writes = api.writes()
    assert [w["method"] for w in writes] == ["PATCH"]  # updated in place, not a second comment
    assert writes[0]["path"] == f"/repos/owner/repo/issues/comments/{api.comments[-1]['id']}"
    assert sum(MARKER in c["body"] for c in api.comments) == 1
    assert len(api.comments) == 4


def test_action_yml_never_interpolates_into_scripts():
    for step in ACTION["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step.get("name")
            subprocess.run(["bash", "-n", "-c", step["run"]], check=True)  # valid bash
    # Each input of the Run step reaches bloatguard ci, and ci reads nothing action.yml omits.
    run_env = _step("run")["env"]
    passed = {re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", value)[1]
              for value in run_env.values() if "inputs." in value}
    assert passed == set(ACTION["inputs"]) - {"version", "extras", "python-version"}
    ci_source = (REPO / "bloatguard" / "ci.py").read_text()
    read_by_ci = set(re.findall(r'"(BLOATGUARD_[A-Z_]+)"', ci_source))
    assert read_by_ci - {"BLOATGUARD_REPORT"} == set(run_env) - {"BLOATGUARD_BIN"}
    setup = next(step for step in ACTION["runs"]["steps"] if "setup-python" in step.get("uses", ""))
    assert setup["with"]["update-environment"] is False  # the user's Python stays untouched
    assert set(ACTION["outputs"]) == {"errors", "warnings", "report"}


def test_action_yml_matches_the_public_schema():
    pytest.importorskip("check_jsonschema")
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                             "vendor.github-actions", str(REPO / "action.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- bloatguard ci in-process: the variants --------------------------------------------------

@pytest.mark.parametrize("fail_on, severity, expected", [
    ("error", "error", 1), ("never", "error", 0),
    ("error", "warning", 0), ("warning", "warning", 1), ("never", "warning", 0),
])
def test_exit_code_follows_fail_on(pr, api, run_cli, monkeypatch, fail_on, severity, expected):
    pr.repo.write("bloatguard.toml", CONFIG + f'\n[rules.param-count]\nseverity = "{severity}"\n')
    code, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, fail_on=fail_on, args="--select BG002"))
    assert code == expected
    assert f"::{severity} file=models/a.onnx,title=BG002 param-count::" in out
    outputs = pr.outputs()
    assert (outputs["errors"], outputs["warnings"]) == (("1", "0") if severity == "error" else ("0", "1"))


def test_fork_without_write_permission_falls_back_to_the_summary(
        tmp_path, forbidden_api, run_cli, monkeypatch):
    pull = PullRequest(tmp_path, grow=False)  # +1 hidden unit: within the 5 % budget
    monkeypatch.chdir(pull.repo.root)
    code, out, err = run_ci(run_cli, monkeypatch, pull.env(forbidden_api.url, summary="off"))
    assert code == 0, err  # a comment that cannot be written never fails the job
    assert [w["method"] for w in forbidden_api.writes()] == ["POST"]
    notice = next(line for line in out.splitlines() if line.startswith("::notice"))
    assert notice.startswith("::notice title=bloatguard::cannot comment on this pull request "
                             "(HTTP 403: Resource not accessible by integration)")
    # summary: off, but the report had nowhere else to go.
    assert "| ✅ | `models/a.onnx` | modified |" in pull.summary.read_text()


def test_comment_and_summary_can_be_switched_off(pr, api, run_cli, monkeypatch):
    code, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, comment="off", summary="off"))
    assert code == 1
    assert api.requests == [] and not pr.summary.exists()
    assert "::error file=models/a.onnx" in out


def test_push_event_compares_with_the_commit_before(pr, api, run_cli, monkeypatch):
    pr.write_event("push", {"before": pr.base, "after": pr.head})
    code, _, _ = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert code == 1
    assert api.requests == []  # no pull request: nothing to comment on
    assert "676 → **1.35K**" in pr.summary.read_text()


def test_explicit_base_input_and_no_base(pr, api, run_cli, monkeypatch):
    pr.write_event("workflow_dispatch", {})
    code, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert code == 0  # no base: only absolute budgets, and this config has none
    assert "::notice title=bloatguard::no base commit" in out
    code, _, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, base="main"))
    assert code == 1


def test_shallow_checkout_fetches_the_base_commit(pr, api, tmp_path, run_cli, monkeypatch):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth=1", "--branch", "feature",
                    f"file://{pr.repo.root}", str(clone)], check=True, env={**os.environ, **GIT_ENV})
    monkeypatch.chdir(clone)
    code, out, err = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert code == 1, err
    assert "::error file=models/a.onnx,title=BG002 param-count::" in out


def test_sarif_file_and_unparseable_inputs(pr, api, run_cli, monkeypatch, tmp_path):
    sarif = tmp_path / "out" / "bloatguard.sarif"
    code, _, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, sarif_file=str(sarif)))
    assert code == 1
    log = json.loads(sarif.read_text())
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["BG002"]
    code, _, err = run_ci(run_cli, monkeypatch, pr.env(api.url, fail_on="sometimes"))
    assert code == 2 and "BLOATGUARD_FAIL_ON" in err and "Traceback" not in err


def test_config_error_is_reported_not_a_traceback(pr, api, run_cli, monkeypatch):
    pr.repo.write("bloatguard.toml", '[budgets."**"]\nmax-file-size = 25\n')
    code, out, err = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert code == 2 and "Traceback" not in err
    assert "::error title=bloatguard::bloatguard could not evaluate the models" in out
    assert "could not evaluate" in pr.summary.read_text()
    assert api.writes() == []


def test_pull_request_target_is_warned_about(pr, api, run_cli, monkeypatch):
    pr.write_event("pull_request_target", json.loads(pr.event.read_text()))
    _, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert "::warning title=bloatguard::running on pull_request_target" in out


def test_untrusted_report_text_cannot_issue_workflow_commands(pr, api, run_cli, monkeypatch):
    """A model named like a workflow command shows up in the text report; its leading colon is
    escaped, commands are stopped around the report anyway, and in annotations its name is
    escaped data."""
    factories.mlp(pr.repo.root / "::error::pwned.onnx", sizes=(4, 4))
    _, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, paths="."))
    stop = re.search(r"^::stop-commands::(\w{32})$", out, re.M)
    assert stop, out
    start, end = stop.end(), out.index(f"\n::{stop[1]}::\n")
    lines = out.splitlines()
    assert "\\x3a:error::pwned.onnx (onnx) [new]" in lines  # the report's line for the model
    assert start < out.index("\\x3a:error::pwned.onnx (onnx)") < end
    assert not re.search(r"^\s*::error::pwned", out, re.M)  # no line starts the command


def test_a_marked_comment_by_someone_else_is_never_updated(pr, api, run_cli, monkeypatch):
    """Anyone can post a comment that starts with the marker; the bot updates only its own."""
    api.comments.insert(0, {"id": 66, "body": f"{MARKER}\nbloatguard: all good, approved",
                            "user": {"login": "mallory"}})
    run_ci(run_cli, monkeypatch, pr.env(api.url))
    [write] = api.writes()
    assert write["method"] == "POST"
    assert api.comments[0]["body"].endswith("approved")  # mallory's comment untouched
    run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert [w["method"] for w in api.writes()] == ["POST", "PATCH"]
    assert api.writes()[1]["path"] == f"/repos/owner/repo/issues/comments/{api.comments[-1]['id']}"


def test_a_personal_token_updates_the_comment_of_its_own_user(pr, api, run_cli, monkeypatch):
    api.user = "release-bot"
    api.comments.append({"id": 77, "body": f"{MARKER}\nold report", "user": {"login": "release-bot"}})
    run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert [(w["method"], w["path"]) for w in api.writes()] == [
        ("PATCH", "/repos/owner/repo/issues/comments/77")]


def test_names_from_the_pull_request_render_inert_in_the_comment(pr, api, run_cli, monkeypatch):
    """A file name can close a code span, mention people, link and shout "approved" in bold;
    a pickle can name any global. In the bot's comment all of it is plain text."""
    hostile = "x` @alice **approved** [ok](https://evil.example) <img src=x> `y"
    factories.mlp(pr.repo.root / "models" / f"{hostile}.onnx", sizes=(4, 4))
    pr.repo.commit("hostile name")
    _, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url))
    body = api.writes()[0]["body"]["body"]
    # The name is one code span fenced by more backticks than it holds, so it shows verbatim
    # (GitHub renders nothing inside a code span)...
    name = f"models/{hostile}.onnx".replace("//", "/")
    assert f"``{name}``" in body
    # ...and outside code spans nothing from it is live markdown.
    prose = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", body)
    assert "@alice" not in prose and "**approved**" not in prose and "<img" not in prose
    assert "evil.example" not in prose


def test_merge_input_reports_sharded_runs_as_one(pr, api, run_cli, monkeypatch, tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    for index in (1, 2, 3):
        code, _, _ = run_cli("check", "models", "--base", pr.base, "--no-latency", "--shard",
                             f"{index}/3", "--output-format", "json", "--output-file",
                             reports / f"shard-{index}.json")
        assert code in (0, 1)  # a shard that could not evaluate would make the merge vacuous
    code, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, merge=str(reports / "*.json")))
    assert code == 1
    assert "::error file=models/a.onnx,title=BG002 param-count::" in out
    assert pr.outputs()["errors"] == "1"
    [post] = api.writes()
    assert "| ❌ | `models/a.onnx` | modified |" in post["body"]["body"]
    code, _, err = run_ci(run_cli, monkeypatch, pr.env(api.url, merge=str(tmp_path / "none*.json")))
    assert code == 2 and "no report matches" in err


def test_documented_workflows_are_valid_and_use_real_inputs(tmp_path):
    """The workflows in the README's GitHub Action section: valid for GitHub, on pull_request, and passing
    only inputs that action.yml defines."""
    readme = (REPO / "README.md").read_text()
    text = readme[readme.index("## GitHub Action"):readme.index("## Security")]
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    workflows = [block for block in blocks if "\njobs:" in block]
    assert len(workflows) == 2
    for block in blocks:
        document = yaml.safe_load(block)
        steps = [step for job in document.get("jobs", {}).values() for step in job["steps"]]
        for step in steps + document.get("steps", []):
            if "/bloatguard@" in step.get("uses", ""):
                assert set(step.get("with", {})) <= set(ACTION["inputs"]), step
    for block in workflows:
        document = yaml.safe_load(block)
        assert document[True] == "pull_request"  # YAML 1.1 reads the key `on` as True
        assert document["permissions"] == {"contents": "read", "pull-requests": "write"}
    pytest.importorskip("check_jsonschema")
    for index, block in enumerate(workflows):
        path = tmp_path / f"workflow-{index}.yml"
        path.write_text(block)
        result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                                 "vendor.github-workflows", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_token_is_never_sent_to_another_host(pr, api, run_cli, monkeypatch):
    """A redirect (or a pagination link) to another origin is refused, not followed with the
    token; the report still lands in the job summary."""
    with FakeGitHub(redirect_to=api.url) as redirecting:
        code, out, _ = run_ci(run_cli, monkeypatch, pr.env(redirecting.url, fail_on="never"))
    assert code == 0
    assert api.requests == []  # the other origin never saw a request
    assert [r["method"] for r in redirecting.requests] == ["GET"]
    warning = next(line for line in out.splitlines() if line.startswith("::warning"))
    assert "could not update the pull-request comment (HTTP 302" in warning
    assert "| ❌ | `models/a.onnx` | modified |" in pr.summary.read_text()


def test_the_accept_label_accepts_the_pull_requests_regressions(pr, api, run_cli, monkeypatch):
    event = json.loads(pr.event.read_text())
    event["pull_request"]["labels"] = [{"name": "bloatguard:accept"}, {"name": "ml"}]
    pr.write_event("pull_request", event)
    code, out, _ = run_ci(run_cli, monkeypatch, pr.env(api.url))
    assert code == 0  # a grew 99 % against max-params-increase = 5 %: accepted by the label
    assert "::notice file=models/a.onnx,title=BG002 param-count::accepted (pull request label" in out
    body = api.writes()[0]["body"]["body"]
    assert "#### Accepted regressions" in body and "pull request label bloatguard:accept" in body
    assert json.loads(Path(pr.outputs()["report"]).read_text())["summary"]["accepted"] == 1
    # Without the label (or with the input emptied) the same pull request fails.
    code, _, _ = run_ci(run_cli, monkeypatch, pr.env(api.url, accept_label=""))
    assert code == 1
