"""The ONNX reader counts every stored weight wherever exporters put it, without reading weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from bloatguard.formats import read_model
from bloatguard.formats.onnx_wire import read_structure

import factories

# Reader bugs must fail these tests, not hide behind the dispatcher's "internal error" facts.
pytestmark = pytest.mark.usefixtures("debug_mode")


def test_initializer_params_and_dtypes(tmp_path):
    facts = read_model(factories.mlp(tmp_path / "m.onnx", sizes=(16, 32, 4)))
    assert facts.unreadable is None
    assert facts.format == "onnx"
    assert facts.params == factories.mlp_params((16, 32, 4)) == 16 * 32 + 32 + 32 * 4 + 4
    assert facts.params_by_dtype == {"float32": facts.params}
    assert facts.weight_bytes == facts.params * 4
    assert facts.ops["MatMul"] == 2
    assert [(i.name, i.dtype, i.shape) for i in facts.inputs] == [("x", "float32", ("batch", 16))]
    assert facts.opsets == {"ai.onnx": 17}


def test_constant_node_weights_are_counted(tmp_path):
    facts = read_model(factories.mlp(tmp_path / "c.onnx", weights_as="constant"))
    assert facts.params == factories.mlp_params()
    assert {t.where for t in facts.tensors} == {"constant"}


def test_weights_inside_if_branches(tmp_path):
    facts = read_model(factories.if_model(tmp_path / "if.onnx"))
    # 32 + 32 + 4 in the branches, plus the int64 scalar 16000 in the main graph.
    assert facts.params == 69
    assert facts.params_by_dtype == {"float32": 68, "int64": 1}
    assert any("then_branch" in t.where for t in facts.tensors)
    assert any("else_branch" in t.where for t in facts.tensors)
    assert facts.ops["If"] == 1 and facts.ops["MatMul"] == 2


def test_weights_in_model_local_functions(tmp_path):
    facts = read_model(factories.function_model(tmp_path / "fn.onnx"))
    assert facts.params == 16
    assert facts.tensors[0].where.startswith("function Proj/")


def test_sparse_initializer_counts_stored_values(tmp_path):
    facts = read_model(factories.sparse_model(tmp_path / "sparse.onnx"))
    assert facts.params == 3
    assert facts.tensors[0].where == "sparse"


def test_external_data_counted_without_reading_it(tmp_path):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(64, 64), external=True)
    data = tmp_path / "ext.onnx.data"
    assert data.exists()
    facts = read_model(path)
    assert facts.params == 64 * 64 + 64
    assert facts.file_size == path.stat().st_size + data.stat().st_size
    assert facts.external_files == ["ext.onnx.data"]
    assert all(t.external for t in facts.tensors)


def test_external_data_bytes_are_never_read(tmp_path, monkeypatch):
    """Opening the data file at all fails the test: the counts come from the tensors' metadata
    and the file's size (stat), never from its bytes."""
    import builtins
    import io

    path = factories.mlp(tmp_path / "ext.onnx", sizes=(64, 64), external=True)
    data = str(tmp_path / "ext.onnx.data")
    opened = []

    def guard(opener):
        def open_(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == data:
                opened.append(file)
                raise AssertionError(f"the reader opened {file}")
            return opener(file, *args, **kwargs)
        return open_

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(os, "open", guard(os.open))
    assert read_model(path).params == 64 * 64 + 64
    assert opened == []


@pytest.mark.parametrize("location, cause", [
    ("/etc/passwd", "absolute path"),
    ("../outside.data", "leaves the model's directory"),
    ("missing.data", "is missing"),
])
def test_hostile_or_missing_external_locations(tmp_path, location, cause):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(4, 4), external=True)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))
    facts = read_model(path)
    assert facts.unreadable is not None and cause in facts.unreadable
    assert facts.params is None


def test_external_data_symlink_rejected(tmp_path):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(4, 4), external=True)
    data = tmp_path / "ext.onnx.data"
    real = tmp_path / "real.data"
    data.rename(real)
    os.symlink(real, data)
    facts = read_model(path)
    assert "symbolic link" in facts.unreadable


def test_external_data_offset_outside_file(tmp_path):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(4, 4), external=True)
    model = onnx.load(str(path), load_external_data=False)
    entry = next(e for e in model.graph.initializer[0].external_data if e.key == "offset")
    entry.value = str(10**9)
    onnx.save_model(model, str(path))
    assert "outside" in read_model(path).unreadable


def test_wire_reader_strips_only_bulk_data(tmp_path):
    path = factories.mlp(tmp_path / "m.onnx", sizes=(256, 256))
    structure = read_structure(path)
    assert structure.stripped_fields == 1  # the 256x256 weight; the 256-float bias is kept
    assert structure.stripped_bytes == 256 * 256 * 4
    assert len(structure.model_bytes) < 2000
    stripped = onnx.ModelProto.FromString(structure.model_bytes)
    original = onnx.load(str(path))
    assert [list(t.dims) for t in stripped.graph.initializer] == [list(t.dims) for t in original.graph.initializer]
    assert np.array_equal(onnx.numpy_helper.to_array(stripped.graph.initializer[1]),
                          onnx.numpy_helper.to_array(original.graph.initializer[1]))


def test_symbolic_dims_of_every_kind(tmp_path):
    path = factories.mlp(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = "p2o.DynamicDimension.0"
    dims[1].Clear()  # neither value nor param
    onnx.save_model(model, str(path))
    facts = read_model(path)
    assert facts.inputs[0].shape == ("p2o.DynamicDimension.0", None)
    assert facts.params == factories.mlp_params()


@pytest.mark.parametrize("content, cause", [
    (b"", "empty"),
    (factories.LFS_POINTER, "Git LFS pointer"),
    (b"\x00\x01\x02garbage" * 50, "ONNX"),
    (b"PK\x03\x04not really a zip", "zip"),
])
def test_bad_files_are_unreadable_not_crashes(tmp_path, content, cause):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    facts = read_model(path)
    assert facts.unreadable is not None and cause.lower() in facts.unreadable.lower() + facts.remedy.lower()


def test_truncated_model_at_many_offsets(tmp_path):
    source = factories.mlp(tmp_path / "m.onnx", sizes=(32, 32, 8)).read_bytes()
    path = tmp_path / "cut.onnx"
    for cut in range(1, len(source) - 1, max(1, len(source) // 40)):
        path.write_bytes(source[:cut])
        facts = read_model(path)
        # Either it is reported unreadable, or what is left parses and counts at most the truth.
        assert facts.unreadable is not None or (facts.params or 0) <= factories.mlp_params((32, 32, 8)), cut


def test_lfs_pointer_message_names_remedy(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(factories.LFS_POINTER)
    facts = read_model(path)
    assert "git lfs pull" in facts.remedy
    assert facts.metrics()["params"] is None


@pytest.mark.parametrize("dims", [[2**31, 2**31], [4, 5], [3]])
def test_declared_dims_must_match_stored_bytes(tmp_path, dims):
    path = factories.mlp(tmp_path / "m.onnx", sizes=(4, 4))
    model = onnx.load(str(path))
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend(dims)
    onnx.save_model(model, str(path))
    facts = read_model(path)
    assert "declares shape" in facts.unreadable and "but stores 64 bytes" in facts.unreadable


def test_declared_dims_checked_for_stripped_bulk_data(tmp_path):
    path = factories.mlp(tmp_path / "m.onnx", sizes=(64, 64))  # a 16 KB weight: stripped
    model = onnx.load(str(path))
    model.graph.initializer[0].dims[0] = 65
    onnx.save_model(model, str(path))
    assert "but stores 16384 bytes (16640 expected)" in read_model(path).unreadable


def test_external_data_without_length_uses_the_tensor_size(tmp_path):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(4, 4), external=True)
    model = onnx.load(str(path), load_external_data=False)
    tensor = model.graph.initializer[0]
    kept = [(e.key, e.value) for e in tensor.external_data if e.key != "length"]
    del tensor.external_data[:]
    for key, value in kept:
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    del tensor.dims[:]
    tensor.dims.extend([2**20, 2**20])
    onnx.save_model(model, str(path))
    assert "is outside" in read_model(path).unreadable


def test_external_location_with_nul_byte(tmp_path):
    path = factories.mlp(tmp_path / "ext.onnx", sizes=(4, 4), external=True)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "ext.onnx.data\x00evil"
    onnx.save_model(model, str(path))
    assert "control characters" in read_model(path).unreadable


def test_weights_in_a_graph_attribute_of_an_op_that_runs_none_are_still_counted(tmp_path):
    # Invalid (Relu has no graph attribute) but storable: what a file stores is counted, so a
    # budget cannot be dodged by hiding weights where no analysis of the running graph looks.
    from onnx import TensorProto, helper, numpy_helper

    hidden = helper.make_graph([], "hidden", [], [], initializer=[
        numpy_helper.from_array(np.ones((100, 100), np.float32), "stash")])
    relu = helper.make_node("Relu", ["x"], ["y"])
    relu.attribute.append(helper.make_attribute("body", hidden))
    graph = helper.make_graph([relu], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = tmp_path / "hidden.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert read_model(path).params == 100 * 100


# --- external data wherever the format allows a tensor ------------------------------------------

def _external_tensor(name: str, location: str, offset: int = 0, length: int = 24) -> onnx.TensorProto:
    """Three int64 values stored in an external file (what sparse indices look like)."""
    tensor = onnx.TensorProto(name=name, dims=[3], data_type=onnx.TensorProto.INT64,
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _values() -> onnx.TensorProto:
    return onnx.numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "v")


def _sparse(indices: onnx.TensorProto) -> onnx.SparseTensorProto:
    return onnx.helper.make_sparse_tensor(_values(), indices, [10])


def _place_sparse_initializer_indices(model, tensor):
    model.graph.sparse_initializer.append(_sparse(tensor))


def _place_sparse_attribute_indices(model, tensor):
    model.graph.node.append(onnx.helper.make_node("Constant", [], ["c"], sparse_value=_sparse(tensor)))


def _place_sparse_tensors_list(model, tensor):
    node = onnx.helper.make_node("Custom", ["x"], ["z"], domain="custom.ops")
    node.attribute.append(onnx.helper.make_attribute("tables", [_sparse(tensor)]))
    model.graph.node.append(node)


def _place_training_initializer(model, tensor):
    training = model.training_info.add()
    training.algorithm.name = "train"
    training.algorithm.initializer.append(tensor)


def _place_training_subgraph_constant(model, tensor):
    branch = onnx.helper.make_graph([onnx.helper.make_node("Constant", [], ["k"], value=tensor)],
                                    "branch", [], [onnx.helper.make_tensor_value_info("k", 7, [3])])
    training = model.training_info.add()
    training.initialization.CopyFrom(onnx.helper.make_graph(
        [onnx.helper.make_node("If", ["cond"], ["k"], then_branch=branch, else_branch=branch)],
        "init", [], []))


def _place_function_default(model, tensor):
    function = model.functions.add(name="f", domain="local")
    function.attribute_proto.append(onnx.helper.make_attribute("table", tensor))


PLACES = {"sparse initializer indices": _place_sparse_initializer_indices,
          "sparse attribute indices": _place_sparse_attribute_indices,
          "attribute sparse_tensors": _place_sparse_tensors_list,
          "training_info initializer": _place_training_initializer,
          "training_info subgraph": _place_training_subgraph_constant,
          "function default attribute": _place_function_default}


def _model_with_external_tensor(tmp_path, place: str, location: str, offset: int = 0) -> Path:
    path = factories.mlp(tmp_path / "m.onnx", sizes=(4, 4))
    (tmp_path / "ok.data").write_bytes(bytes(24))
    model = onnx.load(str(path))
    PLACES[place](model, _external_tensor("t", location, offset))
    onnx.save_model(model, str(path))
    return path


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("hostile, cause", [
    ("absolute", "absolute path"), ("parent", "leaves the model's directory"),
    ("symlink", "symbolic link"), ("hard link", "hard link"), ("offset", "outside"),
])
def test_external_data_is_validated_wherever_a_tensor_can_be(tmp_path, place, hostile, cause):
    secret = tmp_path.parent / f"{tmp_path.name}-secret.data"
    secret.write_bytes(bytes(24))
    locations = {"absolute": str(secret), "parent": f"../{secret.name}", "symlink": "link.data",
                 "hard link": "hard.data", "offset": "ok.data"}
    path = _model_with_external_tensor(tmp_path, place, locations[hostile],
                                       offset=10**9 if hostile == "offset" else 0)
    os.symlink(secret, tmp_path / "link.data")
    os.link(secret, tmp_path / "hard.data")
    facts = read_model(path)
    assert facts.unreadable is not None and cause in facts.unreadable, facts.unreadable


@pytest.mark.parametrize("place", PLACES)
def test_genuine_external_data_anywhere_is_measured_not_counted(tmp_path, place):
    plain = read_model(factories.mlp(tmp_path / "plain" / "m.onnx", sizes=(4, 4)))
    facts = read_model(_model_with_external_tensor(tmp_path, place, "ok.data"))
    assert facts.unreadable is None
    assert facts.external_files == ["ok.data"]
    assert facts.file_size == (tmp_path / "m.onnx").stat().st_size + 24
    values = 3 if place == "sparse initializer indices" or place == "sparse attribute indices" else 0
    assert facts.params == plain.params + values  # indices and training graphs are not weights
