"""BG004 latency: feeds, the child process, the paired protocol, the rule and the CLI defaults.

Every timing here is a real onnxruntime session in a real child process; budgets are shrunk
(a few hundred milliseconds per model) so the file stays fast. The protocol's false-positive
rate and power are measured by benchmarks/latency.py, not asserted here.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bloatguard import config as config_module
from bloatguard.config import Config
from bloatguard.engine import Selection, check, measure
from bloatguard.errors import ConfigError
from bloatguard.facts import ValueInfo
from bloatguard.measure import stats
from bloatguard.measure.feeds import FeedError, materialize, plan_feeds
from bloatguard.measure.latency import attach_latency
from bloatguard.result import ModelResult

import factories
from gitrepo import Repo

OPSET = [helper.make_opsetid("", 17)]

# Small budgets: a few hundred milliseconds per model instead of seconds.
FAST = """
[latency]
time-budget = "300 ms"
min-rounds = 12
max-rounds = 40
block-time = "3 ms"
warmup = 2
"""


def fast_config(extra: str = "", tmp_path: Path | None = None) -> Config:
    path = (tmp_path or Path.cwd()) / "bloatguard.toml"
    path.write_text(FAST + extra)
    return config_module.load(path)


def single_op_model(path: Path, nodes, inputs, outputs, inits=(), opsets=OPSET) -> Path:
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    return factories.save(helper.make_model(graph, opset_imports=opsets), path)


def memory_hog(path: Path) -> Path:
    """Expands its input to 65536 x 65536 floats (16 GiB) at run time."""
    shape = numpy_helper.from_array(np.array([65536, 65536], np.int64), "shape")
    return single_op_model(
        path, [helper.make_node("Expand", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])


def custom_op(path: Path) -> Path:
    """An operator from a domain onnxruntime has no kernels for: session creation fails."""
    return single_op_model(
        path, [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        opsets=[*OPSET, helper.make_opsetid("com.example", 1)])


def endless_loop(path: Path) -> Path:
    """A Loop with a trip count of 2^62: runs for centuries."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1])],
        initializer=[numpy_helper.from_array(np.ones(1, np.float32), "one")])
    return single_op_model(
        path, [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array(2**62, np.int64), "trips"),
         numpy_helper.from_array(np.array(True), "cond")])


def comparison(base: Path, head: Path, config: Config) -> ModelResult:
    result = ModelResult(path=head.name, facts=measure(head, config), base=measure(base, config),
                         status="modified", settings_path=head, head_file=head,
                         base_file=lambda: base)
    attach_latency([result], config)
    return result


# --- feeds -------------------------------------------------------------------------------------

def test_feeds_follow_dtype_shape_config_and_int_range():
    inputs = [ValueInfo("image", "float32", ("batch", 3, "h", "w")),
              ValueInfo("mask", "bool", ("batch", "h", "w")),
              ValueInfo("ids", "int64", ("batch", 7)),
              ValueInfo("scale", "float16", (2,))]
    plan = plan_feeds(inputs, shapes={"image": [2, 3, 8, 5]}, int_range=(5, 7))
    shapes = {feed.name: feed.shape for feed in plan.feeds}
    # h and w fixed on image are the same h and w on mask; batch too.
    assert shapes == {"image": (2, 3, 8, 5), "mask": (2, 8, 5), "ids": (2, 7), "scale": (2,)}
    arrays = materialize(plan.feeds)
    assert arrays["image"].dtype == np.float32 and 0 <= arrays["image"].min() < arrays["image"].max() < 1
    assert arrays["mask"].dtype == np.bool_
    assert arrays["ids"].dtype == np.int64 and set(np.unique(arrays["ids"])) <= {5, 6, 7}
    assert arrays["scale"].dtype == np.float16
    # Seeded by name: the base and the head of a comparison get identical inputs.
    assert np.array_equal(materialize(plan.feeds)["image"], arrays["image"])


@pytest.mark.parametrize("order", [("state", "x"), ("x", "state")])
def test_feeds_and_mac_counting_resolve_the_same_dims_in_any_input_order(order):
    # silero's layout: the batch dim leads `x` but sits in the middle of `state`. MACs counting
    # fixes it to 1 on both; the feeds latency times must do the same, whichever comes first.
    from bloatguard.measure.compute import count_macs

    declared = {"state": (2, "batch", 128), "x": ("batch", 16)}
    plan = plan_feeds([ValueInfo(name, "float32", declared[name]) for name in order])
    assert {f.name: f.shape for f in plan.feeds} == {"state": (2, 1, 128), "x": (1, 16)}
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in order], "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, declared[name]) for name in order],
        [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None) for name in order])
    macs_notes = count_macs(helper.make_model(graph), {}).notes
    assert set(plan.notes) <= set(macs_notes) and "assumed batch 1 for input 'x'" in plan.notes


def test_batch_defaults_to_one_and_unknown_dims_are_named():
    plan = plan_feeds([ValueInfo("x", "float32", ("N", 16))])
    assert plan.feeds[0].shape == (1, 16) and "assumed batch 1 for input 'x'" in plan.notes
    with pytest.raises(FeedError, match=r"input 'audio' has unknown dims 'samples'.*inputs"):
        plan_feeds([ValueInfo("audio", "float32", ("samples",))])
    with pytest.raises(FeedError, match="declares no shape"):
        plan_feeds([ValueInfo("x", "float32", None)])
    with pytest.raises(FeedError, match="bfloat16"):
        plan_feeds([ValueInfo("x", "bfloat16", (1, 4))])
    with pytest.raises(FeedError, match="does not fit"):
        plan_feeds([ValueInfo("x", "float32", (1, 4))], shapes={"x": [1, 5]})


def test_pinned_values_and_samples(tmp_path):
    samples = tmp_path / "samples.npz"
    audio = np.arange(3 * 1 * 512, dtype=np.float32).reshape(3, 1, 512)
    np.savez_compressed(samples, audio=audio)
    inputs = [ValueInfo("audio", "float32", ("batch", "samples")),
              ValueInfo("sr", "int64", ()),
              ValueInfo("state", "float32", (2, "batch", 128)),
              ValueInfo("flags", "int32", ("batch", 3))]
    plan = plan_feeds(inputs, samples=samples, pins={"sr": 16000, "flags": [[1, 0, 1]],
                                                     "nothere": 1})
    by_name = {feed.name: feed for feed in plan.feeds}
    assert by_name["audio"].shape == (1, 512) and by_name["audio"].source == "sample"
    assert by_name["state"].shape == (2, 1, 128)  # batch bound by the sample
    arrays = materialize(plan.feeds)
    assert np.array_equal(arrays["audio"], audio[0])  # sample 0, not a random array
    assert arrays["sr"].shape == () and arrays["sr"] == 16000 and arrays["sr"].dtype == np.int64
    assert arrays["flags"].tolist() == [[1, 0, 1]] and arrays["flags"].dtype == np.int32
    assert any("'nothere'" in note for note in plan.notes)


def test_feeds_above_the_cap_are_refused_before_allocating():
    huge = [ValueInfo("x", "float32", (1, 100_000, 100_000))]  # 40 GB: allocating would fail
    with pytest.raises(FeedError, match=r"take 40 GB, above the feed cap of 1\.07 GB"):
        plan_feeds(huge)
    with pytest.raises(FeedError, match="feed cap"):
        plan_feeds([ValueInfo("x", "float32", (1, 1024))], cap=1000)
    assert plan_feeds([ValueInfo("x", "float32", (1, 1024))], cap=4096).nbytes == 4096


# --- statistics --------------------------------------------------------------------------------

def test_sign_test_holm_and_verdict_need_effect_and_significance():
    greater, less = stats.sign_test(10, 0)
    assert greater == pytest.approx(0.5 ** 10) and less == 1.0
    assert stats.sign_test(5, 5)[0] == pytest.approx(0.623046875)
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    base = [1.0] * 30
    small = stats.paired(base, [1.02] * 30)  # significant, but below the 5 % floor
    assert small.p_regression < 1e-6
    assert small.verdict(min_effect=0.05, alpha=0.01) == stats.BELOW_FLOOR
    assert stats.paired(base, [0.98] * 30).verdict(min_effect=0.05, alpha=0.01) == stats.BELOW_FLOOR
    big = stats.paired(base, [1.2] * 30)
    assert big.verdict(min_effect=0.05, alpha=0.01) == stats.REGRESSION
    assert big.verdict(min_effect=0.05, alpha=0.01, p_regression=0.02) == stats.NO_CHANGE
    assert stats.paired(base, [0.8] * 30).verdict(min_effect=0.05, alpha=0.01) == stats.IMPROVEMENT
    lucky = stats.paired([1.0] * 4, [1.3] * 4)  # large but from 4 rounds: not evidence
    assert lucky.verdict(min_effect=0.05, alpha=0.01) == stats.NO_CHANGE
    low, high = stats.paired(base, list(np.linspace(1.1, 1.3, 30))).ci
    assert 1.1 <= low < 1.2 < high <= 1.3


# --- config ------------------------------------------------------------------------------------

def test_latency_config_is_validated(tmp_path):
    config = fast_config('threads = 2\ngraph-optimization = "basic"\nalpha = 0.05\n'
                         'min-effect = "3%"\nfeed-cap = "10 MB"\nint-range = [1, 3]\n'
                         '[latency.values."models/vad.onnx"]\nsr = 16000\n', tmp_path)
    latency = config.latency
    assert (latency.threads, latency.graph_optimization, latency.alpha) == (2, "basic", 0.05)
    assert latency.min_effect == pytest.approx(0.03) and latency.feed_cap == 10**7
    assert latency.int_range == (1, 3) and latency.values == [("models/vad.onnx", {"sr": 16000})]
    for bad, match in [('timeout = 5', r"latency\.timeout: 5 is invalid: a time needs a unit"),
                       ('memory-limit = "4"', r"latency\.memory-limit"),
                       ('spin = true', r"latency\.spin: unknown key"),
                       ('graph-optimization = "max"', "disabled, basic, extended, all"),
                       ('min-effect = 0.05', "percentage"),
                       ('[latency.values."a.onnx"]\nsr = "fast"', r'values\."a\.onnx"\.sr')]:
        (tmp_path / "bloatguard.toml").write_text(f"[latency]\n{bad}\n")
        with pytest.raises(ConfigError, match=match) as info:
            config_module.load(tmp_path / "bloatguard.toml")
        assert "bloatguard.toml" in str(info.value)


# --- measuring ---------------------------------------------------------------------------------

def test_unresolved_dims_and_bad_models_become_notes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    models = tmp_path / "models"
    factories.matmul_chain(models / "good.onnx", 2, width=32)
    memory_hog(models / "hog.onnx")
    custom_op(models / "custom.onnx")
    endless_loop(models / "loop.onnx")
    single_op_model(models / "symbolic.onnx", [helper.make_node("Relu", ["x"], ["y"])],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["samples"])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["samples"])])
    config = fast_config('timeout = "3 s"\nmemory-limit = "3 GiB"\n'
                         '[budgets."**"]\nmax-latency = "10 s"\n')
    results = {Path(r.path).name: r for r in check([models], config, Selection(), latency=True)}
    assert results["good.onnx"].facts.measured["latency_ms"] > 0
    assert not [f for f in results["good.onnx"].findings if f.code == "BG004"]
    expected = {
        "hog.onnx": "ran out of memory",
        "custom.onnx": "onnxruntime cannot load",
        "loop.onnx": "timed out after 3 s while warming up",
        "symbolic.onnx": "input 'x' has unknown dims 'samples'",
    }
    for name, text in expected.items():
        facts = results[name].facts
        assert facts.measured.get("latency_ms") is None
        assert any(text in note for note in facts.notes), (name, facts.notes)
        warning = next(f for f in results[name].findings if f.code == "BG004")
        assert warning.severity.value == "warning" and text in warning.message


def test_a_significant_change_below_the_floor_is_not_called_insignificant():
    """The report once said "no significant change ... p = 1.2e-17"."""
    from bloatguard.measure.latency import describe_comparison

    described = describe_comparison({"ratio": 1.021, "ci": [1.015, 1.03], "min_effect": 0.05,
                                     "verdict": stats.BELOW_FLOOR})
    assert described == "×1.02 [1.01, 1.03] significant, below the 5% effect floor"
    assert "no significant" not in described


def test_identical_models_show_no_significant_change(tmp_path):
    base = factories.matmul_chain(tmp_path / "base.onnx", 3, width=128)
    head = tmp_path / "head.onnx"
    head.write_bytes(base.read_bytes())
    result = comparison(base, head, fast_config(tmp_path=tmp_path))
    found = result.facts.latency_comparison
    # Two sessions of the same model can differ by a percent or two (where memory landed), and
    # enough rounds make that significant: never a regression or an improvement, though.
    assert found["verdict"] in (stats.NO_CHANGE, stats.BELOW_FLOOR), found
    assert found["rounds"] >= 12 and found["ci"][0] <= found["ratio"] <= found["ci"][1]
    assert result.base.measured["latency_ms"] == found["base_median_ms"]
    assert result.facts.latency["threads"] == 1


def test_pytorch_files_get_one_note_for_the_run(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a.safetensors", "b.safetensors"):  # the format is a length, a header, bytes
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        (models / name).write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    results = check([models], fast_config(tmp_path=tmp_path), Selection(), latency=True)
    notes = [note for r in results for note in r.facts.notes if "latency" in note]
    assert len(notes) == 1 and "2 in this run" in notes[0]


# --- the CLI in a git repository ---------------------------------------------------------------

@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", FAST + '[budgets."models/**"]\nmax-latency-increase = "10%"\n')
    factories.matmul_chain(repo.root / "models" / "net.onnx", 2)
    repo.commit("base model")
    monkeypatch.chdir(repo.root)
    return repo


def json_report(run_cli, *args):
    code, out, err = run_cli("check", "models", *args, "--output-format", "json")
    return code, json.loads(out)["models"][0], err


def test_a_three_times_slower_head_is_a_regression(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    factories.matmul_chain(repo.root / "models" / "net.onnx", 6)
    repo.commit("three times the work")
    code, model, _ = json_report(run_cli, "--base", "main")
    assert code == 1
    latency = model["latency"]
    assert latency["verdict"] == "regression" and latency["ratio"] > 1.5, latency
    assert latency["ci"][0] > 1.1 and latency["p_value"] < 0.01
    assert latency["threads"] == 1 and "CPUs" in latency["machine"]
    assert model["metrics"]["latency_ms"] == latency["median_ms"]
    assert model["base"]["metrics"]["latency_ms"] < model["metrics"]["latency_ms"]
    finding = next(f for f in model["findings"] if f["code"] == "BG004")
    assert finding["severity"] == "error" and "regressed ×" in finding["message"]
    assert finding["details"]["ratio"] == latency["ratio"] and finding["details"]["ci"] == latency["ci"]

    code, out, _ = run_cli("check", "models", "--base", "main")
    assert code == 1 and "regression" in out and "×" in out


def test_a_base_blob_is_written_out_once_for_measuring_and_timing(repo, run_cli, monkeypatch):
    from bloatguard.gitbase import GitRepo

    written = []
    original = GitRepo.write_blob
    monkeypatch.setattr(GitRepo, "write_blob",
                        lambda self, blob, target: (written.append(blob.sha), original(self, blob, target))[1])
    factories.matmul_chain(repo.root / "models" / "net.onnx", 3)
    code, model, _ = json_report(run_cli, "--base", "main", "--no-cache")
    assert model["latency"]["median_ms"] > 0 and model["base"]["metrics"]["latency_ms"] > 0
    assert len(written) == len(set(written)) == 1, written  # the base, once


def test_absolute_budget_names_machine_and_threads(repo, run_cli):
    repo.write("bloatguard.toml", FAST + '[budgets."models/**"]\nmax-latency = "1 us"\n')
    code, model, _ = json_report(run_cli, "--latency")
    assert code == 1
    finding = next(f for f in model["findings"] if f["code"] == "BG004")
    assert "exceeds the budget of 0.001 ms" in finding["message"]
    assert "1 thread, on " in finding["message"] and finding["details"]["machine"]
    assert model["latency"]["median_ms"] > 0.001 and "verdict" not in model["latency"]


def test_latency_defaults_on_with_base_only(repo, run_cli):
    factories.matmul_chain(repo.root / "models" / "net.onnx", 3)  # modified in the working tree
    measured = lambda model: model["metrics"]["latency_ms"] is not None  # noqa: E731
    assert not measured(json_report(run_cli)[1])
    assert measured(json_report(run_cli, "--latency")[1])
    model = json_report(run_cli, "--base", "main")[1]
    assert measured(model) and "verdict" in model["latency"]
    assert not measured(json_report(run_cli, "--base", "main", "--no-latency")[1])
    repo.git("add", "-A")
    assert not measured(json_report(run_cli, "--staged")[1])  # the pre-commit hook stays fast
    assert measured(json_report(run_cli, "--staged", "--latency")[1])  # a cached staged blob too


def test_check_without_latency_never_imports_onnxruntime(repo):
    repo.write("bloatguard.toml", FAST + '[budgets."models/**"]\nmax-latency = "1 us"\n')
    factories.matmul_chain(repo.root / "models" / "net.onnx", 3)
    script = ("import sys\nfrom bloatguard.cli import main\n"
              "code = main(['check', 'models', '--output-format', 'json'])\n"
              "print('CODE', code, 'ORT', 'onnxruntime' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=repo.root, capture_output=True,
                          text=True, check=False)
    assert "CODE 0 ORT False" in done.stderr, done.stderr
    assert "BG004" not in done.stdout  # no latency measured, so no budget warning either
