"""Small GGUF files written with the `gguf` package, llama.cpp's own Python writer (the one its
convert_hf_to_gguf.py uses), so the tests read the format as llama.cpp produces it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

EMBD, FF, VOCAB, BLOCKS = 64, 128, 100, 2
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output")
SAFE_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
HOSTILE_TEMPLATE = ("{% for message in messages %}{{ message.content }}{% endfor %}"
                    "{{ cycler.__init__.__globals__.os.popen('id').read() }}")


def llama(path: Path, *, dtype=np.float32, output="Q8_0", template: str | None = SAFE_TEMPLATE,
          embd=EMBD, ff=FF, blocks=BLOCKS, seed: int = 0) -> Path:
    """A llama-architecture model: token_embd (float16), per block four [embd, embd]
    projections, ffn_up [ff, embd], ffn_down [embd, ff] (all `dtype`) and a float32 norm; the
    output head quantized as `output` (or float16 with None)."""
    import gguf

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(2048)
    writer.add_embedding_length(embd)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", rng.standard_normal((VOCAB, embd)).astype(np.float16))
    for block in range(blocks):
        for name in PROJECTIONS:
            writer.add_tensor(f"blk.{block}.{name}.weight", rng.standard_normal((embd, embd)).astype(dtype))
        writer.add_tensor(f"blk.{block}.ffn_up.weight", rng.standard_normal((ff, embd)).astype(dtype))
        writer.add_tensor(f"blk.{block}.ffn_down.weight", rng.standard_normal((embd, ff)).astype(dtype))
        writer.add_tensor(f"blk.{block}.attn_norm.weight", np.ones(embd, np.float32))
    head = rng.standard_normal((VOCAB, embd)).astype(np.float32)
    if output is None:
        writer.add_tensor("output.weight", head.astype(np.float16))
    else:
        kind = getattr(gguf.GGMLQuantizationType, output)
        quantized = gguf.quants.quantize(head, kind)
        writer.add_tensor("output.weight", quantized, raw_shape=quantized.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama_params(embd=EMBD, ff=FF, blocks=BLOCKS) -> int:
    return VOCAB * embd * 2 + blocks * (4 * embd * embd + 2 * ff * embd + embd)


def _string(text: bytes) -> bytes:
    return struct.pack("<Q", len(text)) + text


def _header(tensors: int = 0, kvs: int = 0, body: bytes = b"", version: int = 3) -> bytes:
    """Padded, so that the counts alone do not give the file away."""
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs) + body + bytes(32)


def _tensor(name: bytes, dims, kind: int = 0, offset: int = 0) -> bytes:
    return (_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", kind, offset))


# name -> (bytes, what the reader must say); the fuzz corpus writes them too.
HOSTILE = {
    "counts beyond the file": (_header(2**40, 2**40), "cannot fit"),
    "key longer than the file": (_header(0, 1, struct.pack("<Q", 2**62)), "at most"),
    "string past the end": (_header(0, 1, _string(b"k") + struct.pack("<IQ", 8, 2**40)), "past the end"),
    "array of 2^60 strings": (_header(0, 1, _string(b"k") + struct.pack("<IIQ", 9, 8, 2**60)),
                              "more than the file can hold"),
    "array of 2^60 floats": (_header(0, 1, _string(b"k") + struct.pack("<IIQ", 9, 6, 2**60)),
                             "past the end"),
    "nested arrays": (_header(0, 1, _string(b"k") + struct.pack("<IIQ", 9, 9, 1) + struct.pack("<IQ", 9, 1) * 6),
                      "nests arrays"),
    "unknown value type": (_header(0, 1, _string(b"k") + struct.pack("<I", 77)), "unknown type 77"),
    "duplicate key": (_header(0, 2, (_string(b"k") + struct.pack("<IB", 0, 1)) * 2), "duplicate key"),
    "five dims": (_header(1, 0, _tensor(b"t", [1] * 5)), "5 dims"),
    "2^64 elements": (_header(1, 0, _tensor(b"t", [2**40, 2**40])), "beyond 2^63"),
    "data past the end": (_header(1, 0, _tensor(b"t", [1024, 1024])), "past the end"),
    "misaligned offset": (_header(1, 0, _tensor(b"t", [1], offset=3)), "not a multiple"),
    "partial block": (_header(1, 0, _tensor(b"t", [33], kind=8)), "whole number"),
    "overlapping tensors": (_header(2, 0, _tensor(b"a", [8]) + _tensor(b"b", [8])) + bytes(32),
                            "overlaps"),
    "duplicate tensor": (_header(2, 0, _tensor(b"a", [8]) + _tensor(b"a", [8], offset=32)) + bytes(96),
                         "duplicate tensor name"),
    "version 1": (_header(version=1), "version 1 is not supported"),
    "bad alignment": (_header(1, 1, _string(b"general.alignment") + struct.pack("<II", 4, 3)
                              + _tensor(b"t", [1])) + bytes(64), "power of two"),
}
