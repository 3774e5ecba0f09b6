"""Accepted regressions (issue 18): config waivers with a reason, a bound and an expiry, commit
trailers for one change, the Action's label, `bloatguard baseline`, and what is never waivable,
in real temporary git repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import factories
from gitrepo import Repo

BUDGETS = '[budgets."models/**"]\nmax-params = "500"\nmax-params-increase = "5%"\n'


def waiver(codes: str = '["BG002"]', expires: str = "2099-01-01", extra: str = "") -> str:
    return (f'\n[[accept]]\npath = "models/a.onnx"\ncodes = {codes}\n'
            f'reason = "the new head needs it"\nexpires = {expires}\n{extra}')


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))  # 676 params
    repo.write("bloatguard.toml", BUDGETS)
    repo.commit("a model over its budget")
    monkeypatch.chdir(repo.root)
    return repo


def report(run_cli, *args):
    code, out, err = run_cli("check", "models", "--no-latency", "--output-format", "json", *args)
    return code, json.loads(out) if out else None, err


def finding(document, code="BG002"):
    return next(f for f in document["models"][0]["findings"] if f["code"] == code)


def test_a_waived_budget_passes_and_says_why(repo, run_cli):
    assert report(run_cli)[0] == 1
    repo.write("bloatguard.toml", BUDGETS + waiver())
    code, document, _ = report(run_cli)
    assert code == 0
    bg002 = finding(document)
    assert bg002["severity"] == "error"  # kept in the data...
    assert bg002["accepted"] == {"reason": "the new head needs it", "expires": "2099-01-01",
                                 "source": "config"}  # ...and accepted
    assert document["summary"]["errors"] == 0 and document["summary"]["accepted"] == 1
    code, text, _ = run_cli("check", "models", "--no-latency")
    assert "accepted BG002 error" in text and "the new head needs it; until 2099-01-01" in text
    code, markdown, _ = run_cli("check", "models", "--no-latency", "--output-format", "markdown")
    assert "#### Accepted regressions" in markdown and "#### Findings" not in markdown


def test_an_expired_waiver_fails_and_names_itself(repo, run_cli):
    repo.write("bloatguard.toml", BUDGETS + waiver(expires="2020-01-31"))
    code, document, _ = report(run_cli)
    assert code == 1
    bg002 = finding(document)
    assert "accepted" not in bg002
    assert "expired on 2020-01-31" in bg002["message"] and "the new head needs it" in bg002["message"]
    assert "accept entry 1 in bloatguard.toml" in bg002["message"]


def test_an_expired_waiver_of_a_warning_still_fails(repo, run_cli):
    repo.write("bloatguard.toml", BUDGETS + '[rules.param-count]\nseverity = "warning"\n'
               + waiver(expires="2020-01-31"))
    code, document, _ = report(run_cli)
    assert code == 1 and finding(document)["severity"] == "error"


def test_growth_beyond_the_bound_fails_with_both_figures(repo, run_cli):
    repo.write("bloatguard.toml", BUDGETS + waiver(extra='max-params = "700"\n'))
    assert report(run_cli)[0] == 0
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 40, 4))  # 844 params
    code, document, _ = report(run_cli)
    assert code == 1
    message = finding(document)["message"]
    assert "max-params = 700; now 844" in message


def test_a_waiver_that_matches_nothing_is_stale(repo, run_cli):
    repo.write("bloatguard.toml", BUDGETS.replace('"500"', '"1K"') + waiver())
    code, document, err = report(run_cli)
    assert code == 0
    [stale] = document["config_warnings"]
    assert "matches no finding any more; remove it" in stale["message"]
    assert "accept entry 1 in bloatguard.toml" in stale["message"] and "matches no finding" in err


@pytest.mark.parametrize("codes", ['["BG900"]', '["BG000", "BG002"]', '["BG9"]', '["ALL"]',
                                   '["unsafe-serialization"]'])
def test_unsafe_content_and_unreadable_models_are_never_waivable(repo, run_cli, codes):
    repo.write("bloatguard.toml", BUDGETS + waiver(codes=codes))
    code, _, err = run_cli("check", "models", "--no-latency")
    assert code == 2
    assert "can never be waived" in err and "accept[1].codes" in err


@pytest.mark.parametrize("entry, problem", [
    ('[[accept]]\npath = "models/a.onnx"\ncodes = ["BG002"]\nexpires = 2099-01-01\n', "`reason` is required"),
    ('[[accept]]\npath = "m"\ncodes = ["BG002"]\nreason = " "\nexpires = 2099-01-01\n', "non-empty"),
    ('[[accept]]\npath = "m"\ncodes = ["BG002"]\nreason = "r"\n', "`expires` is required"),
    ('[[accept]]\npath = "m"\ncodes = ["BG002"]\nreason = "r"\nexpires = "soon"\n', "a date such as"),
    ('[[accept]]\npath = "m"\ncodes = ["BG002"]\nreason = "r"\nexpires = 2099-01-01\nmax-parms = 5\n',
     "did you mean `max-params`?"),
])
def test_a_waiver_states_its_reason_and_expiry(repo, run_cli, entry, problem):
    repo.write("bloatguard.toml", BUDGETS + "\n" + entry)
    code, _, err = run_cli("check", "models", "--no-latency")
    assert code == 2 and problem in err


def test_a_trailer_accepts_the_change_it_comes_with(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    repo.write("bloatguard.toml", '[budgets."models/**"]\nmax-params-increase = "5%"\n')
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 40, 4))
    repo.commit("grow a on purpose")
    code, document, _ = report(run_cli, "--base", "main")
    assert code == 1  # without the trailer: a regression
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 41, 4))
    repo.commit("wider head\n\nBloatguard-Accept: models/*.onnx BG002 the wider head is worth it")
    code, document, _ = report(run_cli, "--base", "main")
    assert code == 0
    assert finding(document)["accepted"]["source"] == "trailer"
    assert finding(document)["accepted"]["reason"] == "the wider head is worth it"
    # The next change compares with a base that holds the accepted model: nothing to accept.
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--ff-only", "feature")
    assert report(run_cli, "--base", "HEAD")[0] == 0


def test_a_trailer_cannot_accept_unsafe_content(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    repo.commit("try\n\nBloatguard-Accept: models/** BG900 trust me")
    code, _, err = run_cli("check", "models", "--no-latency", "--base", "main")
    assert code == 2 and "BG900 can never be waived" in err and "trailer of commit" in err


def test_the_label_accepts_regressions_but_not_absolute_budgets(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 40, 4))
    repo.commit("grow")
    args = ("--base", "main", "--accept-regressions", "pull request label bloatguard:accept")
    code, document, _ = report(run_cli, *args)
    findings = {f["details"]["key"]: f for f in document["models"][0]["findings"]}
    assert findings["max-params-increase"]["accepted"]["source"] == "label"
    assert "accepted" not in findings["max-params"]  # the absolute budget still fails
    assert code == 1


def test_sarif_suppresses_an_accepted_finding_and_validates(repo, run_cli):
    from test_ci_reports import sarif_schema_validator

    repo.write("bloatguard.toml", BUDGETS + waiver())
    code, out, _ = run_cli("check", "models", "--no-latency", "--output-format", "sarif")
    log = json.loads(out)
    [result] = [r for r in log["runs"][0]["results"] if r["ruleId"] == "BG002"]
    assert result["suppressions"] == [{"kind": "external", "status": "accepted",
                                       "justification": "the new head needs it (until 2099-01-01); "
                                                        "accepted by config"}]
    assert not list(sarif_schema_validator().iter_errors(log))


def test_junit_skips_an_accepted_finding(repo, run_cli):
    import xml.etree.ElementTree as ET

    repo.write("bloatguard.toml", BUDGETS + waiver())
    code, out, _ = run_cli("check", "models", "--no-latency", "--output-format", "junit")
    case = next(c for c in ET.fromstring(out).iter("testcase") if c.get("name").startswith("BG002"))
    assert case.find("failure") is None
    assert case.find("skipped").get("message") == "accepted: the new head needs it"


def test_baseline_then_check_passes_and_holds_the_line(repo, run_cli):
    before = (repo.root / "bloatguard.toml").read_text()
    code, out, _ = run_cli("baseline", "models", "--reason", "adopting bloatguard", "--days", "30")
    assert code == 0 and "accepted 1 finding(s)" in out
    written = (repo.root / "bloatguard.toml").read_text()
    assert written.startswith(before)  # nothing else changed
    assert "max-params = 676" in written and 'reason = "adopting bloatguard"' in written
    assert report(run_cli)[0] == 0
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 33, 4))  # grows past today's value
    assert report(run_cli)[0] == 1


def test_baseline_with_nothing_to_accept_writes_nothing(repo, run_cli):
    repo.write("bloatguard.toml", BUDGETS.replace('"500"', '"1K"'))
    code, _, err = run_cli("baseline", "models")
    assert code == 2 and "nothing was written" in err
    assert "accept" not in (repo.root / "bloatguard.toml").read_text()


def test_baseline_in_pyproject_appends_tool_tables(repo, run_cli):
    (repo.root / "bloatguard.toml").unlink()
    Path(repo.root / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.bloatguard.budgets."models/**"]\n'
                                                  'max-params = "500"\n')
    assert run_cli("baseline", "models", "--expires", "2099-12-31")[0] == 0
    text = (repo.root / "pyproject.toml").read_text()
    assert "[[tool.bloatguard.accept]]" in text and "expires = 2099-12-31" in text
    assert report(run_cli)[0] == 0
