"""Hypothesis fuzzing of the readers (see tests/fuzz/hypothesis_readers.py for long runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import corpus  # noqa: E402
import hypothesis_readers  # noqa: E402

test_random_bytes_never_crash_a_reader = hypothesis_readers.random_bytes_test()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    directory = tmp_path_factory.mktemp("seeds")
    return {path.name: path.read_bytes() for path in corpus._seeds(directory).values()}


def test_mutated_real_models_never_crash_a_reader(seeds):
    hypothesis_readers.mutated_seeds_test(seeds)()
