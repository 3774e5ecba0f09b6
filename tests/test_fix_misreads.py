"""No silent misreads (issue 14 #4): samples in either layout the README documents, read as the
right number of samples and said so; any other shape, and a configured input shape that
contradicts a dim the model fixes, are errors that name what is wrong; a ConstantOfShape's fill
value is not a parameter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from bloatguard import samples as sample_files
from bloatguard.errors import ConfigError
from bloatguard.facts import ValueInfo

from fix_models import conv_net, info, init, save

QUANTIZE = ("--unsafe-fixes", "--dry-run", "--no-latency", "--only", "quantize-static",
            "--output-format", "json")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A Conv net big enough for BG101, with a symbolic batch as Paddle exports it."""
    path = conv_net(tmp_path_factory.mktemp("det") / "det.onnx", channels=64, blocks=3, size=8)
    import onnx

    model = onnx.load(str(path))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "p2o.DynamicDimension.0"
    onnx.save(model, str(path))
    return path


def images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --- samples layouts --------------------------------------------------------------------------

def test_images_stacked_the_natural_way_are_16_samples_not_one_batch(run_cli, tmp_path, detector):
    """(16, 3, 8, 8) for an input [batch, 3, 8, 8] is 16 samples of batch 1 (it was read as
    one sample of batch 16: "1 samples"); the other layout gives the very same verification."""
    natural = images((16, 3, 8, 8))
    np.savez(tmp_path / "natural.npz", images=natural)
    np.savez(tmp_path / "stacked.npz", images=natural[:, np.newaxis])
    reports = {}
    for name in ("natural", "stacked"):
        code, out, err = run_cli("fix", detector, *QUANTIZE, "--samples", tmp_path / f"{name}.npz")
        assert code == 0, err
        [model] = json.loads(out)["models"]
        assert f"fidelity inputs: {name}.npz (16 samples)" in model["notes"]
        reports[name] = model
    assert ("natural.npz: 'images' read as (N, *input_shape[1:]): 16 samples of shape "
            "[1, 3, 8, 8]") in reports["natural"]["notes"]
    assert ("stacked.npz: 'images' read as (N, *input_shape): 16 samples of shape [1, 3, 8, 8]"
            in reports["stacked"]["notes"])
    [natural_fix], [stacked_fix] = (reports[n]["candidates"] for n in ("natural", "stacked"))
    assert natural_fix["fidelity"] == stacked_fix["fidelity"]


def test_a_fixed_batch_of_one_may_be_left_out_too(tmp_path):
    inputs = [ValueInfo("images", "float32", (1, 3, 4, 4))]
    np.savez(tmp_path / "s.npz", images=images((5, 3, 4, 4)))
    loaded = sample_files.load(tmp_path / "s.npz", inputs)
    assert loaded.arrays["images"].shape == (5, 1, 3, 4, 4) and loaded.count == 5
    assert loaded.layouts == {"images": "(N, *input_shape[1:])"}


@pytest.mark.parametrize("declared, shape, expected", [
    # A fixed batch of 2 cannot be left out: rank-equal arrays are not samples of it.
    ((2, 3), (2, 3), "shape (2, 3) does not fit input shape [2, 3]; expected (N, 2, 3):"),
    # Neither layout's dims fit: both are named.
    ((1, 3, 4, 4), (16, 3, 5, 4), "shape (16, 3, 5, 4) does not fit input shape [1, 3, 4, 4]; "
                                  "expected (N, 1, 3, 4, 4) or (N, 3, 4, 4):"),
    (("batch", 6), (4, 2, 2, 6), "does not fit input shape [batch, 6]; expected (N, batch, 6) "
                                 "or (N, 6):"),
])
def test_an_array_that_fits_neither_layout_is_an_error_naming_both(tmp_path, declared, shape,
                                                                   expected):
    np.savez(tmp_path / "s.npz", x=np.zeros(shape, np.float32))
    with pytest.raises(ConfigError) as error:
        sample_files.load(tmp_path / "s.npz", [ValueInfo("x", "float32", declared)])
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 's.npz'}: array 'x': ") and expected in message


def test_a_misfit_samples_file_exits_2_with_one_line(run_cli, tmp_path, detector):
    np.savez(tmp_path / "bad.npz", images=images((16, 3, 9, 8)))
    code, out, err = run_cli("fix", detector, *QUANTIZE, "--samples", tmp_path / "bad.npz")
    assert code == 2 and "Traceback" not in err
    assert err.strip() == (f"bloatguard: error: {tmp_path / 'bad.npz'}: array 'images': shape "
                           "(16, 3, 9, 8) does not fit input shape [p2o.DynamicDimension.0, 3, 8, "
                           "8]; expected (N, p2o.DynamicDimension.0, 3, 8, 8) or (N, 3, 8, 8): N "
                           "samples stacked on a new leading axis")


def test_tabular_rows_are_samples_and_scalars_stack_flat(tmp_path):
    inputs = [ValueInfo("x", "float32", ("batch", 6)), ValueInfo("sr", "int64", ())]
    np.savez(tmp_path / "s.npz", x=images((40, 6)), sr=np.full(40, 16000))
    loaded = sample_files.load(tmp_path / "s.npz", inputs)
    assert loaded.arrays["x"].shape == (40, 1, 6) and loaded.arrays["sr"].shape == (40,)
    assert loaded.rows("x").shape == (40, 6)
    assert loaded.describe() == [
        "s.npz: 'x' read as (N, *input_shape[1:]): 40 samples of shape [1, 6]",
        "s.npz: 'sr' read as (N, *input_shape): 40 samples of shape []"]


# --- configured shapes --------------------------------------------------------------------------

def test_a_configured_shape_that_contradicts_a_fixed_dim_is_a_config_error(run_cli, tmp_path):
    """[inputs] x = [1, 512] on a model fixed at [1, 576]: MACs for 512 with a note, and a
    fix that onnxruntime refuses. Now an error naming model, input, axis and both values."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    path = save(nodes, [info("x", [1, 576])], [info("y", [1, 8])],
                [init("w", rng.standard_normal((576, 8)).astype(np.float32))],
                tmp_path / "models" / "m.onnx")
    (tmp_path / "bloatguard.toml").write_text('[inputs."models/m.onnx"]\nx = [1, 512]\n')
    code, out, err = run_cli("fix", path, "--dry-run", "--no-latency")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip() == (
        "bloatguard: error: " + str(path) + ": [tool.bloatguard.inputs] shape [1, 512] for input "
        "'x' contradicts the model's [1, 576]: axis 1 is fixed at 576 in the model, configured "
        "512; configure 576, or export the model with that axis dynamic")


def test_symbolic_dims_take_any_value_and_ranks_must_match():
    from bloatguard.measure.dims import check_configured

    declared = {"x": ["batch", 3, None, -1], "scalar": []}
    check_configured("m.onnx", declared, {"x": [8, 3, 224, 224], "other": [1]})
    with pytest.raises(ConfigError, match=r"m.onnx: .* shape \[8, 3, 224\] for input 'x' "
                                          r"contradicts the model's \[batch, 3, \?, \?\]: rank 3, "
                                          r"the model's is 4"):
        check_configured("m.onnx", declared, {"x": [8, 3, 224]})


# --- ConstantOfShape ----------------------------------------------------------------------------

def test_constant_of_shape_fill_values_are_not_parameters(run_cli, tmp_path):
    """Two ConstantOfShape nodes (a float and an int64 fill, as dynamic-shape exports hold
    them) next to a 4x3 weight: 12 parameters, not 14."""
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [1.0])
    zero = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=fill),
             helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=zero),
             helper.make_node("Cast", ["zeros"], ["zeros_f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "ones"], ["shifted"]),
             helper.make_node("Add", ["shifted", "zeros_f"], ["h"]),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    path = save(nodes, [info("x", ["batch", 4])], [info("y", ["batch", 3])],
                [init("w", np.ones((4, 3), np.float32))], tmp_path / "m.onnx")
    code, out, err = run_cli("check", path, "--output-format", "json")
    assert code == 0, err
    metrics = json.loads(out)["models"][0]["metrics"]
    assert metrics["params"] == 12 and metrics["params_by_dtype"] == {"float32": 12}


def test_check_refuses_a_contradicting_shape_too(run_cli, tmp_path, monkeypatch):
    """`check` counts MACs with the configured shape: a shape the model cannot run is exit 2
    there as well, not MACs for a shape that never happens."""
    rng = np.random.default_rng(0)
    save([helper.make_node("MatMul", ["x", "w"], ["y"])], [info("x", [1, 576])], [info("y", [1, 8])],
         [init("w", rng.standard_normal((576, 8)).astype(np.float32))], tmp_path / "models" / "m.onnx")
    (tmp_path / "bloatguard.toml").write_text('[inputs."models/m.onnx"]\nx = [1, 512]\n')
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("check", "models", "--no-latency")
    assert code == 2 and "axis 1 is fixed at 576 in the model, configured 512" in err
    # `show` too: per-layer MACs for a shape the model cannot run would describe nothing.
    code, out, err = run_cli("show", "models/m.onnx")
    assert code == 2 and "axis 1 is fixed at 576 in the model, configured 512" in err and not out


def test_check_latency_reads_naturally_stacked_images_as_samples(tmp_path):
    """The latency feeds read a (16, 3, 8, 8) array for a [batch, 3, 8, 8] input as 16 images
    (feeding the first), not as one batch of 16."""
    from bloatguard.facts import ValueInfo as Value
    from bloatguard.measure.feeds import plan_feeds

    value = Value("input", "float32", ("batch", 3, 8, 8))
    np.savez(tmp_path / "s.npz", input=images((16, 3, 8, 8)))
    plan = plan_feeds([value], samples=tmp_path / "s.npz")
    [feed] = plan.feeds
    assert feed.source == "sample" and list(feed.shape) == [1, 3, 8, 8]
