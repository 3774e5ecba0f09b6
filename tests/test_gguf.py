"""GGUF: exact metrics from the header alone, BG101/BG105/BG901 on llama.cpp's files, and
hostile headers that are BG000, never a crash or a huge allocation."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import gguf_models
import published
from gguf_models import BLOCKS, EMBD, FF, VOCAB

pytestmark = pytest.mark.usefixtures("debug_mode")


def read(path: Path):
    from bloatguard.formats import read_model

    return read_model(path)


def run_rule(path: Path, code: str):
    from bloatguard.config import Config
    from bloatguard.engine import apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    config = Config()
    result = ModelResult(path=str(path), facts=measure(path, config))
    assert result.facts.unreadable is None, result.facts.unreadable
    apply_rules(result, path, config, [find_rule(code)])
    return result.findings


# --- metrics ------------------------------------------------------------------------------------

def test_params_bytes_types_and_bits_per_weight(tmp_path):
    path = gguf_models.llama(tmp_path / "m.gguf")
    facts = read(path)
    assert facts.format == "gguf" and facts.unreadable is None
    assert facts.params == gguf_models.llama_params() == 78464
    f32 = BLOCKS * (4 * EMBD * EMBD + 2 * FF * EMBD + EMBD)
    assert facts.params_by_dtype == {"float32": f32, "Q8_0": VOCAB * EMBD, "float16": VOCAB * EMBD}
    # Q8_0: 34 bytes per block of 32 weights.
    assert facts.weight_bytes == f32 * 4 + VOCAB * EMBD * 2 + VOCAB * EMBD // 32 * 34 == 282256
    metrics = facts.metrics()
    assert metrics["bytes_by_dtype"] == {"float32": f32 * 4, "float16": 12800, "Q8_0": 6800}
    assert metrics["bits_per_weight"] == round(282256 * 8 / 78464, 4)
    assert metrics["architecture"] == "llama" and metrics["context_length"] == 2048
    assert metrics["file_size"] == path.stat().st_size
    # Per token: every block projection and the output head, once.
    assert facts.macs == BLOCKS * (4 * EMBD * EMBD + 2 * FF * EMBD) + VOCAB * EMBD == 71936
    assert any("MACs are per token" in note and "2 x 2 x 64 x n" in note for note in facts.notes)
    assert facts.tensors[1].shape == (EMBD, EMBD)  # row-major, as llama.cpp's convert wrote it


def test_tied_output_and_mixture_of_experts(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "moe.gguf"), "qwen2moe")
    writer.add_block_count(1)
    writer.add_embedding_length(16)
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((50, 16), np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((16, 16), np.float32))
    writer.add_tensor("blk.0.ffn_up_exps.weight", np.zeros((8, 32, 16), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    facts = read(tmp_path / "moe.gguf")
    # 2 of 8 experts per token; no output.weight: the head reuses token_embd.
    assert facts.macs == 16 * 16 + 8 * 32 * 16 * 2 // 8 + 50 * 16
    assert any("tied to token_embd" in note and "2 of 8 experts" in note for note in facts.notes)


def test_ggml_type_table_matches_llama_cpp_python_writer():
    """Block sizes and bytes per block of every type the `gguf` package (llama.cpp's own) knows."""
    from gguf.constants import GGML_QUANT_SIZES

    from bloatguard.facts import DTYPE_SIZES, GGML_BLOCKS
    from bloatguard.formats.gguf import GGML_TYPES, PLAIN

    for kind, (block, size) in GGML_QUANT_SIZES.items():
        name = GGML_TYPES[int(kind)]
        assert name == kind.name
        if name in PLAIN:
            assert (block, size) == (1, DTYPE_SIZES[PLAIN[name]])
        else:
            assert GGML_BLOCKS[name] == (block, size), name


def test_unknown_type_is_counted_with_a_note(tmp_path):
    data = bytearray(gguf_models.llama(tmp_path / "m.gguf").read_bytes())
    # The output head (last tensor info) gets type 99, a quantization type newer than us.
    name = b"output.weight"
    at = data.index(gguf_models._string(name) + struct.pack("<I", 2)) + 8 + len(name) + 4 + 16
    assert struct.unpack_from("<I", data, at)[0] == 8  # Q8_0
    struct.pack_into("<I", data, at, 99)
    (tmp_path / "new.gguf").write_bytes(data)
    facts = read(tmp_path / "new.gguf")
    assert facts.unreadable is None
    assert facts.params == 78464 and facts.params_by_dtype["unknown type 99"] == VOCAB * EMBD
    assert facts.weight_bytes is None and facts.metrics()["bits_per_weight"] is None
    assert any(note.startswith("unknown type 99:") for note in facts.notes)


# --- rules --------------------------------------------------------------------------------------

def test_bg101_float_matrices_recommend_llama_cpp_types_with_sizes(tmp_path):
    path = gguf_models.llama(tmp_path / "m.gguf", output=None, embd=256, ff=512)
    (finding,) = run_rule(path, "BG101")
    numel = BLOCKS * (4 * 256 * 256 + 2 * 512 * 256)  # float32 projections above 64 KiB
    assert finding.details["by_op"] == {"MUL_MAT": numel * 4}
    size = path.stat().st_size
    assert finding.details["estimated_file_size"] == {
        "Q8_0": int(size - numel * 4 + numel * 8.5 / 8), "Q4_K_M": int(size - numel * 4 + numel * 4.8 / 8)}
    assert "llama-quantize" in finding.message and "Q4_K_M" in finding.message and "Q8_0" in finding.message
    assert finding.fix is None  # bloatguard fix does not rewrite GGUF


def test_bg101_quiet_on_a_quantized_model(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "q.gguf"), "llama")
    weight = gguf.quants.quantize(np.ones((256, 512), np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.weight", weight, raw_shape=weight.shape,
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_k.weight", np.ones((256, 256), np.float32))  # kept on purpose
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert run_rule(tmp_path / "q.gguf", "BG101") == []


def test_bg105_float64_and_int64_tensors(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "w.gguf"), "llama")
    writer.add_tensor("blk.0.attn_q.weight", np.ones((64, 64), np.float64))
    writer.add_tensor("ids", np.arange(2048, dtype=np.int64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    float64, int64 = run_rule(tmp_path / "w.gguf", "BG105")
    assert float64.details["bytes"] == 64 * 64 * 8
    assert int64.details["values_read"] is True and int64.details["bytes_saved"] == 2048 * 4


def test_bg901_flags_a_hostile_template_and_quotes_it(tmp_path):
    path = gguf_models.llama(tmp_path / "evil.gguf", template=gguf_models.HOSTILE_TEMPLATE)
    (finding,) = run_rule(path, "BG901")
    assert finding.severity.value == "error"
    assert "`cycler.__init__.__globals__`" in finding.message and "CVE-2024-34359" in finding.message
    assert {e["reason"] for e in finding.details["expressions"]} >= {
        "attribute __globals__", "attribute __init__", "name cycler"}
    assert run_rule(gguf_models.llama(tmp_path / "ok.gguf"), "BG901") == []


@pytest.mark.parametrize("template, reason", [
    ("{{ ().__class__.__base__.__subclasses__() }}", "attribute __subclasses__"),
    ("{{ x|attr('__cla' ~ 'ss__') }}", "attr filter with a computed name"),
    ("{{ m|map(attribute='__class__')|list }}", "attribute __class__"),
    ("{{ lipsum['__glob' + 'als__'] }}", "item with a name built from strings"),
    ("{{ __import__('os').system('id') }}", "name __import__"),
    ("{{ self._TemplateReference__context }}", "attribute _TemplateReference__context"),
    ("{{ request.application.__globals__ }}", "name request"),
])
def test_bg901_catches_the_known_escapes(template, reason):
    from bloatguard.rules.unsafe_chat_template import scan_template

    problem, offences = scan_template(template)
    assert problem is None and reason in {r for _, r in offences}


def test_bg901_an_unparseable_template_is_reported_unchecked(tmp_path):
    path = gguf_models.llama(tmp_path / "bad.gguf", template="{{ unclosed")
    (finding,) = run_rule(path, "BG901")
    assert finding.details["checked"] is False and "cannot be checked" in finding.message


# --- published files ----------------------------------------------------------------------------

def test_llama_cpp_vocab_files():
    """llama.cpp's vocabulary GGUF files (as its convert script writes them, shipped in the
    llama-cpp-python source distribution): metadata and tokenizers, no tensors. Their real chat
    templates (Command-R's three, Gemma 4, Phi-3, Qwen2) parse and are clean."""
    files = {path.name: path for path in published.published(published.LLAMA_CPP, "ggml-vocab-*.gguf")}
    assert len(files) >= 19
    for name, path in files.items():
        facts = read(path)
        assert facts.unreadable is None, (name, facts.unreadable)
        assert facts.params == 0 and facts.file_size == path.stat().st_size and facts.macs is None
        assert run_rule(path, "BG901") == [], name
    command_r = read(files["ggml-vocab-command-r.gguf"])
    assert sorted(command_r.chat_templates) == [
        "tokenizer.chat_template", "tokenizer.chat_template.rag", "tokenizer.chat_template.tool_use"]
    metrics = command_r.metrics()
    assert metrics["architecture"] == "command-r" and metrics["context_length"] == 131072
    assert read(files["ggml-vocab-phi-3.gguf"]).metrics()["architecture"] == "phi3"


# --- hostile headers ----------------------------------------------------------------------------

HOSTILE = gguf_models.HOSTILE


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_headers_are_unreadable_with_the_cause(tmp_path, case, run_cli):
    data, cause = HOSTILE[case]
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    facts = read(path)
    assert facts.unreadable is not None and cause in facts.unreadable, facts.unreadable
    assert facts.unreadable.startswith("not a valid GGUF file: ")
    code, out, err = run_cli("check", path, "--output-format", "json", "--no-cache")
    assert code == 2 and "Traceback" not in err
    assert [f["code"] for f in json.loads(out)["models"][0]["findings"]] == ["BG000"]
    assert err.startswith(f"bloatguard: {path}: not a valid GGUF file")


def test_discovery_by_suffix_and_magic(tmp_path):
    from bloatguard.formats import read_head, sniff

    gguf_models.llama(tmp_path / "model.bin")
    assert sniff(read_head(tmp_path / "model.bin"), ".bin") == "gguf"
    from bloatguard.config import Config
    from bloatguard.discover import discover

    gguf_models.llama(tmp_path / "m.gguf")
    assert discover([tmp_path], Config()) == [tmp_path / "m.gguf"]  # a .bin GGUF is not a model by suffix
