"""Inputs for verifying candidates (fidelity) and calibrating static quantization.

From samples when there are any (`--samples`, else `[tool.bloatguard.samples]`), else random
values that respect each input's dtype and the configured shapes, exactly as the latency
measurement builds its feeds (bloatguard.measure.feeds), with pinned values honoured.

Random calibration is a last resort: activation ranges calibrated on noise can be far from
the real ones, and fidelity measured on noise says little about real inputs. It is allowed,
but `Inputs.warning` says so loudly and the report repeats it.

Arrays are written to .npz files in the fix's workspace (samples stacked on a leading axis,
as in sample files) so that isolated children can read them without pickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bloatguard.config import Config
from bloatguard.facts import ModelFacts

FIDELITY_SAMPLES = 32  # at most this many samples are compared
RANDOM_FIDELITY = 8
RANDOM_CALIBRATION = 16
CALIBRATION_SAMPLES = 128
INPUT_BYTES_CAP = 512 * 2**20  # all samples of all inputs, per file


class InputError(Exception):
    """No inputs can be built for this model; the message says why."""


@dataclass
class Inputs:
    fidelity: Path  # .npz: one (N, *shape) array per input
    calibration: Path
    source: str  # "samples.npz (12 samples)" or "random inputs"
    plan: Any  # measure.feeds.FeedPlan of the original model (for latency)
    random: bool
    notes: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        if not self.random:
            return None
        return ("WARNING: no samples for this model, so static quantization is calibrated on "
                "random inputs and fidelity is measured on random inputs; give real ones with "
                "--samples FILE.npz or [tool.bloatguard.samples]")


def check_shapes(facts: ModelFacts, model_path: Path, config: Config, display: str) -> None:
    """A configured input shape that contradicts a dim the model fixes is a ConfigError: the
    inputs, the MACs and the latency would describe an inference onnxruntime refuses."""
    from bloatguard.measure.dims import check_configured

    check_configured(display, {v.name: v.shape for v in facts.inputs},
                     config.resolve(model_path).inputs)


def prepare(facts: ModelFacts, model_path: Path, config: Config, samples: Path | None,
            workspace: Path) -> Inputs:
    """Write the fidelity and calibration inputs of one model into `workspace`. A samples array
    that fits no layout is a ConfigError naming the file and the array."""
    settings = config.resolve(model_path)
    samples = samples or settings.samples
    fidelity, calibration = workspace / "fidelity.npz", workspace / "calibration.npz"
    if samples is None:
        plan = _plan(facts, settings, config, None)
        _save(fidelity, _random(plan, RANDOM_FIDELITY, seed=1000))
        _save(calibration, _random(plan, RANDOM_CALIBRATION, seed=0))
        return Inputs(fidelity, calibration, "random inputs", plan, True)
    from bloatguard import samples as sample_files

    loaded = sample_files.load(samples, facts.inputs)  # ConfigError naming the file on problems
    # The feed plan reads the first sample of each array; from a copy already stacked as
    # (N, *input shape), so that latency times the shape fidelity compares.
    first = workspace / "first-sample.npz"
    _save(first, {name: array[:1] for name, array in loaded.arrays.items()})
    plan = _plan(facts, settings, config, first)
    arrays = _complete(loaded, plan)
    count = next(iter(arrays.values())).shape[0] if arrays else 0
    _save(fidelity, {n: a[:FIDELITY_SAMPLES] for n, a in arrays.items()})
    _save(calibration, {n: a[:CALIBRATION_SAMPLES] for n, a in arrays.items()})
    return Inputs(fidelity, calibration, f"{samples.name} ({count} samples)", plan, False,
                  loaded.describe())


def _plan(facts: ModelFacts, settings, config: Config, samples: Path | None):
    from bloatguard.measure.feeds import FeedError, plan_feeds

    try:
        return plan_feeds(facts.inputs, shapes=settings.inputs, pins=settings.pins,
                          samples=samples, int_range=config.latency.int_range,
                          cap=config.latency.feed_cap)
    except FeedError as exc:
        raise InputError(str(exc)) from None


def _complete(loaded, plan) -> dict[str, np.ndarray]:
    """The samples of every input, as many as fit INPUT_BYTES_CAP: inputs the file does not
    hold (a pinned sample rate, say) come from the feed plan, repeated for each sample."""
    arrays = dict(loaded.arrays)
    count = loaded.count
    for feed in plan.feeds:
        if feed.name not in arrays:
            single = _random(_single(plan, feed), 1, seed=0)[feed.name]
            arrays[feed.name] = np.repeat(single, count, axis=0)
    per_sample = sum(a[0].nbytes for a in arrays.values()) or 1
    keep = max(1, INPUT_BYTES_CAP // per_sample)
    return {name: a[:keep] for name, a in arrays.items()}


def _single(plan, feed):
    from bloatguard.measure.feeds import FeedPlan

    return FeedPlan(feeds=[feed])


def _random(plan, count: int, seed: int) -> dict[str, np.ndarray]:
    """`count` samples per input: floats in [0, 1), integers in the configured range, pinned
    values as given. Seeded, so every run verifies on the same inputs."""
    from bloatguard.measure.feeds import read_first_sample

    count = max(1, min(count, INPUT_BYTES_CAP // max(plan.nbytes, 1)))
    arrays: dict[str, np.ndarray] = {}
    for position, feed in enumerate(plan.feeds):
        dtype = np.dtype(feed.dtype)
        rng = np.random.default_rng(seed * 1000 + position)
        shape = (count, *feed.shape)
        if feed.source == "pinned":
            array = np.broadcast_to(np.asarray(feed.value, dtype=dtype), shape)
        elif feed.source == "sample":
            array = np.broadcast_to(read_first_sample(feed.sample, feed.name, feed.shape), shape)
        elif dtype.kind == "f":
            array = rng.random(shape, dtype=np.float64).astype(dtype)
        elif dtype.kind == "b":
            array = rng.integers(0, 2, shape).astype(bool)
        else:
            info = np.iinfo(dtype)
            low = min(max(feed.int_range[0], info.min), info.max)
            high = max(min(feed.int_range[1], info.max), low)
            array = rng.integers(low, high, shape, dtype=dtype, endpoint=True)
        arrays[feed.name] = np.array(array, dtype=dtype, order="C")
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # mypy matches **arrays against savez's `allow_pickle: bool` keyword too (only an input
    # named "allow_pickle" would land there)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def candidate_feeds(arrays: dict[str, np.ndarray], input_map: dict[str, Any]) -> dict[str, np.ndarray]:
    """The original's inputs as a candidate that removed inputs or columns expects them."""
    feeds = {}
    for name, array in arrays.items():
        change = input_map.get(name)
        if change == "drop":
            continue
        if isinstance(change, dict):
            # Samples are stacked on a leading axis: the input's axis a is the array's a + 1.
            array = np.take(array, change["keep"], axis=change["axis"] + 1)
        feeds[name] = array
    return feeds
