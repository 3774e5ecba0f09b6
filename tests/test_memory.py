"""BG005 memory: the static peak activation memory against hand-computed answers, the measured
peak memory of real onnxruntime sessions, the budgets, growth against --base, and the reports.

Every expected byte count below is worked out by hand in the comment next to it: a tensor is
alive from the node that produces it (an input: from the start) to the last node that reads it
(a graph output: to the end), and the peak is the largest sum over the nodes.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bloatguard.formats import read_model
from bloatguard.measure.compute import analyze

from factories import package_file, save
from gitrepo import Repo

FLOAT = TensorProto.FLOAT
OPSET = [helper.make_opsetid("", 17)]
MiB = 2**20


def weight(name: str, *dims: int, dtype=np.float32, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(dims) * 0.01).astype(dtype), name)


def graph_model(nodes, inputs, outputs, initializers=(), *, value_info=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        initializer=list(initializers), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=OPSET)


def memory(model: onnx.ModelProto, shapes=None):
    return analyze(model, shapes or {})[1]


def residual(channels: int = 64, size: int = 128, *, skip: bool = True, batch="batch",
             seed: int = 0) -> onnx.ModelProto:
    """x[1, C, H, W] -> Conv3x3 -> Relu -> Conv3x3 (-> Add(x)) -> y, float32."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["c2" if skip else "y"], pads=[1, 1, 1, 1],
                              name="conv2")]
    if skip:
        nodes.append(helper.make_node("Add", ["c2", "x"], ["y"], name="add"))
    return graph_model(nodes, [("x", FLOAT, [batch, channels, size, size])], [("y", FLOAT, None)],
                       [weight("w1", channels, channels, 3, 3, seed=seed),
                        weight("w2", channels, channels, 3, 3, seed=seed + 1)])


# --- hand-computed graphs -----------------------------------------------------------------------

def test_residual_chain_keeps_its_input_alive_until_the_add():
    # Every tensor is [1, 64, 128, 128] float32 = 4 MiB. x is read by the Add at the end, so at
    # the Relu x, c1 and r are alive (and at conv2 x, r and c2): 12 MiB.
    result = memory(residual())
    assert result.activation_memory == 12 * MiB
    assert result.peak["node"] == "Relu 'relu'"  # the first node that reaches the peak
    assert result.peak["tensors"] == [["c1", 4 * MiB], ["r", 4 * MiB], ["x", 4 * MiB]]
    assert result.peak["computed_constants"] == 0
    assert "assumed batch 1 for input 'x'" in analyze(residual(), {})[0].notes
    assert any(note.startswith("activation memory peaks at Relu 'relu' (12.6 MB alive: 'c1' 4.19 MB")
               for note in result.notes), result.notes


def test_without_the_skip_connection_two_tensors_are_ever_alive():
    # x dies at conv1: at every node exactly one input and one output are alive: 8 MiB.
    assert memory(residual(skip=False)).activation_memory == 8 * MiB


def test_branches_that_rejoin():
    # x[1, 1000] (4000 B) feeds two MatMuls; a [1, 2000] (8000 B), b and c [1, 500] (2000 B).
    # mm_a: x + a = 12000; mm_b: x + a (read later by mm_c) + b = 14000;
    # mm_c: a + b + c = 12000; add: b + c + y = 6000. Peak 14000 at mm_b.
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm_a"),
             helper.make_node("MatMul", ["x", "w2"], ["b"], name="mm_b"),
             helper.make_node("MatMul", ["a", "w3"], ["c"], name="mm_c"),
             helper.make_node("Add", ["b", "c"], ["y"], name="add")]
    model = graph_model(nodes, [("x", FLOAT, [1, 1000])], [("y", FLOAT, None)],
                        [weight("w1", 1000, 2000), weight("w2", 1000, 500), weight("w3", 2000, 500)])
    result = memory(model)
    assert result.activation_memory == 14000
    assert result.peak["node"] == "MatMul 'mm_b'"
    assert result.peak["tensors"] == [["a", 8000], ["x", 4000], ["b", 2000]]


def test_a_graph_output_that_is_read_again_stays_alive_to_the_end():
    # x, a, b, y are [1, 1000] float32 (4000 B). a is a graph output, so it is alive at the Neg
    # too: a + b + y = 12000. Were it not an output, the peak would be 8000.
    def chain(outputs):
        nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
                 helper.make_node("Neg", ["b"], ["y"], name="neg")]
        return graph_model(nodes, [("x", FLOAT, [1, 1000])], [(n, FLOAT, None) for n in outputs])

    both = memory(chain(["a", "y"]))
    assert both.activation_memory == 12000
    assert both.peak["node"] == "Neg 'neg'"
    assert memory(chain(["y"])).activation_memory == 8000


def test_if_counts_the_costlier_branch_inside_the_outer_live_set():
    # x[1, 256] float32 is 1024 B; cond is a bool scalar, 1 B.
    # then: t = Relu(x) (1024), z_then = Mul(t, t) (1024): peak 2048 at the Mul (x is the outer
    #       scope's, counted there).  else: z_else = Neg(x): peak 1024.
    # At the If: cond + x (read again by the Add) + the then branch's 2048, which stands in for
    # the If's output z: 1 + 1024 + 2048 = 3073. At the Add: z + x + y = 3072.
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Mul", ["t", "t"], ["z_then"], name="square")],
        "then", [], [helper.make_tensor_value_info("z_then", FLOAT, [1, 256])])
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["z_else"])], "else", [],
        [helper.make_tensor_value_info("z_else", FLOAT, [1, 256])])
    nodes = [helper.make_node("If", ["cond"], ["z"], then_branch=then_branch, else_branch=else_branch,
                              name="choose"),
             helper.make_node("Add", ["z", "x"], ["y"])]
    model = graph_model(nodes, [("cond", TensorProto.BOOL, []), ("x", FLOAT, [1, 256])],
                        [("y", FLOAT, None)])
    result = memory(model)
    assert result.activation_memory == 3073
    assert result.peak["node"] == "Mul 'square'"
    assert result.peak["graph"] == "then_branch of If 'choose'"
    assert result.peak["tensors"] == [["t", 1024], ["x", 1024], ["z_then", 1024], ["cond", 1]]
    assert any("counted the costlier one (then_branch: 2.05 KB; else_branch: 1.02 KB)" in note
               for note in result.notes), result.notes


def test_a_loop_body_is_counted_once_with_a_note():
    # The body gets iter (int64, read by nothing), cond_in (bool, 1 B) and v_in [1, 100] (400 B):
    # relu: cond_in + v_in + a = 801; add: cond_in + a + v_out = 801; keep: cond_in + v_out (a
    # body output, alive to the end) + cond_out = 402. Body peak 801.
    # Outer: the trip count and the condition are initializers (weights). At the Loop:
    # v0 + v (its output) + the body's 801 = 1601; then v + y = 800.
    body = helper.make_graph(
        [helper.make_node("Relu", ["v_in"], ["a"]),
         helper.make_node("Add", ["a", "one"], ["v_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", FLOAT, [1, 100])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", FLOAT, [1, 100])],
        initializer=[numpy_helper.from_array(np.ones((1, 100), np.float32), "one")])
    nodes = [helper.make_node("Loop", ["trips", "go", "v0"], ["v"], body=body, name="repeat"),
             helper.make_node("Relu", ["v"], ["y"])]
    model = graph_model(nodes, [("v0", FLOAT, [1, 100])], [("y", FLOAT, None)],
                        [numpy_helper.from_array(np.array(3, np.int64), "trips"),
                         numpy_helper.from_array(np.array(True), "go")])
    result = memory(model)
    assert result.activation_memory == 1601
    assert result.peak["graph"] == "body of Loop 'repeat'"
    assert "activation memory: the body of Loop 'repeat' is counted once (one iteration's tensors)" \
        in result.notes


def test_weights_stored_narrow_behind_a_cast_are_held_at_run_time():
    # y = x[1, 1000] @ w[1000, 1000]: x and y are 4000 B each, the weight is not an activation.
    # Stored as float16 with a Cast back to float32 (what `fix`'s convert-fp16 writes), the
    # float32 copy (4,000,000 B) is computed from a weight alone: runtimes fold it at load and
    # hold it, so it counts at every node: 4000 + 4000 + 4,000,000.
    plain = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, [1, 1000])],
                        [("y", FLOAT, None)], [weight("w", 1000, 1000)])
    narrow = graph_model([helper.make_node("Cast", ["w16"], ["w"], to=FLOAT),
                          helper.make_node("MatMul", ["x", "w"], ["y"])],
                         [("x", FLOAT, [1, 1000])], [("y", FLOAT, None)],
                         [weight("w16", 1000, 1000, dtype=np.float16)])
    assert memory(plain).activation_memory == 8000
    result = memory(narrow)
    assert result.activation_memory == 4_008_000
    assert result.peak["computed_constants"] == 4_000_000
    assert result.peak["computed_constant_count"] == 1


def test_dequantized_weights_are_not_counted_but_the_steps_of_a_fold_are_released():
    # QDQ int8: DequantizeLinear of a stored int8 weight is fused into the int8 kernel by
    # runtimes; x and y alone count: 8000 B.
    qdq = graph_model(
        [helper.make_node("DequantizeLinear", ["wq", "scale", "zero"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        [("x", FLOAT, [1, 1000])], [("y", FLOAT, None)],
        [numpy_helper.from_array(np.ones((1000, 1000), np.int8), "wq"),
         numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
         numpy_helper.from_array(np.array(0, np.int8), "zero")])
    assert memory(qdq).activation_memory == 8000
    # A weight sliced and concatenated back (exporters reorder LSTM gates this way): only the
    # result the MatMul reads is held after folding, not the two halves: 4,000,000 + 8000.
    folded = graph_model(
        [helper.make_node("Slice", ["w", "zero", "half", "axis"], ["top"]),
         helper.make_node("Slice", ["w", "half", "end", "axis"], ["bottom"]),
         helper.make_node("Concat", ["bottom", "top"], ["swapped"], axis=0),
         helper.make_node("MatMul", ["x", "swapped"], ["y"])],
        [("x", FLOAT, [1, 1000])], [("y", FLOAT, None)],
        [weight("w", 1000, 1000), *(numpy_helper.from_array(np.array([v], np.int64), n)
                                    for n, v in (("zero", 0), ("half", 500), ("end", 1000), ("axis", 0)))])
    assert memory(folded).activation_memory == 4_008_000


def test_symbolic_dims_follow_the_macs_policy():
    # A symbolic leading dim is batch 1 (with the MACs note); another symbolic dim makes the
    # figure unknown, with a note naming it, until it is configured.
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1, "frames"])],
                        [("y", FLOAT, None)])
    unknown = memory(model)
    assert unknown.activation_memory is None
    assert any(note.startswith("activation memory unknown: tensor 'x' has unknown dims ['frames']; "
                               "set them under [tool.bloatguard.inputs]") for note in unknown.notes)
    assert memory(model, {"x": [1, 300]}).activation_memory == 2 * 300 * 4


def test_shape_inference_failure_makes_it_unknown_with_the_reason():
    model = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, [1, 3])],
                        [("y", FLOAT, None)], [weight("w", 4, 5)])
    macs, result = analyze(model, {})
    assert result.activation_memory is None
    assert result.notes and result.notes[0].startswith("activation memory not counted: the model "
                                                       "cannot run with these input shapes")


# --- real models --------------------------------------------------------------------------------

def _reference_peak(model: onnx.ModelProto, shapes: dict) -> int:
    """The definition, written independently and naively (one subgraph-free scope): infer shapes
    with onnx, then at every node sum the bytes of each input-dependent tensor alive there, plus
    every weight-derived tensor an input-dependent node reads."""
    from onnx import shape_inference

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name]):
                dim.Clear()
                dim.dim_value = size
    model = shape_inference.infer_shapes(model, data_prop=True)
    graph = model.graph
    types = {v.name: v.type.tensor_type for v in [*graph.input, *graph.value_info, *graph.output]}

    def size(name):
        tensor_type = types[name]
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).itemsize
        return itemsize * math.prod(d.dim_value for d in tensor_type.shape.dim)

    constant = {t.name for t in graph.initializer}
    derived = set()
    for node in graph.node:
        if node.op_type == "Constant":
            constant.update(node.output)
        elif all(name in constant or name in derived for name in node.input if name):
            derived.update(node.output)
    held = {name for node in graph.node if not set(node.output) <= derived | constant
            for name in node.input if name in derived}
    varying = [v.name for v in graph.input if v.name not in constant]
    varying += [o for node in graph.node for o in node.output if o and o not in constant | derived]
    outputs = {v.name for v in graph.output}
    produced = {v.name: -1 for v in graph.input}
    produced.update({o: i for i, node in enumerate(graph.node) for o in node.output})
    readers_of: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            readers_of.setdefault(name, []).append(i)
    peak = 0
    for index in range(len(graph.node)):
        alive = 0
        for name in varying:
            readers = readers_of.get(name, [])
            last = len(graph.node) if name in outputs else max(readers, default=produced[name])
            if name not in types and not readers and name not in outputs:
                continue  # an output nothing reads, of a type onnx cannot infer (a Dropout mask)
            if produced[name] <= index <= last and (readers or name in outputs or produced[name] == index):
                alive += size(name)
        peak = max(peak, alive)
    return peak + sum(size(name) for name in held)


@pytest.mark.parametrize("name", ["light_resnet50", "light_vgg19", "light_squeezenet", "magika"])
def test_real_models_match_the_naive_definition(name):
    if name == "magika":
        path = package_file("magika", "models", "standard_v3_3", "model.onnx")
        shapes = {"bytes": [1, 2048]}
    else:
        path = package_file("onnx", "backend", "test", "data", "light", f"{name}.onnx")
        shapes = {}
    proto = read_model(path).handle.proto
    first, second = analyze(proto, shapes)[1], analyze(proto, shapes)[1]
    assert first == second  # stable
    assert first.activation_memory == _reference_peak(onnx.load(str(path)), shapes), first.notes


def test_silero_vad_static_figure():
    # 16 kHz frames of 512 samples: the If on `sr` runs its 16 kHz branch (the 8 kHz one cannot
    # take 512 samples, as MACs found). Its peak is inside that branch; the reordered LSTM
    # weights (two [1, 512, 128] float32 tensors folded from slices of stored weights) are held.
    proto = read_model(package_file("silero_vad", "data", "silero_vad.onnx")).handle.proto
    result = memory(proto, {"input": [1, 512], "state": [2, 1, 128]})
    assert result.activation_memory == analyze(proto, {"input": [1, 512], "state": [2, 1, 128]})[1].activation_memory
    assert result.peak["graph"] == "then_branch of If 'If_0'"
    assert result.peak["computed_constants"] == 2 * 512 * 128 * 4
    assert ["input", 512 * 4] in result.peak["tensors"]
    assert 2 * 512 * 128 * 4 < result.activation_memory < 2 * 512 * 128 * 4 + 64 * 1024
    unresolved = memory(proto, {})
    assert unresolved.activation_memory is None
    assert unresolved.notes[0] == ("activation memory unknown: tensor 'input' has unknown dims "
                                   "['axis 1']; set them under [tool.bloatguard.inputs]"), unresolved.notes


# --- the rule, through the CLI --------------------------------------------------------------------

def _project(tmp_path, config: str, model: onnx.ModelProto | None = None):
    save(model or residual(), tmp_path / "models" / "res.onnx")
    (tmp_path / "bloatguard.toml").write_text(config)
    return tmp_path


def test_check_reports_activation_memory_and_fails_its_budget(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(_project(tmp_path, '[budgets."models/**"]\nmax-activation-memory = "12 MiB"\n'))
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    assert code == 0, out
    model = json.loads(out)["models"][0]
    assert model["metrics"]["activation_memory"] == 12 * MiB
    assert model["metrics"]["peak_memory"] is None  # not measured without --latency
    assert not [f for f in model["findings"] if f["code"] == "BG005"]
    assert any(note.startswith("activation memory peaks at Relu 'relu'") for note in model["notes"])

    (tmp_path / "bloatguard.toml").write_text('[budgets."models/**"]\nmax-activation-memory = "10 MiB"\n')
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    assert code == 1
    [finding] = [f for f in json.loads(out)["models"][0]["findings"] if f["code"] == "BG005"]
    assert finding["rule"] == "memory" and finding["severity"] == "error"
    assert finding["message"] == ("activation memory 12.6 MB exceeds the budget of 10.5 MB "
                                  "(max-activation-memory in bloatguard.toml) by 2.1 MB; it peaks "
                                  "at Relu 'relu'")
    assert finding["details"]["value"] == 12 * MiB and finding["details"]["limit"] == 10 * MiB
    assert finding["details"]["peak"]["node"] == "Relu 'relu'"
    code, out, _ = run_cli("check", "models")
    assert "activation memory  12.6 MB  10.5 MB" in out  # the text table's row, with its budget


def test_an_unknown_activation_memory_warns_with_the_reason(tmp_path, run_cli, monkeypatch):
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1, "frames"])],
                        [("y", FLOAT, None)])
    monkeypatch.chdir(_project(tmp_path, '[budgets."**"]\nmax-activation-memory = "1 MB"\n', model))
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    assert code == 0
    [finding] = json.loads(out)["models"][0]["findings"]
    assert finding["severity"] == "warning"
    assert finding["message"].startswith("cannot check max-activation-memory: activation memory "
                                         "unknown (activation memory unknown: tensor 'x' has "
                                         "unknown dims ['frames']")


def test_growth_against_the_base_is_caught(tmp_path, run_cli, monkeypatch):
    # Same weights, same file size and MACs per pixel; the head works on 4x the pixels.
    repo = Repo(tmp_path / "repo")
    _project(repo.root, '[budgets."models/**"]\nmax-activation-memory-increase = "10%"\n'
                        'min-activation-memory-increase = "1 MiB"\n', residual(size=32))
    repo.commit("base")
    save(residual(size=64), repo.root / "models" / "res.onnx")
    monkeypatch.chdir(repo.root)
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--no-latency", "--output-format", "json")
    assert code == 1, out
    model = json.loads(out)["models"][0]
    assert model["base"]["metrics"]["activation_memory"] == 3 * 64 * 32 * 32 * 4  # 768 KiB
    assert model["metrics"]["activation_memory"] == 3 * 64 * 64 * 64 * 4  # 3 MiB
    [finding] = [f for f in model["findings"] if f["code"] == "BG005"]
    assert finding["message"] == ("activation memory grew from 786 KB to 3.15 MB (+300.0%), more "
                                  "than the allowed +10% (max-activation-memory-increase in "
                                  "bloatguard.toml); it peaks at Relu 'relu'")
    # Under the noise floor the same growth passes.
    (repo.root / "bloatguard.toml").write_text(
        '[budgets."models/**"]\nmax-activation-memory-increase = "10%"\nmin-activation-memory-increase = "4 MiB"\n')
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--no-latency")
    assert code == 0, out
    assert "activation memory  786 KB  3.15 MB  +2.36 MB (+300.0%)" in out


def test_markdown_shows_activation_memory_as_a_column(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "repo")
    _project(repo.root, "", residual(size=32))
    repo.commit("base")
    save(residual(size=64), repo.root / "models" / "res.onnx")
    monkeypatch.chdir(repo.root)
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--no-latency", "--output-format", "markdown")
    header = next(line for line in out.splitlines() if line.startswith("| "))
    assert "activation memory" in header and "peak memory" not in header and "latency" not in header
    assert "786 KB → **3.15 MB** (+300.0%)" in out


def test_explain_bg005(run_cli):
    code, out, _ = run_cli("explain", "BG005")
    assert code == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead",
                    "## Fix safety", "## Options"):
        assert heading in out
    for key in ("max-activation-memory", "max-peak-memory", "min-peak-memory-increase"):
        assert key in out


def test_init_writes_an_activation_memory_budget(tmp_path, run_cli, monkeypatch):
    save(residual(), tmp_path / "models" / "res.onnx")
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("init", "models")
    assert code == 0, err
    text = (tmp_path / "bloatguard.toml").read_text()
    assert 'max-activation-memory-increase = "5%"' in text
    assert 'max-activation-memory = "14 MB"' in text  # 12.58 MB + 10 %, rounded up


# --- measured peak memory ---------------------------------------------------------------------------

FAST_LATENCY = '[latency]\ntime-budget = "200 ms"\nmin-rounds = 3\nconfirm = false\n'


@pytest.mark.slow
def test_peak_memory_is_measured_with_latency_and_fails_its_budget(tmp_path, run_cli, monkeypatch):
    # 12 MiB of activations, 295 KB of weights: onnxruntime must hold at least the weights and
    # the largest tensor it computes, and a budget below that fails.
    monkeypatch.chdir(_project(tmp_path, FAST_LATENCY + '[budgets."models/**"]\nmax-peak-memory = "4 MiB"\n'))
    code, out, _ = run_cli("check", "models", "--latency", "--output-format", "json")
    model = json.loads(out)["models"][0]
    peak = model["metrics"]["peak_memory"]
    assert peak >= model["metrics"]["weight_bytes"] + 4 * MiB
    assert code == 1
    [finding] = [f for f in model["findings"] if f["code"] == "BG005"]
    assert finding["details"]["key"] == "max-peak-memory" and finding["details"]["value"] == peak
    code, out, _ = run_cli("check", "models", "--latency", "--output-format", "markdown")
    header = next(line for line in out.splitlines() if line.startswith("| "))
    assert "peak memory" in header and "latency" in header


@pytest.mark.slow
def test_base_and_head_are_measured_in_separate_fresh_processes(tmp_path, run_cli, monkeypatch):
    import bloatguard.isolate

    calls = []
    real = bloatguard.isolate.run_fresh

    def spy(target, *args, **kwargs):
        if target.endswith(":_memory_child"):
            calls.append(args[0]["path"])
        return real(target, *args, **kwargs)

    monkeypatch.setattr(bloatguard.isolate, "run_fresh", spy)
    repo = Repo(tmp_path / "repo")
    _project(repo.root, FAST_LATENCY + '[budgets."models/**"]\nmax-peak-memory-increase = "20%"\n',
             residual(size=32))
    repo.commit("base")
    save(residual(size=128), repo.root / "models" / "res.onnx")  # 16x the activations
    monkeypatch.chdir(repo.root)
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--output-format", "json")
    model = json.loads(out)["models"][0]
    assert len(calls) == 2 and len(set(calls)) == 2  # one child per side
    before, after = model["base"]["metrics"]["peak_memory"], model["metrics"]["peak_memory"]
    # The head's 12 MiB of activations against the base's 0.75 MiB, with the same weights.
    assert after - before >= 8 * MiB, (before, after)
    assert code == 1
    assert any(f["code"] == "BG005" and f["details"]["key"] == "max-peak-memory-increase"
               for f in model["findings"])


# --- bloatguard fix ----------------------------------------------------------------------------------

def test_fix_keeps_no_candidate_that_breaks_an_activation_budget_the_original_meets(tmp_path, run_cli,
                                                                                     monkeypatch):
    # y = x[1, 1000] @ w[1000, 1000]: 8000 B of activations. convert-fp16 stores w as float16
    # behind a Cast, whose float32 result (4,000,000 B) is held at run time: it halves the file
    # and breaks the 1 MB activation budget, so it is rejected, and says why.
    model = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, [1, 1000])],
                        [("y", FLOAT, [1, 1000])], [weight("w", 1000, 1000)])
    monkeypatch.chdir(_project(tmp_path, '[budgets."models/**"]\nmax-activation-memory = "1 MB"\n', model))
    code, out, _ = run_cli("fix", "models/res.onnx", "--unsafe-fixes", "--dry-run", "--no-latency",
                           "--only", "convert-fp16", "--output-format", "json")
    [report] = json.loads(out)["models"]
    assert report["original"]["activation_memory"] == 8000
    [candidate] = report["candidates"]
    assert candidate["file_size"] < report["original"]["file_size"] * 0.6
    assert candidate["verdict"] == "rejected"
    assert candidate["reasons"] == ["over max-activation-memory: 4.01 MB > 1 MB"]


@pytest.mark.slow
def test_fix_measures_peak_memory_and_keeps_no_candidate_that_breaks_its_budget(tmp_path, run_cli,
                                                                                monkeypatch):
    # convert-fp16 on y = x @ w[2000, 2000]: onnxruntime folds the Cast into a float32 copy of
    # w while the float16 one is loaded, so the candidate's peak is ~8 MB above the original's
    # (16 MB of weights). A budget 3 MB above the original's measured peak: the original meets
    # it, the candidate does not.
    model = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", FLOAT, [1, 2000])],
                        [("y", FLOAT, [1, 2000])], [weight("w", 2000, 2000)])
    # Latency is timed (peak memory is measured where latency is) but may not reject the
    # candidate: its speed is the original's, and a noisy round must not decide this test.
    timing = FAST_LATENCY + 'min-effect = "1000%"\n'
    root = _project(tmp_path, timing, model)
    monkeypatch.chdir(root)
    args = ("fix", "models/res.onnx", "--unsafe-fixes", "--dry-run", "--only", "convert-fp16",
            "--output-format", "json")
    code, out, _ = run_cli(*args)
    [report] = json.loads(out)["models"]
    original = report["original"]["peak_memory"]
    [candidate] = report["candidates"]
    assert original >= 16 * MiB and candidate["peak_memory"] >= original + 4 * MiB, (original, candidate)
    assert candidate["verdict"] == "winner"
    code, text, _ = run_cli(*args[:-2])
    assert "peak mem" in text.splitlines()[2] and "(+" in text.splitlines()[4]

    limit = original + 3 * MiB
    (root / "bloatguard.toml").write_text(
        timing + f'[budgets."models/**"]\nmax-peak-memory = "{limit / MiB:.3f} MiB"\n')
    code, out, _ = run_cli(*args)
    [report] = json.loads(out)["models"]
    [candidate] = report["candidates"]
    assert report["original"]["peak_memory"] <= limit
    assert candidate["verdict"] == "rejected"
    assert [r for r in candidate["reasons"] if r.startswith("over max-peak-memory: ")], candidate["reasons"]
