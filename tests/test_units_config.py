"""Human units and config validation: every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bloatguard import config as config_module
from bloatguard.errors import ConfigError
from bloatguard.units import Growth, parse_count, parse_growth, parse_size, parse_time_ms


@pytest.mark.parametrize("text, expected", [
    ("25 MB", 25_000_000), ("25MB", 25_000_000), ("25 MiB", 25 * 2**20), ("1.5 GB", 1_500_000_000),
    ("512 KiB", 512 * 1024), ("100 B", 100), ("2 gib", 2 * 2**30), ("1_000 KB", 1_000_000),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("value", [25, 25.0, "25", "25 parsecs", "MB", "", "-5 MB", True])
def test_sizes_need_a_known_unit(value):
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("value, expected", [
    (5_000_000, 5_000_000), ("5M", 5_000_000), ("1.2G", 1_200_000_000), ("100K", 100_000),
    ("100k", 100_000), ("750", 750),
])
def test_counts(value, expected):
    assert parse_count(value) == expected


@pytest.mark.parametrize("value", ["5X", -1, "five", 1.5, False])
def test_bad_counts(value):
    with pytest.raises(ValueError):
        parse_count(value)


@pytest.mark.parametrize("text, expected", [("20 ms", 20.0), ("1.5 s", 1500.0), ("500 us", 0.5)])
def test_times(text, expected):
    assert parse_time_ms(text) == pytest.approx(expected)


def test_times_need_a_unit():
    with pytest.raises(ValueError, match="unit"):
        parse_time_ms(20)


def test_growth_relative_and_absolute():
    assert parse_growth("5%", "bytes") == Growth(relative=0.05)
    assert parse_growth("1 MB", "bytes") == Growth(absolute=1_000_000)
    assert parse_growth("100K", "count") == Growth(absolute=100_000)
    assert parse_growth("5%", "count").limit_for(1000) == pytest.approx(1050)
    with pytest.raises(ValueError):
        parse_growth("1", "bytes")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_pyproject_section_and_glob_resolution(tmp_path):
    path = write(tmp_path, "pyproject.toml", """
[project]
name = "x"

[tool.bloatguard]
exclude = ["models/legacy/**"]

[tool.bloatguard.budgets."**/*.onnx"]
max-file-size = "25 MB"
max-params = "5M"

[tool.bloatguard.budgets."models/det.onnx"]
max-params = 1000
max-macs-increase = "5%"

[tool.bloatguard.inputs."models/det.onnx"]
images = [1, 3, 320, 320]

[tool.bloatguard.per-file-ignores]
"models/experimental/**" = ["BG003"]

[tool.bloatguard.rules.param-count]
severity = "warning"
""")
    config = config_module.load(path)
    det = config.resolve(tmp_path / "models" / "det.onnx")
    assert det.budgets["max-file-size"] == 25_000_000
    assert det.budgets["max-params"] == 1000  # the later table wins
    assert det.budgets["max-macs-increase"] == Growth(relative=0.05)
    assert det.inputs == {"images": [1, 3, 320, 320]}
    other = config.resolve(tmp_path / "models" / "sub" / "cls.onnx")
    assert other.budgets == {"max-file-size": 25_000_000, "max-params": 5_000_000}
    assert config.resolve(tmp_path / "models" / "experimental" / "a.onnx").ignored == ["BG003"]
    assert not config.is_included(tmp_path / "models" / "legacy" / "old.onnx")
    assert config.is_included(tmp_path / "models" / "det.onnx")
    assert config.rule_options("param-count") == {"severity": "warning"}


@pytest.mark.parametrize("body, needle", [
    ('[budgets."*.onnx"]\nmax-file-size = 25\n', 'budgets."*.onnx".max-file-size'),
    ('[budgets."*.onnx"]\nmax-file-size = "25 parsecs"\n', "unknown size unit"),
    ('[budgets."*.onnx"]\nmax-filesize = "25 MB"\n', "unknown budget"),
    ('colour = "blue"\n', "colour: unknown key"),
    ('[rules.no-such-rule]\nseverity = "error"\n', "unknown rule"),
    ('[rules.param-count]\nseverity = "fatal"\n', "use error, warning or info"),
    ('[rules.param-count]\nthreshold = 3\n', "unknown option"),
    ('[inputs."m.onnx"]\nx = [1, "a"]\n', "non-negative integers"),
    ('[per-file-ignores]\n"**" = ["BG777"]\n', "matches no rule"),
    ('[budgets\n', "invalid TOML"),
])
def test_config_errors_name_file_and_key(tmp_path, body, needle):
    path = write(tmp_path, "bloatguard.toml", body)
    with pytest.raises(ConfigError) as error:
        config_module.load(path)
    message = str(error.value)
    assert str(path) in message
    assert needle in message
    assert "\n" not in message


def test_config_discovery_walks_up_to_repo_root(tmp_path):
    (tmp_path / ".git").mkdir()
    write(tmp_path, "pyproject.toml", "[project]\nname = 'x'\n")  # no bloatguard section
    write(tmp_path, "bloatguard.toml", "")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert config_module.find_config_file(nested) == tmp_path / "bloatguard.toml"
    (tmp_path / "bloatguard.toml").unlink()
    assert config_module.find_config_file(nested) is None


def test_discovery_stops_at_repo_root(tmp_path):
    write(tmp_path, "bloatguard.toml", "")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    assert config_module.find_config_file(repo) is None
