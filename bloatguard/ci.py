"""`bloatguard ci`: everything the GitHub Action does after installing bloatguard.

The Action's inputs arrive as environment variables (action.yml maps each input to one; nothing
is interpolated into a shell script), GitHub's context through the variables every runner sets.
The run: check the models against the pull request's base commit (or merge the reports of
sharded jobs), then publish the result where a reviewer sees it: the log, annotations on the
files, the job summary, one sticky pull-request comment that each push updates, SARIF for code
scanning if asked, and step outputs. The exit code follows `fail-on`.

Publishing never fails the job: a fork's pull request gets a read-only token, so the comment
falls back to the job summary with a notice.

Inputs (all optional):
  BLOATGUARD_PATHS       paths to check, split like a shell would ("." by default)
  BLOATGUARD_BASE        git ref to compare with (default: the pull request's base commit,
                         or the commit before a push)
  BLOATGUARD_CONFIG      config file
  BLOATGUARD_ARGS        more `bloatguard check` options, split like a shell would
  BLOATGUARD_LATENCY     on / off / auto (auto: on when there is a base)
  BLOATGUARD_COMMENT     on / off: upsert the sticky pull-request comment (default on)
  BLOATGUARD_SUMMARY     on / off: write the job summary (default on)
  BLOATGUARD_SARIF_FILE  write SARIF here
  BLOATGUARD_FAIL_ON     error / warning / never (default error)
  BLOATGUARD_MERGE       JSON reports (globs) to merge instead of checking
  BLOATGUARD_ACCEPT_LABEL  pull-request label that accepts the regression findings
                         (default bloatguard:accept; empty: none)
  BLOATGUARD_REPORT      where to write the JSON report (default: bloatguard-report.json in
                         $RUNNER_TEMP, or in the system's temporary directory: never the checkout)
  BLOATGUARD_GITHUB_TOKEN  token for the comment (GITHUB_TOKEN is used when unset)
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shlex
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from bloatguard.errors import BloatguardError
from bloatguard.report.github import append_summary

MARKER = "<!-- bloatguard-report -->"
COMMENT_LIMIT = 65_536  # characters GitHub accepts in a comment body
FAIL_ON = ("error", "warning", "never")
_SWITCHES = {"on": True, "true": True, "yes": True, "1": True,
             "off": False, "false": False, "no": False, "0": False}


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _SWITCHES:
        raise BloatguardError(f"{name}={value!r}: expected on or off")
    return _SWITCHES[value]


@dataclass
class Inputs:
    """The Action's inputs, read from BLOATGUARD_* variables and validated."""

    paths: list[str] = field(default_factory=lambda: ["."])
    base: str = ""
    config: str = ""
    args: list[str] = field(default_factory=list)
    latency: bool | None = None  # None: bloatguard's default (on when comparing with a base)
    comment: bool = True
    summary: bool = True
    sarif_file: str = ""
    fail_on: str = "error"
    merge: list[str] = field(default_factory=list)
    accept_label: str = "bloatguard:accept"
    report: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "bloatguard-report.json")
    token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Inputs:
        def split(name: str) -> list[str]:
            try:
                return shlex.split(env.get(name, ""))  # split only: nothing is run by a shell
            except ValueError as exc:
                raise BloatguardError(f"{name}: {exc}") from None

        fail_on = env.get("BLOATGUARD_FAIL_ON", "").strip().lower() or "error"
        if fail_on not in FAIL_ON:
            raise BloatguardError(f"BLOATGUARD_FAIL_ON={fail_on!r}: expected one of {', '.join(FAIL_ON)}")
        latency = env.get("BLOATGUARD_LATENCY", "").strip().lower()
        temp = env.get("RUNNER_TEMP") or tempfile.gettempdir()
        return cls(
            paths=split("BLOATGUARD_PATHS") or ["."],
            base=env.get("BLOATGUARD_BASE", "").strip(),
            config=env.get("BLOATGUARD_CONFIG", "").strip(),
            args=split("BLOATGUARD_ARGS"),
            latency=None if latency in ("", "auto") else _switch(env, "BLOATGUARD_LATENCY", False),
            comment=_switch(env, "BLOATGUARD_COMMENT", True),
            summary=_switch(env, "BLOATGUARD_SUMMARY", True),
            sarif_file=env.get("BLOATGUARD_SARIF_FILE", "").strip(),
            fail_on=fail_on,
            merge=split("BLOATGUARD_MERGE"),
            accept_label=env.get("BLOATGUARD_ACCEPT_LABEL", "bloatguard:accept").strip(),
            report=Path(env.get("BLOATGUARD_REPORT", "").strip() or Path(temp) / "bloatguard-report.json"),
            token=env.get("BLOATGUARD_GITHUB_TOKEN") or env.get("GITHUB_TOKEN", ""),
        )


@dataclass
class GitHub:
    """What the runner tells a step about the workflow run (the GITHUB_* variables)."""

    event_name: str = ""
    event: dict[str, Any] = field(default_factory=dict)
    api_url: str = "https://api.github.com"
    server_url: str = "https://github.com"
    repository: str = ""
    run_id: str = ""
    step_summary: Path | None = None
    output: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GitHub:
        event: dict[str, Any] = {}
        if env.get("GITHUB_EVENT_PATH"):
            try:
                event = json.loads(Path(env["GITHUB_EVENT_PATH"]).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BloatguardError(f"GITHUB_EVENT_PATH: cannot read the event ({exc})") from None
        optional = lambda name: Path(env[name]) if env.get(name) else None  # noqa: E731
        return cls(event_name=env.get("GITHUB_EVENT_NAME", ""), event=event,
                   api_url=env.get("GITHUB_API_URL", cls.api_url).rstrip("/"),
                   server_url=env.get("GITHUB_SERVER_URL", cls.server_url).rstrip("/"),
                   repository=env.get("GITHUB_REPOSITORY", ""), run_id=env.get("GITHUB_RUN_ID", ""),
                   step_summary=optional("GITHUB_STEP_SUMMARY"), output=optional("GITHUB_OUTPUT"))

    @property
    def pull_request(self) -> dict[str, Any]:
        return self.event.get("pull_request") or {}

    @property
    def pr_number(self) -> int | None:
        number = self.pull_request.get("number") or self.event.get("number")
        return number if isinstance(number, int) else None

    @property
    def base_sha(self) -> str | None:
        """The commit a pull request (or push, or merge queue entry) is compared with."""
        sha = ((self.pull_request.get("base") or {}).get("sha")
               or (self.event.get("merge_group") or {}).get("base_sha")
               or self.event.get("before"))
        # A push that creates a branch has no previous commit: "0000...".
        return sha if isinstance(sha, str) and sha.strip("0") else None

    @property
    def labels(self) -> list[str]:
        """The pull request's label names."""
        return [label["name"] for label in self.pull_request.get("labels") or []
                if isinstance(label, dict) and isinstance(label.get("name"), str)]

    @property
    def head_sha(self) -> str:
        return (self.pull_request.get("head") or {}).get("sha") or self.event.get("after") or ""

    @property
    def run_url(self) -> str:
        if not (self.repository and self.run_id):
            return ""
        return f"{self.server_url}/{self.repository}/actions/runs/{self.run_id}"


# --- workflow commands, outputs, summary ---------------------------------------------------------

def notice(kind: str, message: str) -> None:
    from bloatguard.report.github import command

    print(command(kind, message, title="bloatguard"), flush=True)


def print_untrusted(text: str) -> None:
    """Print text that contains data from the pull request (model paths, messages) to the log
    with workflow commands switched off, so a line in it cannot act as one."""
    token = secrets.token_hex(16)
    sys.stdout.write(f"::stop-commands::{token}\n{text}::{token}::\n")
    sys.stdout.flush()


def set_outputs(path: Path | None, values: dict[str, Any]) -> None:
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as out:
        for name, value in values.items():
            # The multi-line form, with a delimiter no value can contain.
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
            out.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


# --- the sticky comment --------------------------------------------------------------------------

class ApiError(Exception):
    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class _SameApiRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects within the API only: urllib would send the Authorization header along
    to whatever host a redirect names."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not newurl.startswith(self.api_url + "/"):
            return None  # urllib then raises the redirect as an HTTPError
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class GitHubApi:
    """The few REST calls the comment needs, with urllib (no extra dependency). The token goes
    to `api_url` and nowhere else."""

    def __init__(self, api_url: str, token: str, timeout: float = 30.0) -> None:
        self.api_url, self.token, self.timeout = api_url.rstrip("/"), token, timeout
        self.opener = urllib.request.build_opener(_SameApiRedirects(self.api_url))

    def request(self, method: str, url: str,
                body: dict[str, Any] | None = None) -> tuple[Any, dict[str, str]]:
        if not url.startswith(self.api_url + "/"):
            url = self.api_url + url
        request = urllib.request.Request(url, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "bloatguard",
            **({"Content-Type": "application/json"} if body is not None else {}),
        }, data=json.dumps(body).encode() if body is not None else None)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                payload = response.read()
                headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _api_message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(None, f"cannot reach {self.api_url}: {getattr(exc, 'reason', exc)}") from None
        try:
            return (json.loads(payload) if payload else None), headers
        except ValueError:
            raise ApiError(None, f"{method} {url}: the answer is not JSON") from None

    def pages(self, url: str):
        """Every item of a paginated list, following the Link headers, but only to the same API:
        the token is never sent to a host a response names."""
        while url:
            items, headers = self.request("GET", url)
            yield from items or []
            url = _next_link(headers.get("Link", ""))
            if url and not url.startswith(self.api_url + "/"):
                raise ApiError(None, f"pagination points outside {self.api_url}")


def _api_message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read()).get("message") or error.reason
    except (ValueError, AttributeError, OSError):
        return str(error.reason)


def _next_link(header: str) -> str:
    for part in header.split(","):
        section = part.split(";")
        if len(section) > 1 and any(s.strip() == 'rel="next"' for s in section[1:]):
            return section[0].strip().strip("<>")
    return ""


def comment_body(markdown: str, github: GitHub) -> str:
    from bloatguard import __version__

    footer = f"\n<sub>bloatguard {__version__}"
    if github.head_sha:
        footer += f" · {github.head_sha[:7]}"
    if github.run_url:
        footer += f" · [workflow run]({github.run_url})"
    footer += "</sub>\n"
    room = COMMENT_LIMIT - len(MARKER) - len(footer) - 200
    if len(markdown) > room:
        markdown = (markdown[:markdown.rfind("\n", 0, room) + 1]
                    + "\n*(report truncated: over GitHub's comment size limit; the job summary has "
                      "all of it)*\n")
    return f"{MARKER}\n{markdown}{footer}"


ACTIONS_BOT = "github-actions[bot]"


def token_login(api: GitHubApi) -> str:
    """Who comments with this token: GET /user answers for a personal or user token; the
    Actions token may not read it (403), and comments as github-actions[bot]."""
    try:
        user, _ = api.request("GET", "/user")
    except ApiError as exc:
        if exc.status in (401, 403, 404):
            return ACTIONS_BOT
        raise
    login = user.get("login") if isinstance(user, dict) else None
    return login if isinstance(login, str) and login else ACTIONS_BOT


def upsert_comment(api: GitHubApi, repository: str, number: int, body: str) -> str:
    """Update the pull request's bloatguard comment, or create it. Returns "updated" or
    "created". The comment to update starts with the marker and was written by this token's
    identity: anyone can post a comment holding the marker, and the bot must not be made to
    rewrite it (or to leave the real report unposted)."""
    owner, _, name = repository.partition("/")
    repo = f"/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"
    login = token_login(api)
    existing = next((comment for comment in api.pages(f"{repo}/issues/{number}/comments?per_page=100")
                     if (comment.get("body") or "").startswith(MARKER)
                     and (comment.get("user") or {}).get("login") == login), None)
    if existing is not None:
        api.request("PATCH", f"{repo}/issues/comments/{int(existing['id'])}", {"body": body})
        return "updated"
    api.request("POST", f"{repo}/issues/{number}/comments", {"body": body})
    return "created"


def publish_comment(inputs: Inputs, github: GitHub, markdown: str) -> bool:
    """Upsert the sticky comment; False when the report must go to the job summary instead."""
    if not inputs.comment or github.pr_number is None:
        return True  # nothing to comment on (a push), or comments are off
    if not inputs.token or not github.repository:
        notice("notice", "no github-token (or GITHUB_REPOSITORY): the report is in the job "
                         "summary instead of a pull-request comment")
        return False
    api = GitHubApi(github.api_url, inputs.token)
    try:
        outcome = upsert_comment(api, github.repository, github.pr_number,
                                 comment_body(markdown, github))
    except ApiError as exc:
        if exc.status == 403:
            notice("notice", f"cannot comment on this pull request ({exc}): a pull request from "
                             "a fork gets a read-only token. The report is in the job summary.")
        else:
            notice("warning", f"could not update the pull-request comment ({exc}); the report "
                              "is in the job summary")
        return False
    print(f"bloatguard: {outcome} the report comment on pull request #{github.pr_number}")
    return True


# --- the run -------------------------------------------------------------------------------------

def _check(inputs: Inputs, github: GitHub):
    from bloatguard import app

    base = inputs.base or github.base_sha
    argv = [*inputs.paths]
    if inputs.config:
        argv += ["--config", inputs.config]
    if base:
        base = prepare_base(base, Path(inputs.paths[0]))
        argv += ["--base", base]
    else:
        notice("notice", "no base commit (not a pull request or push event, and no `base` input): "
                         "models are checked against absolute budgets only")
    if inputs.latency is not None:
        argv.append("--latency" if inputs.latency else "--no-latency")
    if inputs.accept_label and inputs.accept_label in github.labels:
        argv += ["--accept-regressions", f"pull request label {inputs.accept_label}"]
    run = app.collect(app.check_parser().parse_args([*argv, *inputs.args]))
    return run.results, run.config, run.rules, run.unmatched


def prepare_base(base: str, start: Path) -> str:
    """The base commit, fetched if a shallow checkout lacks it, with its Git LFS objects so
    that LFS-tracked base models are measured, not their pointers. Returns its SHA."""
    from bloatguard.gitbase import GitRepo

    repo = GitRepo(start if start.exists() else Path.cwd())
    sha = repo.resolve_base(base, fetch=True)
    attributes = repo.root / ".gitattributes"
    uses_lfs = attributes.is_file() and "filter=lfs" in attributes.read_text(errors="replace")
    if uses_lfs and shutil.which("git-lfs"):
        # Through GitRepo, with the settings that keep the repository's own config inert.
        try:
            repo.git.lfs("fetch", "origin", sha)
        except Exception as exc:  # git.GitCommandError, or git-lfs missing after all
            stderr = str(getattr(exc, "stderr", "") or exc).strip()
            notice("warning", f"git lfs fetch of the base commit failed; LFS models are compared "
                              f"without their base version: {stderr[-300:]}")
    return sha


def _merge(inputs: Inputs):
    from bloatguard.merge import merge_reports

    paths = sorted({match for pattern in inputs.merge for match in glob.glob(pattern)})
    if not paths:
        raise BloatguardError(f"merge: no report matches {' '.join(inputs.merge)}")
    return merge_reports([Path(path) for path in paths]), None, None, []


def verdict(results, fail_on: str) -> int:
    """The exit code `fail-on` asks for: 0 for `never`, else bloatguard's own code (2 for a
    model it could not evaluate, 1 for an error), with warnings failing too for `warning`."""
    from bloatguard.result import exit_code, summarize

    if fail_on == "never":
        return 0
    code = exit_code(results)
    if code == 0 and fail_on == "warning" and summarize(results)["warnings"]:
        return 1
    return code


def run(env: Mapping[str, str] | None = None) -> int:
    from bloatguard.report import writer
    from bloatguard.report.github import render as annotations
    from bloatguard.result import summarize

    env = os.environ if env is None else env
    inputs, github = Inputs.from_env(env), GitHub.from_env(env)
    if github.event_name == "pull_request_target":
        notice("warning", "running on pull_request_target: this event runs with a write token and "
                          "secrets, so never check out and process a fork's code in it; use "
                          "`on: pull_request` (see the bloatguard Action docs)")
    try:
        results, config, rules, unmatched = _merge(inputs) if inputs.merge else _check(inputs, github)
    except BloatguardError as exc:
        notice("error", f"bloatguard could not evaluate the models: {exc}")
        append_summary(github.step_summary if inputs.summary else None,
                       f"### bloatguard could not evaluate the models\n\n{exc}\n")
        raise
    context = {"rules": rules, "unmatched": unmatched}
    if config is not None:
        context["budgets_for"] = lambda result: config.resolve(Path(result.path)).budgets
    inputs.report.parent.mkdir(parents=True, exist_ok=True)
    inputs.report.write_text(writer("json")(results, **context), encoding="utf-8")
    if inputs.sarif_file:
        sarif = Path(inputs.sarif_file)
        sarif.parent.mkdir(parents=True, exist_ok=True)
        sarif.write_text(writer("sarif")(results, **context), encoding="utf-8")
    print_untrusted(writer("text")(results, **context))
    markdown = writer("markdown")(results, **context)
    commented = publish_comment(inputs, github, markdown)
    sys.stdout.write(annotations(results, unmatched=unmatched))
    if inputs.summary or not commented:
        append_summary(github.step_summary, markdown)
    summary = summarize(results)
    set_outputs(github.output, {"errors": summary["errors"], "warnings": summary["warnings"],
                                "report": inputs.report.resolve()})
    return verdict(results, inputs.fail_on)
