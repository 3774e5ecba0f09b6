"""BG102 redundant-features, BG103 dead-weights, BG104 unfused-ops.

Each rule gets graphs that must trigger it and graphs that must not, built here, plus real
exports (scikit-learn through skl2onnx, torch.onnx) and the published models silero-vad and
magika, whose findings are explained rather than just recorded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bloatguard import config as config_module
from bloatguard.engine import measure
from bloatguard.errors import ConfigError
from bloatguard.registry import find_rule
from bloatguard.rule import RuleContext

import factories
from factories import package_file

OPSET = factories.OPSET
F32 = TensorProto.FLOAT


# --- helpers -----------------------------------------------------------------------------------

def findings(path: Path, code: str, toml: str | None = None):
    """Run one rule on a model, with an optional bloatguard.toml next to it."""
    config = config_module.Config()
    if toml is not None:
        (path.parent / "bloatguard.toml").write_text(toml)
        config = config_module.load(path.parent / "bloatguard.toml")
    facts = measure(path, config)
    ctx = RuleContext(facts=facts, base=None, settings=config.resolve(path), config=config)
    try:
        return list(find_rule(code).check(ctx))
    finally:
        ctx.close()


def features(found) -> list[tuple[str, int | None]]:
    [finding] = [f for f in found if "features" in f.details]
    return [(f["input"], f["index"]) for f in finding.details["features"]]


def by_fix(found) -> dict[str, object]:
    return {f.fix.kind: f for f in found}


tensor_info = factories.info
model = factories.build
const, init = factories.const, factories.init


def weights(rows: int, cols: int, zero_rows=(), seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    w[list(zero_rows)] = 0
    return w



# --- BG102 redundant-features: graph analysis --------------------------------------------------

def dense(path: Path, w: np.ndarray, *, op="MatMul", trans_b=False, weights_as="initializer",
          prelude=()) -> Path:
    """x[batch, F] -> (prelude) -> MatMul/Gemm with w -> y."""
    b = w.T.copy() if trans_b else w
    nodes, inits = list(prelude), []
    if weights_as == "constant":
        nodes.append(const("w", b))
    else:
        inits.append(init("w", b))
    source = nodes[-1].output[0] if prelude else "x"
    if op == "Gemm":
        nodes.append(helper.make_node("Gemm", [source, "w"], ["y"], name="gemm", transB=int(trans_b)))
    else:
        nodes.append(helper.make_node("MatMul", [source, "w"], ["y"], name="mm"))
    return model(nodes, [tensor_info("x", ["batch", w.shape[0]])],
                 [tensor_info("y", ["batch", w.shape[1]])], inits, path)


@pytest.mark.parametrize("op, trans_b, weights_as", [
    ("MatMul", False, "initializer"), ("MatMul", False, "constant"),
    ("Gemm", False, "initializer"), ("Gemm", True, "initializer"), ("Gemm", True, "constant")])
def test_zero_weight_rows_of_the_first_layer(tmp_path, op, trans_b, weights_as):
    path = dense(tmp_path / "m.onnx", weights(6, 3, zero_rows=(1, 4)), op=op, trans_b=trans_b,
                 weights_as=weights_as)
    [finding] = findings(path, "BG102")
    assert features([finding]) == [("x", 1), ("x", 4)]
    assert finding.message.startswith("2 of 6 features of input 'x' cannot affect the output: 1, 4")
    assert finding.fix.kind == "remove-features" and finding.fix.safe is False
    assert finding.severity.value == "warning"


def test_tolerance_option_counts_tiny_weights_as_zero(tmp_path):
    w = weights(4, 2, zero_rows=(2,))
    w[0] = 1e-9
    path = dense(tmp_path / "m.onnx", w)
    assert features(findings(path, "BG102")) == [("x", 2)]
    toml = "[rules.redundant-features]\ntolerance = 1e-6\n"
    assert features(findings(path, "BG102", toml)) == [("x", 0), ("x", 2)]


def test_features_followed_through_cast_flatten_reshape_and_scaling(tmp_path):
    prelude = [helper.make_node("Cast", ["x"], ["c"], to=F32),
               helper.make_node("Flatten", ["c"], ["f"], axis=1),
               const("mean", np.zeros(5, np.float32)),
               helper.make_node("Sub", ["f", "mean"], ["centered"]),
               const("shape", np.array([-1, 5], np.int64)),
               helper.make_node("Reshape", ["centered", "shape"], ["r"])]
    path = dense(tmp_path / "m.onnx", weights(5, 2, zero_rows=(3,)), prelude=prelude)
    assert features(findings(path, "BG102")) == [("x", 3)]


def test_nothing_reported_when_a_feature_has_another_reader(tmp_path):
    # Feature 1 has zero weights in the MatMul, but x is also summed into the output: it matters.
    w = weights(3, 2, zero_rows=(1,))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=1),
             helper.make_node("Add", ["h", "s"], ["y"])]
    path = model(nodes, [tensor_info("x", ["batch", 3])], [tensor_info("y", ["batch", 2])],
                 [init("w", w)], tmp_path / "m.onnx", opsets=[helper.make_opsetid("", 13)])
    assert findings(path, "BG102") == []
    # A dense first layer is silent too.
    assert findings(dense(tmp_path / "dense.onnx", weights(3, 2)), "BG102") == []


def test_every_consumer_must_ignore_the_feature(tmp_path):
    # Two heads read x: head A ignores features 0 and 2, head B only feature 2.
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["a"]), helper.make_node("MatMul", ["x", "wb"], ["b"])]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("a", [1, 2]), tensor_info("b", [1, 2])],
                 [init("wa", weights(4, 2, zero_rows=(0, 2))), init("wb", weights(4, 2, zero_rows=(2,)))],
                 tmp_path / "m.onnx")
    assert features(findings(path, "BG102")) == [("x", 2)]


def test_zero_input_channels_of_a_conv(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 3, 1, 1)).astype(np.float32)
    w[:, 1] = 0
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv1x1")]
    path = model(nodes, [tensor_info("x", [1, 3, 8, 8])], [tensor_info("y", [1, 4, 8, 8])],
                 [init("w", w)], tmp_path / "m.onnx")
    [finding] = findings(path, "BG102")
    assert features([finding]) == [("x", 1)]
    assert finding.details["features"][0]["axis"] == 1
    assert "1 of 3 features" in finding.message


def if_inputs_model(path: Path) -> Path:
    """`x` is read only inside the If branches (an outer-scope reference); `unused` by nothing;
    `dead_in` only by a node whose result reaches no output."""
    def branch(name):
        return helper.make_graph([helper.make_node("Relu", ["x"], [f"{name}_y"])], name, [],
                                 [tensor_info(f"{name}_y", [1, 4])])

    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else")),
             helper.make_node("Neg", ["dead_in"], ["nobody"])]
    return model(nodes, [tensor_info("x", [1, 4]), tensor_info("flag", [], TensorProto.INT64),
                         tensor_info("unused", [1, 7]), tensor_info("dead_in", [1, 2])],
                 [tensor_info("y", [1, 4])], [init("zero", np.array(0, np.int64))], path)


def test_unused_inputs_but_not_inputs_read_inside_subgraphs(tmp_path):
    [finding] = findings(if_inputs_model(tmp_path / "m.onnx"), "BG102")
    assert features([finding]) == [("unused", None), ("dead_in", None)]
    assert "input 'unused' is never used" in finding.message
    assert "'x'" not in finding.message and "'flag'" not in finding.message


def test_linear_svm_and_tree_operators(tmp_path):
    ml = [*OPSET, helper.make_opsetid("ai.onnx.ml", 3)]
    regressor = helper.make_node(
        "LinearRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="lin", targets=2,
        coefficients=[1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 0.5, 0.0], intercepts=[0.0, 1.0])
    path = model([regressor], [tensor_info("x", [None, 4])], [tensor_info("y", [None, 2])],
                 path=tmp_path / "lin.onnx", opsets=ml)
    assert features(findings(path, "BG102")) == [("x", 1), ("x", 3)]

    svm = helper.make_node(
        "SVMRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="svr", kernel_type="LINEAR",
        n_supports=2, support_vectors=[1.0, 0.0, 2.0, 3.0, 0.0, 1.0], coefficients=[0.5, -0.5], rho=[0.0])
    path = model([svm], [tensor_info("x", [None, 3])], [tensor_info("y", [None, 1])],
                 path=tmp_path / "svr.onnx", opsets=ml)
    assert features(findings(path, "BG102")) == [("x", 1)]
    rbf = helper.make_node(
        "SVMRegressor", ["x"], ["y"], domain="ai.onnx.ml", kernel_type="RBF",
        n_supports=2, support_vectors=[1.0, 0.0, 2.0, 0.0, 1.0, 0.0], coefficients=[0.5, -0.5], rho=[0.0])
    path = model([rbf], [tensor_info("x", [None, 3])], [tensor_info("y", [None, 1])],
                 path=tmp_path / "rbf.onnx", opsets=ml)
    assert findings(path, "BG102") == []  # an RBF kernel reads every feature through ||sv - x||

    # One tree, splitting on feature 2 then 0; the input declares 5 features, so 1, 3, 4 are unused.
    # Leaves carry feature id 0 by convention and must not count.
    tree = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", name="trees", n_targets=1,
        nodes_treeids=[0] * 5, nodes_nodeids=[0, 1, 2, 3, 4], nodes_featureids=[2, 0, 4, 4, 4],
        nodes_modes=["BRANCH_LEQ", "BRANCH_LEQ", "LEAF", "LEAF", "LEAF"],
        nodes_values=[0.5, 0.1, 0.0, 0.0, 0.0], nodes_truenodeids=[1, 3, 0, 0, 0],
        nodes_falsenodeids=[2, 4, 0, 0, 0], target_treeids=[0, 0, 0], target_nodeids=[2, 3, 4],
        target_ids=[0, 0, 0], target_weights=[1.0, 2.0, 3.0])
    path = model([tree], [tensor_info("x", [None, 5])], [tensor_info("y", [None, 1])],
                 path=tmp_path / "tree.onnx", opsets=ml)
    [finding] = findings(path, "BG102")
    assert features([finding]) == [("x", 1), ("x", 3), ("x", 4)]
    assert "3 of 5 features of input 'x' cannot affect the output" in finding.message


# --- BG102: real scikit-learn exports ----------------------------------------------------------

def skl_export(estimator, n_features: int, path: Path, ml_opset: int = 3) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    proto = to_onnx(estimator, initial_types=[("X", FloatTensorType([None, n_features]))],
                    options={id(estimator): {"zipmap": False}},
                    target_opset={"": 17, "ai.onnx.ml": ml_opset})
    path.write_bytes(proto.SerializeToString())
    return path


def tabular(seed: int = 0, n: int = 600, width: int = 12):
    """Columns 0, 3, 6 carry the signal; 1, 5, 9 are pure noise; 4 and 10 are constant."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, width)).astype(np.float32)
    X[:, 4], X[:, 10] = 3.0, -1.0
    y = (1.5 * X[:, 0] - 2 * X[:, 3] + X[:, 6] + 0.3 * rng.standard_normal(n) > 0).astype(int)
    return X, y


@pytest.mark.parametrize("solver, classes", [("liblinear", 2), ("saga", 3)])
def test_l1_logistic_regression_names_its_zero_coefficient_columns(tmp_path, solver, classes):
    from sklearn.linear_model import LogisticRegression

    X, y = tabular()
    if classes == 3:
        y = y + (X[:, 0] > 1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = LogisticRegression(penalty="l1", solver=solver, C=0.05, max_iter=5000).fit(X, y)
    zero = np.flatnonzero(np.all(clf.coef_ == 0, axis=0)).tolist()
    # The noise and constant columns are among them, and the signal columns are not.
    assert {4, 10} <= set(zero) and not {0, 3} & set(zero)
    [finding] = findings(skl_export(clf, X.shape[1], tmp_path / "lr.onnx"), "BG102")
    assert features([finding]) == [("X", i) for i in zero]
    assert finding.message.startswith(f"{len(zero)} of 12 features of input 'X' cannot affect")
    assert "zero coefficients in LinearClassifier" in finding.message


@pytest.mark.parametrize("ml_opset", [3, 5])
def test_random_forest_lists_columns_no_tree_splits_on(tmp_path, ml_opset):
    from sklearn.ensemble import RandomForestClassifier

    X, y = tabular(seed=1)
    forest = RandomForestClassifier(n_estimators=8, max_depth=5, random_state=0).fit(X, y)
    split_on = set()
    for tree in forest.estimators_:
        split_on |= set(tree.tree_.feature[tree.tree_.feature >= 0].tolist())
    unused = sorted(set(range(X.shape[1])) - split_on)
    assert {4, 10} <= set(unused)  # constant columns can never be split on
    assert unused == np.flatnonzero(forest.feature_importances_ == 0).tolist()
    try:
        path = skl_export(forest, X.shape[1], tmp_path / "rf.onnx", ml_opset)
    except Exception as exc:  # older skl2onnx cannot emit ai.onnx.ml 5 (TreeEnsemble)
        pytest.skip(f"skl2onnx cannot export ai.onnx.ml {ml_opset}: {exc}")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops & {"TreeEnsembleClassifier", "TreeEnsemble"}
    assert features(findings(path, "BG102")) == [("X", i) for i in unused]


# --- BG102: sample inputs ----------------------------------------------------------------------

def ignored_feature_model(path: Path) -> Path:
    """x[batch, 4] -> MatMul(w1) -> Relu -> MatMul(w2) -> y. Feature 3 has nonzero first-layer
    weights, but only into hidden unit 2, which w2 multiplies by zero: statically invisible,
    but shuffling feature 3 never moves the output."""
    w1 = np.array([[1, 0, 0.5], [0, 1, -0.5], [1, 1, 0], [0, 0, 2]], np.float32)
    w2 = np.array([[1.0], [-1.0], [0.0]], np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    return model(nodes, [tensor_info("x", ["batch", 4])], [tensor_info("y", ["batch", 1])],
                 [init("w1", w1), init("w2", w2)], path)


def test_samples_constant_duplicate_correlated_and_permutation(tmp_path):
    path = dense(tmp_path / "m.onnx", weights(6, 2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 6)).astype(np.float32)  # 40 samples of batch 1
    x[..., 2] = 7.0  # constant
    x[..., 4] = x[..., 1]  # exact duplicate of column 1
    x[..., 5] = 2 * x[..., 0] + 1e-5 * rng.standard_normal((40, 1))  # correlated with column 0
    np.savez(tmp_path / "samples.npz", x=x)
    [finding] = findings(path, "BG102", '[samples]\n"m.onnx" = "samples.npz"\n')
    assert features([finding]) == [("x", 2), ("x", 4), ("x", 5)]
    reasons = {f["index"]: f["reasons"][0] for f in finding.details["features"]}
    assert reasons[2].startswith("constant (7)") and reasons[4].startswith("duplicates column 1")
    assert reasons[5].startswith("correlated with column 0 (r=1.0000)")
    assert "3 of 6 features of input 'x' are redundant" in finding.message
    # With a stricter threshold, column 5 is no longer "correlated".
    toml = '[samples]\n"m.onnx" = "samples.npz"\n[rules.redundant-features]\ncorrelation = 1.0\n'
    assert ("x", 5) not in features(findings(path, "BG102", toml))


def test_permutation_test_finds_a_feature_the_model_ignores(tmp_path):
    path = ignored_feature_model(tmp_path / "m.onnx")
    assert findings(path, "BG102") == []  # every first-layer row is nonzero
    x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
    np.savez(tmp_path / "samples.npz", x=x)  # one batch of 64 rows, input rank: taken as 1 sample
    [finding] = findings(path, "BG102", '[samples]\n"m.onnx" = "samples.npz"\n')
    assert features([finding]) == [("x", 3)]
    [feature] = finding.details["features"]
    assert feature["reasons"] == ["shuffling it in samples.npz moves the outputs by less than 1e-06"]
    assert feature["permutation_change"] == 0.0
    assert finding.message == ("1 of 4 features of input 'x' are redundant: 3 (shuffling it in "
                               "samples.npz moves the outputs by less than 1e-06)")


def test_csv_samples_use_the_header_for_names(tmp_path):
    path = ignored_feature_model(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    rows = ["age,income,height,zip"] + [f"{a:.4f},{b:.4f},1.5,{c:.4f}"
                                        for a, b, c in rng.standard_normal((30, 3))]
    (tmp_path / "samples.csv").write_text("\n".join(rows) + "\n")
    [finding] = findings(path, "BG102", '[samples]\n"m.onnx" = "samples.csv"\n')
    named = {f["index"]: f["name"] for f in finding.details["features"]}
    assert named == {2: "height", 3: "zip"}  # height is constant; zip is ignored by the model
    assert "height" in finding.message and "zip" in finding.message


def test_integer_inputs_have_positions_not_feature_columns(tmp_path):
    # Token ids or bytes [batch, n]: a column is a position, so no column statistics and no
    # permutation runs (which would also be one model run per position).
    nodes = [helper.make_node("Cast", ["ids"], ["f"], to=F32), helper.make_node("ReduceSum", ["f"], ["y"])]
    path = model(nodes, [tensor_info("ids", [None, 8], TensorProto.INT64)], [tensor_info("y", [])],
                 path=tmp_path / "m.onnx", opsets=[helper.make_opsetid("", 13)])
    ids = np.zeros((10, 1, 8), np.int64)
    ids[:, 0, :3] = np.arange(30).reshape(10, 3)  # the last 5 positions are always padding
    np.savez(tmp_path / "samples.npz", ids=ids)
    assert findings(path, "BG102", '[samples]\n"m.onnx" = "samples.npz"\n') == []


@pytest.mark.parametrize("content, message", [
    ({"y": np.zeros((3, 1, 4), np.float32)}, "match no model input"),
    ({"x": np.zeros((3, 1, 5), np.float32)}, "dimension 1 is 5, the input needs 4"),
    ({"x": np.zeros((3, 2, 2, 4), np.float32)}, "does not fit input shape"),
])
def test_bad_samples_files_are_errors_naming_the_file(tmp_path, content, message):
    from bloatguard import samples

    path = ignored_feature_model(tmp_path / "m.onnx")
    np.savez(tmp_path / "samples.npz", **content)
    with pytest.raises(ConfigError, match=message) as error:
        samples.load(tmp_path / "samples.npz", measure(path, config_module.Config()).inputs)
    assert "samples.npz" in str(error.value)
    # The rule reports it as a warning, and its graph checks still run.
    path = dense(tmp_path / "d.onnx", weights(4, 2, zero_rows=(1,)))
    np.savez(tmp_path / "samples.npz", **content)
    found = findings(path, "BG102", '[samples]\n"d.onnx" = "samples.npz"\n')
    assert features(found) == [("x", 1)]
    [problem] = [f for f in found if f.fix is None]
    assert problem.severity.value == "warning" and message in problem.message
    assert problem.message.startswith("sample-based checks skipped: ") and "samples.npz" in problem.message


def test_static_check_does_not_import_onnxruntime(tmp_path):
    import subprocess
    import sys

    path = dense(tmp_path / "m.onnx", weights(4, 2, zero_rows=(0,)))
    code = ("import sys; from pathlib import Path; from bloatguard.cli import main; "
            f"main(['check', {str(path)!r}, '--select', 'BG102,BG103,BG104']); "
            "print('onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


# --- BG103 dead-weights ------------------------------------------------------------------------

def messy_model(path: Path) -> Path:
    """Everything BG103 looks for: an unused initializer (1 KB), a dead chain (Constant ->
    Mul -> Add) whose results reach nothing, a weight only the dead chain reads, and the same
    32x32 weight stored twice, once as an initializer and once as a Constant."""
    from fix_models import messy  # the model `fix` removes all of this from

    return messy(path)


def test_dead_weights_reports_unused_dead_and_duplicate_bytes(tmp_path):
    found = findings(messy_model(tmp_path / "m.onnx"), "BG103")
    unused, dead, duplicates = found
    assert unused.details["initializers"] == [{"name": "orphan", "where": "initializer", "bytes": 1024}]
    assert unused.message == "1 initializer(s) are never used (1.02 KB): orphan"
    assert unused.fix.kind == "remove-dead-weights" and unused.fix.safe
    assert dead.details["node_count"] == 3  # Constant, Mul, Add
    assert dead.details["wasted_bytes"] == 32 * 4 + 32 * 4  # dead_scale + dead_bias
    assert sorted(dead.details["weights"]) == ["Constant dead_scale", "initializer:dead_bias"]
    assert duplicates.details["wasted_bytes"] == 32 * 32 * 4
    assert duplicates.details["duplicates"][0]["tensors"] == ["initializer:w", "constant:w_copy"]
    assert duplicates.fix.kind == "deduplicate-weights" and duplicates.fix.safe
    # Below min-bytes, duplicates are not worth a finding.
    found = findings(tmp_path / "m.onnx", "BG103", '[rules.dead-weights]\nmin-bytes = "8 KB"\n')
    assert [f.fix.kind for f in found] == ["remove-dead-weights"] * 2


def test_weights_read_only_inside_subgraphs_and_functions_are_used(tmp_path):
    # The main graph's initializer and Constant are read only by the If branches.
    w = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)

    def branch(name, weight):
        return helper.make_graph([helper.make_node("MatMul", ["x", weight], [f"{name}_y"])], name, [],
                                 [tensor_info(f"{name}_y", [1, 4])])

    nodes = [const("w_const", w * 2), helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "w_init"),
                              else_branch=branch("else", "w_const"))]
    path = model(nodes, [tensor_info("x", [1, 4]), tensor_info("flag", [], TensorProto.INT64)],
                 [tensor_info("y", [1, 4])], [init("w_init", w), init("zero", np.array(0, np.int64))],
                 tmp_path / "if.onnx")
    assert findings(path, "BG103") == []
    assert findings(factories.if_model(tmp_path / "if2.onnx"), "BG103") == []
    assert findings(factories.function_model(tmp_path / "fn.onnx"), "BG103") == []
    assert findings(factories.mlp(tmp_path / "mlp.onnx", weights_as="constant"), "BG103") == []


def test_dead_nodes_inside_an_if_branch(tmp_path):
    then = helper.make_graph(
        [const("t_w", np.ones((4, 4), np.float32)), helper.make_node("MatMul", ["x", "t_w"], ["t_y"]),
         const("t_unused", np.ones((64,), np.float32)), helper.make_node("Relu", ["t_unused"], ["t_dead"])],
        "then", [], [tensor_info("t_y", [1, 4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e_y"])], "else", [],
                              [tensor_info("e_y", [1, 4])])
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    path = model(nodes, [tensor_info("x", [1, 4]), tensor_info("flag", [], TensorProto.INT64)],
                 [tensor_info("y", [1, 4])], [init("zero", np.array(0, np.int64))], tmp_path / "m.onnx")
    [dead] = findings(path, "BG103")
    assert dead.details["node_count"] == 2 and dead.details["wasted_bytes"] == 256
    assert all("then_branch" in label for label in dead.details["nodes"])


def test_uncalled_function_is_dead(tmp_path):
    body = [const("fw", np.eye(4, dtype=np.float32)), helper.make_node("MatMul", ["a", "fw"], ["b"])]
    function = helper.make_function("local", "Unused", ["a"], ["b"], body, opset_imports=OPSET)
    path = model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x", [1, 4])],
                 [tensor_info("y", [1, 4])], path=tmp_path / "m.onnx",
                 opsets=[*OPSET, helper.make_opsetid("local", 1)], functions=[function])
    [dead] = findings(path, "BG103")
    assert dead.details["node_count"] == 2 and dead.details["wasted_bytes"] == 64


# --- BG104 unfused-ops -------------------------------------------------------------------------

def conv_bn(path: Path, *, weights_as="initializer", conv_output_also_used=False,
            stats_input=False) -> Path:
    """x -> Conv(8 channels, no bias) -> BatchNormalization -> y."""
    rng = np.random.default_rng(0)
    vector = rng.standard_normal
    params = {"w": vector((8, 3, 3, 3)), "scale": rng.random(8) + 0.5, "bias": vector(8),
              "mean": vector(8), "var": rng.random(8) + 0.5}
    params = {name: value.astype(np.float32) for name, value in params.items()}
    inputs = [tensor_info("x", [1, 3, 8, 8])]
    if stats_input:
        params.pop("mean")
        inputs.append(tensor_info("mean", [8]))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], name="bn")]
    outputs = [tensor_info("y", [1, 8, 8, 8])]
    if conv_output_also_used:
        outputs.append(tensor_info("c", [1, 8, 8, 8]))
    if weights_as == "constant":
        return model([const(k, v) for k, v in params.items()] + nodes, inputs, outputs, path=path)
    return model(nodes, inputs, outputs, [init(k, v) for k, v in params.items()], path)


@pytest.mark.parametrize("weights_as", ["initializer", "constant"])
def test_batchnorm_after_conv_is_foldable(tmp_path, weights_as):
    [finding] = findings(conv_bn(tmp_path / "m.onnx", weights_as=weights_as), "BG104")
    assert finding.fix.kind == "fold-batchnorm" and finding.fix.safe
    # Four vectors of 8 go, the bias-less Conv gains one: 24 parameters, 96 bytes.
    assert finding.details["params_saved"] == 24 and finding.details["bytes_saved"] == 96
    assert finding.details["batchnorm"][0]["into"] == "Conv conv"
    assert finding.message.startswith("1 BatchNormalization node(s) could be folded")


def test_batchnorm_that_cannot_be_folded(tmp_path):
    assert findings(conv_bn(tmp_path / "a.onnx", conv_output_also_used=True), "BG104") == []
    assert findings(conv_bn(tmp_path / "b.onnx", stats_input=True), "BG104") == []
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"])]
    path = model(nodes, [tensor_info("x", [1, 4, 2, 2])], [tensor_info("y", [1, 4, 2, 2])],
                 [init(n, np.ones(4, np.float32)) for n in "sbmv"], tmp_path / "c.onnx")
    assert findings(path, "BG104") == []


def test_batchnorm_inside_an_if_branch_with_outer_weights(tmp_path):
    rng = np.random.default_rng(0)
    then = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["t_y"], name="bn_in_if")],
        "then", [], [tensor_info("t_y", [1, 4, 2, 2])])
    other = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["e_y"])], "else", [],
                              [tensor_info("e_y", [1, 4, 2, 2])])
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    inits = [init("w", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)),
             init("zero", np.array(0, np.int64))] + [init(n, np.ones(4, np.float32)) for n in "sbmv"]
    path = model(nodes, [tensor_info("x", [1, 3, 2, 2]), tensor_info("flag", [], TensorProto.INT64)],
                 [tensor_info("y", [1, 4, 2, 2])], inits, tmp_path / "m.onnx")
    [finding] = findings(path, "BG104")
    assert finding.fix.kind == "fold-batchnorm"
    assert "then_branch" in finding.details["batchnorm"][0]["node"]


def test_dropout_and_identity(tmp_path):
    nodes = [helper.make_node("Dropout", ["x"], ["d"], name="drop"),
             helper.make_node("Identity", ["d"], ["i"], name="copy"),
             helper.make_node("Relu", ["i"], ["y"]),
             # Needed: passes a graph input through to a second output.
             helper.make_node("Identity", ["x"], ["x_out"], name="passthrough")]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("y", [1, 4]), tensor_info("x_out", [1, 4])],
                 path=tmp_path / "m.onnx")
    [finding] = findings(path, "BG104")
    assert finding.fix.kind == "strip-dropout-identity" and finding.fix.safe
    assert finding.details["counts"] == {"Dropout": 1, "Identity": 1}
    assert [n["node"] for n in finding.details["nodes"]] == ["Dropout drop", "Identity copy"]
    assert finding.message.startswith("1 Dropout and 1 Identity node(s) only copy their input")


def test_dead_code_is_left_to_dead_weights(tmp_path):
    # An Identity and a foldable Transpose whose results reach no output: BG103 reports them as
    # dead; BG104 does not ask to optimise code that should simply be deleted.
    nodes = [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Identity", ["x"], ["unused"]),
             helper.make_node("Transpose", ["w"], ["w_t"])]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("y", [1, 4])],
                 [init("w", np.ones((4, 4), np.float32))], tmp_path / "m.onnx")
    assert findings(path, "BG104") == []
    [dead] = findings(path, "BG103")
    assert dead.details["node_count"] == 2 and dead.details["wasted_bytes"] == 64


def test_active_dropout_means_training_mode(tmp_path):
    nodes = [const("ratio", np.array(0.5, np.float32)), const("train", np.array(True)),
             helper.make_node("Dropout", ["x", "ratio", "train"], ["y"], name="drop")]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("y", [1, 4])], path=tmp_path / "m.onnx")
    [finding] = findings(path, "BG104")
    assert finding.fix.kind == "re-export-eval" and not finding.fix.safe
    assert "training mode" in finding.message


def test_constant_subgraphs(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["w_t"], ["w"], name="transpose_w"),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             # Shape plumbing on small int constants: ignored unless fold-shape-ops is on.
             helper.make_node("Concat", ["one", "minus_one"], ["shape"], axis=0, name="concat_shape"),
             helper.make_node("Reshape", ["h", "shape"], ["r"]),
             # fp16 storage cast up at run time: compression, not waste.
             helper.make_node("Cast", ["b16"], ["b"], to=F32, name="cast_up"),
             helper.make_node("Add", ["r", "b"], ["y"])]
    inits = [init("w_t", w.T.copy()), init("one", np.array([1], np.int64)),
             init("minus_one", np.array([-1], np.int64)), init("b16", np.ones(4, np.float16))]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("y", [1, 8])], inits, tmp_path / "m.onnx")
    [finding] = findings(path, "BG104")
    assert finding.fix.kind == "fold-constants" and finding.fix.safe
    assert [n["node"] for n in finding.details["nodes"]] == ["Transpose transpose_w"]
    assert finding.details["weight_bytes"] == 4 * 8 * 4
    found = findings(path, "BG104", "[rules.unfused-ops]\nfold-shape-ops = true\n")
    assert {n["node"] for n in found[0].details["nodes"]} == {"Transpose transpose_w", "Concat concat_shape"}
    # A clean graph has nothing to fold.
    assert findings(factories.mlp(tmp_path / "mlp.onnx"), "BG104") == []
    assert findings(factories.mlp(tmp_path / "mlpc.onnx", weights_as="constant"), "BG104") == []


def test_quantized_weights_are_not_foldable_constants(tmp_path):
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale", "zp"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"])]
    inits = [init("wq", np.ones((4, 4), np.int8)), init("scale", np.array(0.1, np.float32)),
             init("zp", np.array(0, np.int8))]
    path = model(nodes, [tensor_info("x", [1, 4])], [tensor_info("y", [1, 4])], inits, tmp_path / "q.onnx")
    assert findings(path, "BG104") == []


# --- BG104: real torch exports -----------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_net():
    torch = pytest.importorskip("torch")
    from fix_models import torch_bn_net  # Conv+BN2d, Linear+BN1d, Dropout; trained-looking stats

    return torch, torch_bn_net()


def torch_export(torch_net, path: Path, **kwargs) -> Path:
    return factories.torch_export(torch_net[1], path, **kwargs)


def test_torch_export_leaves_batchnorm_unfused(tmp_path, torch_net):
    # What actually stays: the default eval export folds Conv+BatchNorm2d but keeps the
    # BatchNorm1d after the Linear (Gemm); do_constant_folding=False keeps both.
    default = by_fix(findings(torch_export(torch_net, tmp_path / "default.onnx"), "BG104"))
    assert list(default) == ["fold-batchnorm"]
    assert [bn["into"].split()[0] for bn in default["fold-batchnorm"].details["batchnorm"]] == ["Gemm"]
    assert default["fold-batchnorm"].details["params_saved"] == 4 * 4

    path = torch_export(torch_net, tmp_path / "nofold.onnx", do_constant_folding=False)
    unfolded = by_fix(findings(path, "BG104"))
    batchnorms = unfolded["fold-batchnorm"].details["batchnorm"]
    assert sorted(bn["into"].split()[0] for bn in batchnorms) == ["Conv", "Gemm"]
    assert unfolded["fold-batchnorm"].details["params_saved"] == 4 * 8 + 4 * 4


def test_torch_training_export_is_reported(tmp_path, torch_net):
    torch, _ = torch_net
    path = torch_export(torch_net, tmp_path / "train.onnx", training=torch.onnx.TrainingMode.TRAINING)
    found = by_fix(findings(path, "BG104"))
    # Training-mode BatchNorm uses batch statistics: folding it would change the outputs, so it
    # is reported as a training export, not as a safe fold.
    assert "fold-batchnorm" not in found
    training = found["re-export-eval"]
    assert sorted(label.split()[0] for label in training.details["nodes"]) == [
        "BatchNormalization", "BatchNormalization", "Dropout"]


# --- published models --------------------------------------------------------------------------

def test_silero_vad(tmp_path):
    path = package_file("silero_vad", "data", "silero_vad.onnx")
    # BG102: input, state and sr are all read (sr decides the If branch; input and state are
    # read only from inside the branches): nothing is redundant.
    assert findings(path, "BG102") == []
    # BG103: silero keeps every weight as a Constant node inside the If branches, and 14 of those
    # Constants are read only from nested If bodies (outer-scope references); none is unused,
    # no node is dead, and the only repeated tensors are tiny int64 shape constants below
    # min-bytes (the 16 kHz and 8 kHz branches hold different weights).
    assert findings(path, "BG103") == []
    found = by_fix(findings(path, "BG104"))
    assert set(found) == {"strip-dropout-identity", "fold-constants"}
    # 6 Identity nodes only rename If results (2 at the top, 2 per 16k/8k branch). The other 28
    # Identity nodes pass an outer-scope value through as a one-node If branch's output; they
    # are needed and not reported.
    identity = found["strip-dropout-identity"]
    assert identity.details["counts"] == {"Identity": 6}
    # The exporter re-orders the LSTM gates at run time: Slice/Concat/Unsqueeze of the constant
    # weight_ih/weight_hh/biases in each branch of each decoder. Folding stores them pre-ordered.
    fold = found["fold-constants"]
    assert fold.details["counts"] == {"Slice": 48, "Concat": 20, "Unsqueeze": 12}
    assert fold.details["weight_bytes"] == 2 * (2 * 512 * 128 * 4 + 2 * 512 * 4)


def test_magika(tmp_path):
    path = package_file("magika", "models", "standard_v3_3", "model.onnx")
    # A tf2onnx export with constant folding done: its 36 initializers are all read, no node is
    # dead, no tensor repeats, nothing is foldable, and no Dropout/Identity/BatchNorm is left.
    # Its single input, 2048 int32 bytes, goes through a one-hot Reshape/Equal first, which is
    # not a feature-preserving op, so no column-level claim is made.
    for code in ("BG102", "BG103", "BG104"):
        assert findings(path, code) == [], code


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_json_report_shows_features_and_fix(run_cli, tmp_path):
    path = dense(tmp_path / "model.onnx", weights(5, 2, zero_rows=(0, 3)))
    code, out, err = run_cli("check", path, "--output-format", "json", "--select", "BG102")
    assert code == 0, err  # warnings do not fail the check
    [finding] = json.loads(out)["models"][0]["findings"]
    assert finding["code"] == "BG102" and finding["rule"] == "redundant-features"
    assert finding["severity"] == "warning"
    assert [(f["input"], f["index"]) for f in finding["details"]["features"]] == [("x", 0), ("x", 3)]
    assert finding["fix"] == {"kind": "remove-features", "safe": False,
                              "features": [{"input": "x", "index": 0}, {"input": "x", "index": 3}]}


def test_cli_missing_samples_file_is_a_warning_naming_it(run_cli, tmp_path):
    path = dense(tmp_path / "model.onnx", weights(5, 2))
    (tmp_path / "bloatguard.toml").write_text('[samples]\n"model.onnx" = "missing.npz"\n')
    code, out, err = run_cli("check", path, "--config", tmp_path / "bloatguard.toml",
                             "--output-format", "json", "--select", "BG102")
    assert code == 0, err
    [finding] = json.loads(out)["models"][0]["findings"]
    assert finding["severity"] == "warning" and finding["fix"] is None
    assert "missing.npz: samples file not found" in finding["message"]


def test_explain_prints_the_docs(run_cli):
    for code in ("BG102", "BG103", "BG104"):
        status, out, _ = run_cli("explain", code)
        assert status == 0 and "## Fix safety" in out
