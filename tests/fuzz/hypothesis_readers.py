"""Property-based fuzzing of the readers: any bytes, with any model suffix, give facts or a
clean "unreadable" verdict, never an exception, and never run code.

In CI this runs a few hundred examples (tests/test_fuzz_readers.py). For a long run:

    BLOATGUARD_FUZZ_EXAMPLES=200000 pytest tests/test_fuzz_readers.py -p no:cacheprovider
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bloatguard.formats import read_model

EXAMPLES = int(os.environ.get("BLOATGUARD_FUZZ_EXAMPLES", "300"))
SUFFIXES = [".onnx", ".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pkl", ""]


def check_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"model{suffix}"
        path.write_bytes(data)
        facts = read_model(path)  # must not raise
        assert facts.unreadable is None or isinstance(facts.unreadable, str)
        assert "internal error" not in (facts.unreadable or ""), facts.unreadable
        if facts.unreadable is None and not facts.weights_unknown:
            assert facts.params is not None and facts.params >= 0


def mutate(seed: bytes, rng: random.Random) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        if choice < 0.4 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.6 and data:
            del data[rng.randrange(len(data)):]
        elif choice < 0.8:
            position = rng.randrange(len(data) + 1)
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif data:
            start = rng.randrange(len(data))
            data[start:start + 8] = (2**62).to_bytes(8, "little")
    return bytes(data)


FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 1000,
                         suppress_health_check=list(HealthCheck))


def random_bytes_test():
    @FUZZ_SETTINGS
    @given(st.binary(max_size=4096), st.sampled_from(SUFFIXES))
    def test(data, suffix):
        check_bytes(data, suffix)

    return test


def mutated_seeds_test(seeds: dict[str, bytes]):
    names = sorted(seeds)

    @FUZZ_SETTINGS
    @given(st.sampled_from(names), st.integers(min_value=0, max_value=2**32))
    def test(name, seed):
        data = mutate(seeds[name], random.Random(seed))
        check_bytes(data, Path(name).suffix)

    return test
