"""Small GGUF files written with the `gguf` package, llama.cpp's own Python writer (the one its
convert_hf_to_gguf.py uses), so the tests read the format as llama.cpp produces it."""

from __future__ import annotations

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
