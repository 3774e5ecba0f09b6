"""BG107 efficient-architecture and the `factorize-lowrank` fix, on models of known structure:
a weight of exact rank 8, full-rank weights, a dense 3x3 conv next to its depthwise-separable
counterpart, and a MiniLM-style encoder whose vocabulary table dominates."""

from __future__ import annotations

import json
from pathlib import Path

import arch_models
import numpy as np
import onnx
import pytest
from test_hygiene_quant_dtypes_prune import only, run_rule

pytestmark = pytest.mark.usefixtures("debug_mode")


def run_with_node_macs(path: Path, code: str = "BG107", **options):
    """run_rule, with the model's layers and their MACs in the facts, as the engine keeps them
    for --base and --staged (MacsBatch(layers=True))."""
    from bloatguard.config import Config
    from bloatguard.engine import MacsBatch, apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    rule = find_rule(code)
    parsed = {key.replace("_", "-"): rule.options[key.replace("_", "-")].parse(value)
              for key, value in options.items()}
    config = Config(rules={rule.name: parsed})
    batch = MacsBatch(layers=True)
    facts = measure(path, config, macs=batch)
    batch.run()
    assert facts.layers, "the engine kept no layers"
    result = ModelResult(path=str(path), facts=facts)
    apply_rules(result, path, config, [rule])
    return result.findings


# --- the rule ----------------------------------------------------------------------------------

def test_a_rank_8_weight_is_reported_at_rank_8(tmp_path):
    path = arch_models.matmul(tmp_path / "low.onnx", arch_models.low_rank(8))
    finding = only(run_with_node_macs(path), "factorize-lowrank")
    [layer] = finding.details["layers"]
    assert layer["suggestion"] == "low-rank"
    assert (layer["name"], layer["op"], layer["rank"], layer["full_rank"]) == ("proj", "MatMul", 8, 256)
    assert (layer["params_before"], layer["params_after"]) == (65536, 8 * 512)
    # One row of x per inference ([batch, 256] with batch taken as 1): MACs = weight elements.
    assert (layer["macs_before"], layer["macs_after"]) == (65536, 4096)
    assert finding.fix.details["weights"] == [{"name": "w", "where": "initializer", "rank": 8,
                                               "op": "MatMul"}]
    assert finding.fix.details["params_saved"] == 65536 - 4096
    assert "proj (MatMul 256x256, 100% of the MACs): rank 8 of 256 keeps 99% of the energy" in finding.message
    assert "(16.0x fewer, MACs 65.5K -> 4.1K)" in finding.message


def test_the_energy_option_sets_the_rank(tmp_path):
    # Rank 8 plus a rank-2 component 100x weaker: 99.99% of the energy needs all 10.
    rng = np.random.default_rng(3)
    weight = arch_models.low_rank(8, noise=0) + 0.01 * arch_models.low_rank(2, noise=0, seed=5)
    weight += 1e-7 * rng.standard_normal(weight.shape).astype(np.float32)
    path = arch_models.matmul(tmp_path / "low.onnx", weight)
    assert only(run_rule(path, "BG107")).details["layers"][0]["rank"] == 8
    assert only(run_rule(path, "BG107", energy="99.9999%")).details["layers"][0]["rank"] == 10


@pytest.mark.parametrize("shape", [(256, 256), (512, 128)])
def test_a_full_rank_random_weight_is_not_flagged(tmp_path, shape):
    weight = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert run_rule(arch_models.matmul(tmp_path / "full.onnx", weight), "BG107") == []


def test_a_gemm_with_transposed_weight_is_measured_the_same(tmp_path):
    path = arch_models.matmul(tmp_path / "gemm.onnx", arch_models.low_rank(8, 384, 256).T.copy(),
                              gemm_trans_b=True)
    [layer] = only(run_rule(path, "BG107"), "factorize-lowrank").details["layers"]
    assert (layer["op"], layer["rank"], layer["params_after"]) == ("Gemm", 8, 8 * (384 + 256))


def test_a_dense_conv_is_flagged_and_its_separable_twin_is_not(tmp_path):
    dense = run_with_node_macs(arch_models.dense_conv(tmp_path / "dense.onnx"))
    separable = run_with_node_macs(arch_models.separable_block(tmp_path / "separable.onnx"))
    assert separable == []
    finding = only(dense)
    assert finding.fix is None  # an architecture change: retraining, no fix
    [layer] = finding.details["layers"]
    cout = cin = 128
    positions = 32 * 32
    before = positions * cout * cin * 9
    assert layer["suggestion"] == "depthwise-separable"
    assert (layer["kernel"], layer["in_channels"], layer["out_channels"]) == ([3, 3], cin, cout)
    assert (layer["params_before"], layer["params_after"]) == (cout * cin * 9, cin * 9 + cin * cout)
    assert layer["macs_before"] == before == 150_994_944
    # The formula: 1/Cout + 1/k^2 of the MACs, which is the MACs of the depthwise-separable pair.
    assert layer["macs_after"] == round(before * (1 / cout + 1 / 9)) == positions * (cin * 9 + cin * cout)
    assert layer["macs_ratio"] == round(1 / 128 + 1 / 9, 6)
    assert ("conv (Conv 3x3, 128->128 channels, 100% of the params): depthwise-separable cuts its "
            "MACs 8.4x (151M -> 18M) and its weights 147K -> 17.5K") in finding.message


def test_narrow_convs_and_small_layers_are_not_flagged(tmp_path):
    narrow = arch_models.dense_conv(tmp_path / "narrow.onnx", channels=32)
    assert run_rule(narrow, "BG107") == []
    assert run_rule(narrow, "BG107", min_channels=32) != []
    path = arch_models.matmul(tmp_path / "low.onnx", arch_models.low_rank(8))
    # The only layer holds 99.6% of the params (the bias holds the rest) but all the MACs:
    # a min-share of 100% keeps it by its MACs, which a plain check knows per layer too.
    [finding] = run_rule(path, "BG107", min_share=1.0)
    assert finding.details["layers"][0]["macs_before"] is not None


def run_configured(path: Path, toml: str):
    """BG107's findings with a bloatguard.toml next to the model (budgets, rule options)."""
    from bloatguard.config import loads
    from bloatguard.engine import apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    config = loads(toml, path.parent / "bloatguard.toml")
    result = ModelResult(path=str(path), facts=measure(path, config))
    apply_rules(result, path, config, [find_rule("BG107")])
    return result.findings


def test_weights_above_the_svd_cap_are_skipped_with_a_note(tmp_path):
    path = arch_models.matmul(tmp_path / "low.onnx", arch_models.low_rank(8))
    assert run_rule(path, "BG107", max_svd_elements=65535) == []
    # A dominant table above the cap is still reported, by its shape, with the note.
    path = arch_models.encoder(tmp_path / "enc.onnx", vocab=4000, width=64, layers=4, ffn=256,
                               heads=4, tokens=16)
    finding = only(run_rule(path, "BG107", max_svd_elements="100K"))
    [layer] = finding.details["layers"]
    assert (layer["suggestion"], layer["rank"], layer["full_rank"]) == ("factorized-embedding", None, None)
    assert finding.details["notes"] == [
        "embeddings.word_embeddings.weight (4000x64, 256K elements) was not decomposed: above "
        "max-svd-elements (100K)"]
    assert "the vocabulary table dominates the model and was not decomposed (above max-svd-elements)" \
        in finding.message


def test_a_dominant_embedding_table_is_reported(tmp_path):
    path = arch_models.encoder(tmp_path / "enc.onnx", vocab=4000, width=64, layers=4, ffn=256,
                               heads=4, tokens=16)
    finding = only(run_rule(path, "BG107"))
    [layer] = finding.details["layers"]
    assert layer["name"] == "/embeddings/word_embeddings/Gather"
    assert (layer["op"], layer["suggestion"], layer["shape"]) == ("Gather", "factorized-embedding", [4000, 64])
    assert (layer["params_before"], layer["embedding_width"]) == (256_000, 16)
    assert layer["params_after"] == 4000 * 16 + 16 * 64
    assert (layer["rank"], layer["full_rank"]) == (64, 64)  # random: no low rank
    assert layer["macs_before"] is None and layer["macs_after"] is None  # a lookup
    assert finding.details["layers"][0]["share"] == round(256_000 / arch_models.encoder_params(
        4000, 64, 4, 256), 4)
    # Below the share it takes to dominate, nothing.
    assert run_rule(path, "BG107", embedding_share="60%") == []


def test_safetensors_weights_are_judged_by_their_shapes(tmp_path):
    """The rule reads the neutral weight view: a safetensors conv [out, in, kh, kw] is judged
    like the ONNX one, with no MACs per node."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"features.conv.weight": rng.standard_normal((128, 128, 3, 3)).astype(np.float32),
               "head.weight": arch_models.low_rank(8, 128, 512)},
              str(tmp_path / "model.safetensors"))
    finding = only(run_rule(tmp_path / "model.safetensors", "BG107"))
    layers = {layer["weight"]: layer for layer in finding.details["layers"]}
    assert layers["features.conv.weight"]["suggestion"] == "depthwise-separable"
    assert layers["features.conv.weight"]["macs_before"] is None
    assert layers["head.weight"]["rank"] == 8
    assert finding.fix is None  # no graph to factorize


def test_a_tflite_conv_is_judged_in_its_own_layout(tmp_path):
    """TFLite's CONV_2D stores [out, kh, kw, in]: 96 -> 64 channels, 3 x 3 (not 64 -> 3, 96)."""
    from tflite_models import Op, T, model, randn

    path = model(tmp_path / "conv.tflite",
                 [T("x", [1, 16, 16, 96]), T("conv/w", [64, 3, 3, 96], data=randn(64, 3, 3, 96) / 50),
                  T("y", [1, 16, 16, 64])],
                 [Op("CONV_2D", [0, 1, -1], [2])], [0], [2])
    [layer] = only(run_rule(path, "BG107")).details["layers"]
    assert (layer["op"], layer["suggestion"]) == ("CONV_2D", "depthwise-separable")
    assert (layer["kernel"], layer["in_channels"], layer["out_channels"]) == ([3, 3], 96, 64)
    assert layer["params_after"] == 96 * 9 + 96 * 64


def test_a_grouped_conv_is_not_a_dense_one(tmp_path):
    from onnx import helper

    from factories import build, info, init

    weight = np.random.default_rng(0).standard_normal((256, 64, 3, 3)).astype(np.float32) / 20
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="grouped", group=4, pads=[1] * 4)
    path = build([node], [info("x", [1, 256, 8, 8])], [info("y", [1, 256, 8, 8])],
                 [init("w", weight)], tmp_path / "grouped.onnx")
    assert run_rule(path, "BG107") == []  # group 4: neither dense nor decomposed as one matrix
    assert run_rule(arch_models.dense_conv(tmp_path / "dense.onnx", channels=256), "BG107") != []


# --- the regularization hint ---------------------------------------------------------------------

def test_dense_dominant_weights_get_the_regularization_hint(tmp_path):
    """Next to a layer it reports (a dense conv), BG107 names the dominant weight that is dense
    and not low-rank; over a size budget it points to fix's distillation target."""
    from onnx import helper

    from factories import build, info, init

    rng = np.random.default_rng(0)
    conv = (rng.standard_normal((64, 64, 3, 3)) / 24).astype(np.float32)
    head = rng.standard_normal((64, 256)).astype(np.float32)
    path = build([helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv", pads=[1] * 4),
                  helper.make_node("GlobalAveragePool", ["c"], ["p"]),
                  helper.make_node("Flatten", ["p"], ["f"]),
                  helper.make_node("MatMul", ["f", "head.weight"], ["y"], name="head")],
                 [info("x", [1, 64, 16, 16])], [info("y", [1, 256])],
                 [init("conv.weight", conv), init("head.weight", head)], tmp_path / "m.onnx")
    finding = only(run_rule(path, "BG107"))
    assert [layer["name"] for layer in finding.details["layers"]] == ["conv"]
    [dense] = finding.details["incompressible"]
    assert (dense["name"], dense["weight"], dense["full_rank"], dense["params"]) == (
        "head", "head.weight", 64, 16384)
    assert dense["rank"] == 62  # random: 99% of the energy needs most of the spectrum
    assert dense["zero_share"] < 0.01
    # Gaussian weights: zeroing the smaller half removes about 7% of the energy.
    assert dense["prune_half_cosine"] == 0.9627
    assert ("head.weight (rank 62 of 64, 0.06% near zero) is dense and not low-rank (16.4K "
            "weights): pruning half of it by magnitude would keep a weight cosine of only 0.963, "
            "so neither pruning nor factorization shrinks it after training; regularize while "
            "training (L1 or group lasso for sparsity, a low-rank penalty) or distil a smaller "
            "student") in finding.message
    assert "says how small" not in finding.message
    over = only(run_configured(path, '[budgets."*.onnx"]\nmax-params = "10K"\n'))
    assert over.message.endswith(
        "distil a smaller student (`bloatguard fix --unsafe-fixes` says how small for max-params)")
    # A dense model with nothing else to report is no finding, within budget or not.
    alone = arch_models.matmul(tmp_path / "full.onnx", head)
    assert run_rule(alone, "BG107") == []
    assert run_configured(alone, '[budgets."*.onnx"]\nmax-params = "10K"\n') == []


# --- factorize-lowrank ---------------------------------------------------------------------------

def _fix_json(run_cli, path: Path, *args) -> dict:
    code, out, err = run_cli("fix", "--unsafe-fixes", "--dry-run", "--no-latency",
                             "--output-format", "json", *args, str(path))
    assert code == 0, err
    return json.loads(out)["models"][0]


def test_factorize_lowrank_wins_with_the_accuracy_asked(tmp_path, run_cli):
    path = arch_models.matmul(tmp_path / "low.onnx", arch_models.low_rank(8))
    model = _fix_json(run_cli, path)
    verdicts = {c["candidate"]: c["verdict"] for c in model["candidates"]}
    # Against every other candidate its hints give (the quantizers BG101 names).
    assert set(verdicts) == {"quantize-dynamic", "convert-fp16", "factorize-lowrank"}
    assert verdicts["factorize-lowrank"] == "winner", verdicts
    [candidate] = [c for c in model["candidates"] if c["candidate"] == "factorize-lowrank"]
    assert candidate["steps"] == ["factorize-lowrank"]
    assert candidate["fidelity"]["outputs"]["y"]["cosine"] >= 0.999
    assert model["original"]["params"] == 65536 + 256
    assert candidate["params"] == 2 * 8 * 256 + 256  # 16x fewer weights in the layer
    assert candidate["params"] * 4 <= model["original"]["params"]
    assert candidate["macs"] == 4096
    assert candidate["changes"][0].startswith(
        "factorized w (256x256, MatMul) into rank 8 factors 256x8 and 8x256: 4,096 weights "
        "instead of 65,536 (16.0x fewer), keeping 100.00% of its energy")


def test_factorize_lowrank_on_a_transposed_gemm_keeps_the_outputs(tmp_path, run_cli):
    path = arch_models.matmul(tmp_path / "gemm.onnx", arch_models.low_rank(8, 384, 256).T.copy(),
                              gemm_trans_b=True)
    [candidate] = _fix_json(run_cli, path, "--only", "factorize-lowrank")["candidates"]
    assert candidate["verdict"] == "winner", candidate["reasons"]
    assert candidate["fidelity"]["outputs"]["y"]["cosine"] >= 0.999
    assert candidate["params"] == 8 * (384 + 256) + 256


def test_an_unfaithful_factorization_is_rejected_with_its_reason(tmp_path, run_cli):
    """A rank that drops real signal: the verifier rejects it on fidelity."""
    from bloatguard.fix.transforms_lowrank import factorize_lowrank

    weight = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    path = arch_models.matmul(tmp_path / "full.onnx", weight)
    model = onnx.load(str(path))
    [change] = factorize_lowrank(model, {"weights": [{"name": "w", "where": "initializer", "rank": 16}]})
    assert change.startswith("factorized w (256x256, MatMul) into rank 16 factors")
    onnx.save(model, str(tmp_path / "cut.onnx"))
    code, out, _ = run_cli("compare", str(path), str(tmp_path / "cut.onnx"), "--no-latency",
                           "--output-format", "json")
    verdict = json.loads(out)
    assert code == 1 and verdict["verdict"] == "fail"
    assert any("cos" in reason for reason in verdict["reasons"]), verdict["reasons"]


def test_a_weight_read_elsewhere_is_not_factorized(tmp_path):
    from onnx import helper

    from bloatguard.fix.transforms_lowrank import factorize_lowrank

    from factories import build, info, init

    path = build([helper.make_node("MatMul", ["x", "w"], ["y"]),
                  helper.make_node("Add", ["x", "w"], ["z"])],
                 [info("x", [256, 256])], [info("y", [256, 256]), info("z", [256, 256])],
                 [init("w", arch_models.low_rank(8))], tmp_path / "shared.onnx")
    model = onnx.load(str(path))
    assert factorize_lowrank(model, {"weights": [{"name": "w", "where": "initializer", "rank": 8}]}) == []


# --- declarations -------------------------------------------------------------------------------

def test_explain_documents_bg107(run_cli):
    code, out, _ = run_cli("explain", "BG107")
    assert code == 0
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead",
                    "## Fix safety", "## Options"):
        assert heading in out
    for option in ("min-share", "energy", "max-svd-elements", "min-channels", "embedding-share"):
        assert f"`{option}`" in out
    assert "factorize-lowrank" in out and "1/Cout + 1/k^2" in out


def test_the_check_hint_names_the_unsafe_fix(tmp_path, run_cli):
    path = arch_models.matmul(tmp_path / "low.onnx", arch_models.low_rank(8))
    code, out, _ = run_cli("check", "--no-latency", "--select", "BG107", str(path))
    assert code == 0
    assert f"fix: bloatguard fix --unsafe-fixes {path}" in out


# --- BG106's regularization hint -----------------------------------------------------------------

def test_bg106_says_which_layers_pruning_cannot_help(tmp_path):
    from onnx import helper

    from factories import build, info, init

    rng = np.random.default_rng(0)
    pruned = rng.standard_normal((256, 64)).astype(np.float32)
    pruned[:, [3, 10, 42]] = 0
    dense = rng.standard_normal((64, 512)).astype(np.float32)
    path = build([helper.make_node("MatMul", ["x", "pruned"], ["h"]),
                  helper.make_node("MatMul", ["h", "dense"], ["y"])],
                 [info("x", ["batch", 256])], [info("y", ["batch", 512])],
                 [init("pruned", pruned), init("dense", dense)], tmp_path / "m.onnx")
    finding = only(run_rule(path, "BG106"), "prune-channels")
    assert finding.details["dense_layers"] == {"count": 1, "weights": 32768, "share": 0.6667,
                                               "names": ["dense"]}
    assert finding.message.endswith(
        "(plus the next layers' matching inputs): pruned (3 of 64 channels, MatMul). The other 1 "
        "checked layer weight (67% of the checked weights) has under 5% (near-)zero weights: "
        "pruning it after training would remove real signal, so sparsity there has to be trained "
        "in (L1 regularization, gradual magnitude pruning while fine-tuning)")
    # Without a dense layer beside it, no hint.
    alone = arch_models.matmul(tmp_path / "alone.onnx", pruned)
    assert "dense_layers" not in only(run_rule(alone, "BG106")).details


def test_bg106_on_silero_vad_names_the_dense_trained_layers():
    from test_hygiene_quant_dtypes_prune import SILERO

    finding = only(run_rule(SILERO / "silero_vad.onnx", "BG106"), "prune-channels")
    assert finding.details["dense_layers"]["count"] == 12
    assert finding.details["dense_layers"]["share"] > 0.8


# --- real models ---------------------------------------------------------------------------------

def test_magika_main_conv_and_its_dense_layers():
    """magika's published model: one conv does 91% of the MACs; its dense layers are trained,
    full of signal, and not low-rank."""
    from test_hygiene_quant_dtypes_prune import MAGIKA

    finding = only(run_with_node_macs(MAGIKA))
    [layer] = finding.details["layers"]
    assert layer["name"] == "jax2tf_get_logits_/pjit_get_logits_/MagikaV2/Conv_0/Conv2D"
    assert (layer["suggestion"], layer["kernel"], layer["in_channels"], layer["out_channels"]) == (
        "depthwise-separable", [5, 1], 256, 512)
    assert (layer["params_before"], layer["params_after"]) == (512 * 256 * 5, 256 * 5 + 256 * 512)
    assert layer["macs_after"] == round(layer["macs_before"] * (1 / 512 + 1 / 5))
    assert finding.fix is None
    assert [(d["rank"], d["full_rank"]) for d in finding.details["incompressible"]] == [(197, 214), (61, 64)]


@pytest.mark.slow
def test_light_resnet50_with_its_weights_stored(tmp_path):
    """onnx's light ResNet-50 computes its weights with ConstantOfShape; stored (random He
    values, as the benchmark does), BG107 reports the last stage's three 3x3 512-channel convs,
    7 x 7 outputs each."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from efficient_architecture import materialize, package_dir

    light = package_dir("onnx") / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    finding = only(run_with_node_macs(materialize(light, tmp_path / "resnet50.onnx")))
    layers = finding.details["layers"]
    assert [layer["suggestion"] for layer in layers] == ["depthwise-separable"] * 3
    for layer in layers:
        assert (layer["in_channels"], layer["out_channels"], layer["kernel"]) == (512, 512, [3, 3])
        assert layer["macs_before"] == 7 * 7 * 512 * 512 * 9
        assert layer["macs_after"] == 7 * 7 * (512 * 9 + 512 * 512)


def test_hostile_values_neither_overflow_nor_warn(tmp_path):
    """Weights near float32's limit or non-finite (fuzzed files have them): a ratio of singular
    values still, or a note; never a RuntimeWarning on stderr."""
    import warnings

    huge = arch_models.low_rank(8) * np.float32(1e37)
    broken = arch_models.low_rank(8)
    broken[3, 5] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        [layer] = only(run_rule(arch_models.matmul(tmp_path / "huge.onnx", huge), "BG107")).details["layers"]
        assert layer["rank"] == 8
        assert run_rule(arch_models.matmul(tmp_path / "inf.onnx", broken), "BG107") == []


def test_plain_check_and_base_check_agree(tmp_path, monkeypatch, run_cli):
    """The per-layer MACs BG107 reads are the same whether the run keeps layers for the metric
    cache (--base) or builds them on first use (a plain check): same findings, same details."""
    from gitrepo import Repo

    repo = Repo(tmp_path / "repo")
    arch_models.dense_conv(repo.root / "models" / "m.onnx")
    repo.commit("model")
    monkeypatch.chdir(repo.root)

    def bg107(*args):
        _, out, _ = run_cli("check", "models", "--no-latency", "--select", "BG107",
                            "--output-format", "json", *args)
        return [f for m in json.loads(out)["models"] for f in m["findings"]]

    plain, based, warm = bg107(), bg107("--base", "HEAD"), bg107("--base", "HEAD")
    assert plain and plain == based == warm
    assert plain[0]["details"]["layers"][0]["macs_before"] is not None
