"""The pipeline: find -> load -> measure -> rules. Reports and the CLI sit on top of this."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from bloatguard.config import Config
from bloatguard.facts import BlobSource, ModelFacts
from bloatguard.paths import located
from bloatguard.registry import all_rules, selector_matches
from bloatguard.result import ModelResult
from bloatguard.rule import Finding, Rule, RuleContext

if TYPE_CHECKING:
    from bloatguard.isolate import Queue


@dataclass
class Selection:
    """Which rules run: --select/--ignore on the command line win over the config's."""

    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)

    def rules(self, config: Config) -> list[Rule]:
        from bloatguard.errors import BloatguardError
        from bloatguard.registry import unknown_selectors

        unknown = unknown_selectors([*(self.select or []), *self.ignore])
        if unknown:
            raise BloatguardError(f"--select/--ignore: {unknown[0]!r} matches no rule; see "
                                  "`bloatguard rules`")
        select = self.select if self.select is not None else config.select
        ignore = [*config.ignore, *self.ignore]
        return [rule for rule in all_rules()
                if (select is None or any(selector_matches(s, rule) for s in select))
                and not any(selector_matches(s, rule) for s in ignore)]


@dataclass(frozen=True)
class Shard:
    """`--shard K/N`: the K-th (1-based) of N parts of the models, for parallel CI jobs.

    A model's part is a hash of its report path, so every job computes the same split without
    talking to the others, and adding a model moves no other model to another part."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, slash, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise ValueError(f"expected K/N such as 1/4, got {text!r}") from None
        if not slash or not 1 <= shard.index <= shard.count:
            raise ValueError(f"expected K/N with 1 <= K <= N, got {text!r}")
        return shard

    def __contains__(self, path: str) -> bool:
        import hashlib

        digest = hashlib.sha256(path.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


def display_path(path: Path) -> str:
    """Paths as the user typed them when relative to the working directory, else absolute."""
    try:
        return located(path).relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def measure(path: Path, config: Config, display: str | None = None,
            settings_path: Path | None = None, macs: MacsBatch | None = None) -> ModelFacts:
    """Read a model and take the measurements every budget rule needs.

    `settings_path` is where the model lives in the repository when `path` is a temporary copy
    of a git blob, so that per-path settings (input shapes) still apply. With a `macs` batch,
    MACs are counted by the batch's children (started early, or at `macs.run()`).
    """
    from bloatguard.formats import read_model

    facts = read_model(path, display or display_path(path))
    # Readers of formats without a graph say themselves that MACs are not measured.
    if facts.format == "onnx" and facts.handle is not None:
        batch = macs or MacsBatch()
        # facts.file: the bytes the reader measured (a Git LFS pointer's object, say).
        batch.add(facts.file, config.resolve(settings_path or path).inputs, facts)
        if macs is None:
            batch.run()
    return facts


class MacsBatch:
    """Counts MACs for many ONNX models in forked children, one per core.

    Shape inference is native code fed with untrusted input, so it runs isolated. The children
    read the model files themselves, so counting can start before the parent has read them
    (`start`): the parent then reads the facts while the children count. A child that crashes
    on one model costs only that model its MACs.
    """

    def __init__(self, *, layers: bool = False) -> None:
        # Whether the facts get their layers (facts.layers) now: every batch whose facts the
        # metric cache keeps sets it, so a cached entry never lacks them; elsewhere they are
        # built on first use (ModelFacts.layer_table), which a budget-only run never pays for.
        self.layers = layers
        self.jobs: list[tuple[Path, dict[str, list[int]]]] = []
        self.owners: list[list[ModelFacts]] = []  # the facts each job's count belongs to
        self.index: dict[str, int] = {}
        self.queues: list[tuple[int, Queue]] = []  # (index of its first job, its queue)
        self.started = 0
        self.done_callbacks: list[Callable[[], None]] = []

    def start(self, jobs: Sequence[tuple[Path, dict[str, list[int]]]] = ()) -> None:
        """Start counting the given (path, input shapes) jobs and any added so far. A job's
        count is kept only for facts later `add`ed with the same path and shapes."""
        for path, shapes in jobs:
            if _job_key(path, shapes) not in self.index:
                self._new_job(path, shapes)
        pending = self.jobs[self.started:]
        if pending:
            import onnx  # imported once here, inherited by every child

            from bloatguard.formats import onnx as _reader  # noqa: F401 - the parent's too
            from bloatguard.isolate import Queue
            from bloatguard.measure import compute, memory  # noqa: F401

            # onnx builds its registry of operator schemas on first use (~15 ms): once here,
            # not again in each child's first shape inference.
            onnx.defs.get_schema("Conv")
            workers = max(1, min(len(pending), os.cpu_count() or 1))
            self.queues.append((self.started, Queue(_count_file, pending, workers=workers)))
            self.started = len(self.jobs)

    def add(self, path: Path, input_shapes: dict[str, list[int]], facts: ModelFacts) -> None:
        index = self.index.get(_job_key(path, input_shapes))
        if index is None:
            index = self._new_job(path, input_shapes)
        self.owners[index].append(facts)

    def _new_job(self, path: Path, input_shapes: dict[str, list[int]]) -> int:
        self.index[_job_key(path, input_shapes)] = len(self.jobs)
        self.jobs.append((path, input_shapes))
        self.owners.append([])
        return len(self.jobs) - 1

    def then(self, callback: Callable[[], None]) -> None:
        """Run `callback` after the batch (e.g. to cache facts only once they are complete)."""
        self.done_callbacks.append(callback)

    def run(self) -> None:
        """Count what has not started yet, wait for every count and store it in its facts."""
        self.start()
        queues, self.queues = self.queues, []
        for first, queue in queues:
            outcomes = queue.results(timeout=60 + 30 * len(queue.items))
            for index, outcome in enumerate(outcomes, start=first):
                for facts in self.owners[index]:
                    _store_macs(facts, outcome, layers=self.layers)
        # Counted and stored: facts added from now on need jobs of their own.
        self.jobs, self.owners, self.index, self.started = [], [], {}, 0
        callbacks, self.done_callbacks = self.done_callbacks, []
        for callback in callbacks:
            callback()


def _job_key(path: Path, input_shapes: dict[str, list[int]]) -> str:
    import json

    return json.dumps([str(path), input_shapes], sort_keys=True)


def _count_file(job) -> dict:
    """MACs and the static peak activation memory, from one shape inference."""
    from dataclasses import asdict

    from bloatguard.formats.onnx import read_proto
    from bloatguard.measure.compute import analyze

    path, shapes = job
    macs, memory = analyze(read_proto(path), shapes)
    assert memory is not None  # analyze measures memory unless told not to
    return {**asdict(macs), "memory": asdict(memory)}


def _store_macs(facts: ModelFacts, outcome, *, layers: bool) -> None:
    """MACs and activation memory into the facts; the peak's whereabouts into `extra` (kept by
    the metric cache with the facts) and, in words, into the notes."""
    if isinstance(outcome, Exception):
        facts.note(f"MACs not measured: shape inference {outcome}")
        facts.measured["activation_memory"] = None
        facts.note(f"activation memory not measured: shape inference {outcome}")
        if layers:
            facts.layer_table()
        return
    facts.macs_by_node = outcome["by_node"] if outcome["macs"] is not None else None
    if layers:
        facts.layer_table()
    facts.macs = outcome["macs"]
    facts.macs_by_op = outcome["by_op"]
    if outcome.get("formula"):  # MACs of the symbolic input dims (measure.symbolic)
        facts.macs_formula = {"exact": outcome["formula"], "text": outcome["formula_text"]}
    for note in outcome["notes"]:
        facts.note(note)
    memory = outcome.get("memory") or {"activation_memory": None, "notes": [], "peak": None}
    facts.measured["activation_memory"] = memory["activation_memory"]
    if memory["peak"] is not None:
        facts.activation_peak = memory["peak"]
    for note in memory["notes"]:
        facts.note(note)


@dataclass
class RuleOutcome:
    """What one rule reported for one model: its findings and the notes it left. `failed` when
    the rule raised: such an outcome is reported but never cached."""

    code: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    failed: bool = False

    def to_json(self) -> dict:
        return {"code": self.code, "findings": [finding.to_json() for finding in self.findings],
                "notes": self.notes, "failed": self.failed}

    @classmethod
    def from_json(cls, entry: dict) -> RuleOutcome:
        return cls(code=str(entry["code"]), findings=[Finding.from_json(f) for f in entry["findings"]],
                   notes=[str(note) for note in entry["notes"]], failed=bool(entry.get("failed")))


def run_rules(facts: ModelFacts, base: ModelFacts | None, path: Path, config: Config,
              rules: list[Rule], reference: ModelFacts | None = None,
              reference_name: str | None = None) -> list[RuleOutcome]:
    """Each rule's outcome on one model, in the rules' order.

    The notes a rule leaves are taken back out of the facts into its outcome, so that the
    caller adds every rule's notes in the rules' order whether an outcome was computed here, in
    a worker or restored from the cache: the report is the same either way."""
    settings = config.resolve(path)
    context = RuleContext(facts=facts, base=base, settings=settings, config=config,
                          reference=reference, reference_name=reference_name)
    kept = len(facts.notes)
    outcomes = []
    try:
        for rule in rules:
            if any(selector_matches(code, rule) for code in settings.ignored):
                continue
            outcome = RuleOutcome(rule.code)
            try:
                outcome.findings.extend(rule.check(context))
            except Exception as exc:  # one rule's bug on one odd model must not sink the run
                if os.environ.get("BLOATGUARD_DEBUG"):
                    raise
                outcome.failed = True
                facts.note(f"{rule.code} {rule.name} could not check this model "
                           f"({type(exc).__name__}: {exc}); set BLOATGUARD_DEBUG=1 for details")
            outcome.notes = facts.notes[kept:]
            del facts.notes[kept:]
            outcomes.append(outcome)
    finally:
        context.close()
    return outcomes


def apply_rules(result: ModelResult, path: Path, config: Config, rules: list[Rule]) -> None:
    """Run the rules on one model and add their findings and notes to `result`."""
    facts = result.facts
    assert facts is not None  # a model to check, not one deleted since the base
    for outcome in run_rules(facts, result.base, path, config, rules):
        result.findings.extend(outcome.findings)
        for note in outcome.notes:
            facts.note(note)


def _outcomes_as_json(call: tuple) -> list[dict]:
    return [outcome.to_json() for outcome in run_rules(*call)]


def _in_order(calls: list[tuple], jobs: int) -> list[list[RuleOutcome]]:
    """run_rules for every call, in `jobs` forked workers when jobs > 1, in the calls' order.

    Workers answer through bloatguard.isolate's JSON pipe, not pickle: they read untrusted
    weights, and a worker subverted through a native bug must not make the parent run code. A
    call whose worker crashed is checked again here, as jobs=1 would."""
    if jobs <= 1 or len(calls) <= 1:
        return [run_rules(*call) for call in calls]
    from bloatguard.isolate import map_isolated

    answers = map_isolated(_outcomes_as_json, calls, workers=min(jobs, len(calls)),
                           timeout=600 + 120 * len(calls))
    return [run_rules(*call) if isinstance(answer, Exception)
            else [RuleOutcome.from_json(entry) for entry in answer]
            for call, answer in zip(calls, answers)]


def _cacheable(rule: Rule) -> bool:
    """Built-in rules whose findings the model's bytes and its settings fully determine."""
    return rule.reads <= {"model"} and type(rule).__module__.startswith("bloatguard.rules.")


class _ModelRules:
    """The rules for one model: which outcomes the metric cache holds, which rules run now.

    Facts restored from the cache carry no file and no model handle; when a rule that reads the
    model has to run, the blob is written out and read again, so a warm run reports exactly
    what a cold one does."""

    def __init__(self, result: ModelResult, rules: list[Rule], config: Config, cache) -> None:
        self.result, self.rules, self.config, self.cache = result, rules, config, cache
        self.path = result.settings_path or Path(result.path)
        self.keys: dict[str, str] = {}
        self.cached: dict[str, RuleOutcome] = {}
        facts = result.facts
        assert facts is not None  # planned only for results with facts (check)
        if facts.blob is not None and cache is not None:
            settings = config.resolve(self.path)
            for rule in filter(_cacheable, rules):
                key = cache.outcome_key(facts.blob.key, rule.code, config.rule_options(rule.name),
                                        settings)
                self.keys[rule.code] = key
                entry = cache.get_outcome(key)
                if entry is not None:
                    self.cached[rule.code] = RuleOutcome.from_json(entry)
        self.to_run = [rule for rule in rules if rule.code not in self.cached]

    def call(self) -> tuple:
        """run_rules' arguments, with the model read again if a rule to run needs it."""
        facts = self.result.facts
        assert facts is not None  # as in __init__
        if (facts.file is None and facts.blob is not None
                and any("model" in rule.reads for rule in self.to_run)):
            from bloatguard.formats import read_model

            fresh = read_model(facts.blob.write(), facts.path)
            facts.file, facts.handle = fresh.file, fresh.handle
        return (facts, self.result.base, self.path, self.config, self.to_run,
                self.result.reference, self.result.reference_name)

    def finish(self, ran: list[RuleOutcome]) -> None:
        """Report every rule's outcome in the rules' order, and cache the fresh ones."""
        fresh = {outcome.code: outcome for outcome in ran}
        for rule in self.rules:
            outcome = self.cached.get(rule.code) or fresh.get(rule.code)
            if outcome is None:
                continue  # ignored for this path
            self.result.findings.extend(outcome.findings)
            assert self.result.facts is not None  # as in __init__
            for note in outcome.notes:
                self.result.facts.note(note)
            if rule.code in fresh and rule.code in self.keys and not outcome.failed:
                self.cache.put_outcome(self.keys[rule.code], outcome.to_json())


def check(paths: list[Path], config: Config, selection: Selection,
          progress: Callable[[int, int, str], None] | None = None,
          latency: bool = False, shard: Shard | None = None, jobs: int = 1) -> list[ModelResult]:
    from bloatguard.discover import discover

    results = []
    found = discover(paths, config)
    _require_models(paths, found, config)
    models = [path for path in found if shard is None or display_path(path) in shard]
    macs = MacsBatch()
    # Count MACs while the models are read: shape inference is most of a static check's time.
    # Regular files only: a counting child must never open a link's target or block on a FIFO
    # (the reader reports those as BG000 without opening them).
    macs.start([(path, config.resolve(path).inputs) for path in models
                if path.suffix.lower() == ".onnx" and _regular(path)])
    for index, path in enumerate(models):
        if progress:
            progress(index, len(models), display_path(path))
        results.append(ModelResult(path=display_path(path), facts=measure(path, config, macs=macs),
                                   settings_path=path, head_file=path))
    macs.run()
    _finish(results, config, selection, latency, jobs, progress=progress)
    return results


def _attach_reference(results: list[ModelResult], config: Config) -> None:
    """Each model as it was at the config's drift reference ([drift] reference = "v1.0"), for
    its max-<metric>-drift budgets: measured from git, through the metric cache."""
    from bloatguard.errors import BloatguardError
    from bloatguard.gitbase import GitRepo

    reference = config.drift_reference
    assert reference is not None  # called only when the config sets one
    checked = [result for result in results if result.facts is not None]
    if not checked:
        return
    repo = GitRepo(checked[0].settings_path or Path(checked[0].path))
    commit = repo.commit_of(reference)
    if commit is None:
        raise BloatguardError(f"[drift] reference {reference!r} in {config.path}: no such commit "
                              "here (in CI, fetch it: `fetch-depth: 0` on actions/checkout, or "
                              "fetch the tag)")
    wanted = []
    for result in checked:
        real_path = result.settings_path or Path(result.path)
        blob = repo.tree_blob(commit, repo.relpath(real_path))
        if blob is not None:  # a model added since the reference has no drift to judge
            wanted.append((result, (blob, commit, f"{result.path}@{reference}", real_path)))
    measured = measure_blobs(repo, [blob for _, blob in wanted], config)
    for (result, _), facts in zip(wanted, measured):
        result.reference, result.reference_name = facts, reference


def _check_input_shapes(results: list[ModelResult], config: Config) -> None:
    """A configured input shape that contradicts a dim the head model fixes is a config error
    (exit 2): MACs or a timing for a shape the model cannot run describe nothing. Only the
    head: a change may fix a dim and its config together."""
    from bloatguard.measure.dims import check_configured

    for result in results:
        facts = result.facts
        if facts is None or facts.unreadable or facts.format != "onnx":
            continue
        shapes = config.resolve(result.settings_path or Path(result.path)).inputs
        if shapes:
            check_configured(result.path, {value.name: value.shape for value in facts.inputs}, shapes)


def _require_models(paths: list[Path], found: list[Path], config: Config) -> None:
    """A directory to check that holds no model is a mistake (a wrong path in CI would pass
    forever), not an empty success. Files named one by one (the pre-commit hook's) may all
    turn out not to be models: that is a commit without models."""
    from bloatguard.discover import MODEL_SUFFIXES
    from bloatguard.errors import BloatguardError

    found = [located(path) for path in found]
    for path in paths:
        if not path.is_dir():
            continue
        directory = path.resolve()
        if not any(directory == model or directory in model.parents for model in found):
            filtered = (f", after include/exclude in {config.path}"
                        if config.path and (config.include or config.exclude) else "")
            raise BloatguardError(
                f"{path}: no model files found ({', '.join(sorted(MODEL_SUFFIXES))}{filtered}); "
                "check the path")


def _regular(path: Path) -> bool:
    import stat

    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _finish(results: list[ModelResult], config: Config, selection: Selection, latency: bool,
            jobs: int = 1, cache=None, progress: Callable[[int, int, str], None] | None = None) -> None:
    """The steps that need every model measured first: latency (interleaved, corrected for
    multiple comparisons across models), then the rules. The rules scan weights, the per-model
    work that grows with model size, so `jobs` runs them for several models at once; latency
    stays serial, since parallel timing would measure the contention."""
    _check_input_shapes(results, config)
    if config.drift_reference:
        _attach_reference(results, config)
    if latency:
        from bloatguard.measure.latency import attach_latency

        attach_latency(results, config, progress)
    rules = selection.rules(config)
    plans = [_ModelRules(result, rules, config, cache) for result in results if result.facts is not None]
    for plan, outcomes in zip(plans, _in_order([plan.call() for plan in plans], jobs)):
        plan.finish(outcomes)


def check_against_base(paths: list[Path], config: Config, selection: Selection, base_ref: str | None,
                       *, staged: bool = False, head_ref: str | None = None, fetch: bool = False,
                       use_cache: bool = True, latency: bool = False,
                       progress: Callable[[int, int, str], None] | None = None,
                       shard: Shard | None = None, jobs: int = 1) -> list[ModelResult]:
    """Measure each model and its base version; see gitbase for where each side comes from."""
    from bloatguard.cache import MetricCache
    from bloatguard.discover import AMBIGUOUS_SUFFIXES, MODEL_SUFFIXES, discover
    from bloatguard.gitbase import BlobWorkspace, GitRepo, pair_models

    repo = GitRepo(paths[0] if paths else Path.cwd())
    base = repo.resolve_base(base_ref, fetch=fetch) if base_ref else None
    head_commit = repo.resolve_base(head_ref) if head_ref else None
    cache = MetricCache(_cache_dir(repo, config) if use_cache else None, anchor=repo.root)
    head_files = discover(paths, config)
    scope = [repo.relpath(p) if p.resolve() != repo.root else "." for p in paths] or ["."]
    results: list[ModelResult] = []
    with BlobWorkspace() as workspace:
        macs = MacsBatch(layers=True)
        side = _BlobMeasurer(repo, workspace, cache, config, macs)
        if base is None:  # no commit yet: everything staged is new
            pairings = [pairing for file in head_files
                        if (pairing := _new_pairing(repo, file, staged, head_commit)) is not None]
        else:
            pairings = list(pair_models(
                repo, head_files, base, staged=staged, head_commit=head_commit, scope=scope,
                is_model_path=lambda p: Path(p).suffix.lower() in MODEL_SUFFIXES - AMBIGUOUS_SUFFIXES
                and config.is_included(repo.root / p)))
        _require_models(paths, [*head_files, *(repo.root / p.path for p in pairings
                                               if p.status == "deleted")], config)
        if shard is not None:
            pairings = [p for p in pairings if display_path(repo.root / p.path) in shard]
        for index, pairing in enumerate(pairings):
            if progress:
                progress(index, len(pairings), pairing.path)
            real_path = repo.root / pairing.path
            display = display_path(real_path)
            base_facts = base_file = None
            if pairing.base_blob is not None:
                base_path = repo.root / pairing.base_blob.path
                base_facts = side.measure(pairing.base_blob, base, display_path(base_path), base_path)
                base_file = side.file_loader(pairing.base_blob, base)
            result = ModelResult(path=display, facts=None, base=base_facts, status=pairing.status,
                                 base_path=display_path(repo.root / pairing.base_blob.path)
                                 if pairing.base_blob else None,
                                 settings_path=real_path, base_file=base_file)
            results.append(result)
            if pairing.status == "deleted":
                continue
            result.same_bytes = pairing.same_bytes
            if pairing.same_bytes and base_facts is not None and not base_facts.external_files:
                result.facts = base_facts  # same bytes: reuse, never measure twice
                result.head_file = pairing.head_file
            elif pairing.head_blob is not None:
                result.facts = side.measure(pairing.head_blob, head_commit or ":index", display, real_path)
                result.head_file = result.facts.file
                if result.head_file is None and latency:  # cached blob: write its bytes out to time it
                    result.head_file = side.file_loader(pairing.head_blob, head_commit or ":index")()
            else:
                result.facts = measure(pairing.head_file, config, display, macs=macs)
                result.head_file = pairing.head_file
        macs.run()
        _diff_layers(results)
        _finish(results, config, selection, latency, jobs, cache, progress)
    return results


def _diff_layers(results: list[ModelResult]) -> None:
    """Which layers changed, for every model whose bytes changed since the base."""
    from bloatguard.diff import layer_diff

    for result in results:
        base, head = result.base, result.facts
        if base is None or head is None or result.same_bytes or base.unreadable or head.unreadable \
                or base.weights_unknown or head.weights_unknown:
            continue
        result.diff = layer_diff(base, head)


def measure_blobs(repo, blobs: list, config: Config, *, use_cache: bool = True) -> list[ModelFacts]:
    """Facts of git blobs, given as (Blob, commit, display, path in the repository), through the
    metric cache: what `history` measures, one version of a model after another."""
    from bloatguard.cache import MetricCache
    from bloatguard.gitbase import BlobWorkspace

    cache = MetricCache(_cache_dir(repo, config) if use_cache else None, anchor=repo.root)
    with BlobWorkspace() as workspace:
        macs = MacsBatch(layers=True)
        side = _BlobMeasurer(repo, workspace, cache, config, macs)
        measured = [side.measure(blob, tree, display, real_path) for blob, tree, display, real_path in blobs]
        macs.run()
    return measured


def _cache_dir(repo, config: Config) -> Path:
    """`cache-dir` from the config, else a directory in the repository's git directory (shared
    by its worktrees), where no checkout can put files."""
    from bloatguard.cache import GIT_SUBDIR

    if config.cache_dir:
        return config.inside_root(config.cache_dir, "cache-dir")
    return Path(repo.repo.common_dir) / GIT_SUBDIR


def _new_pairing(repo, file: Path, staged: bool, head_commit: str | None):
    """A model with nothing to compare with; None when the head side does not have it."""
    from bloatguard.gitbase import Pairing

    path = repo.relpath(file)
    head_blob = (repo.tree_blob(head_commit, path) if head_commit
                 else repo.index_blob(path) if staged else None)
    if (head_commit or staged) and head_blob is None:
        return None
    return Pairing(path=path, status="new", head_file=file, head_blob=head_blob)


class _BlobMeasurer:
    """Measures git blobs through the metric cache, copying each (and its ONNX external data
    companions from the same tree) into a temporary directory only on a cache miss."""

    def __init__(self, repo, workspace, cache, config: Config, macs: MacsBatch) -> None:
        self.repo, self.workspace, self.cache, self.config = repo, workspace, cache, config
        self.macs = macs
        self._written: dict[tuple, tuple[Path, list[str]]] = {}

    def measure(self, blob, tree: str | None, display: str, real_path: Path) -> ModelFacts:
        settings = {"inputs": self.config.resolve(real_path).inputs}
        key = self.cache.key(blob.sha, settings)
        facts = self.cache.get(key, display)
        if facts is not None and facts.external_files:
            facts = None  # external data is part of the model: the key must name its blobs too
        if facts is None:
            model_file, companions = self._materialize(blob, tree)
            if companions:
                key = self.cache.key(blob.sha, {**settings, "companions": companions})
                facts = self.cache.get(key, display)
            if facts is None:
                facts = measure(model_file, self.config, display, settings_path=real_path,
                                macs=self.macs)
                # Cached once complete, before any rule adds a note to them.
                self.macs.then(functools.partial(self.cache.put, key, facts))
        facts.blob = BlobSource(key, self.file_loader(blob, tree))
        return facts

    def file_loader(self, blob, tree: str | None) -> Callable[[], Path | None]:
        """A function that materializes the blob (and its companions) on first call, for
        measurements that need the bytes even when the metrics came from the cache."""
        return lambda: self._materialize(blob, tree)[0]

    def _materialize(self, blob, tree: str | None) -> tuple[Path, list[str]]:
        """The blob and its external data companions written into the workspace, once per run
        (measuring it and timing it need the same bytes): its path and the companions' ids."""
        key = (blob.sha, blob.path, tree)
        if key not in self._written:
            target = self.workspace.new_dir() / Path(blob.path).name
            self.repo.write_blob(blob, target)
            self._written[key] = (target, self._companions(blob, tree, target))
        return self._written[key]

    def _companions(self, blob, tree: str | None, model_file: Path) -> list[str]:
        """Copy the external data files an ONNX blob names from the same tree; return their ids."""
        if model_file.suffix.lower() != ".onnx":
            return []
        from bloatguard.formats.onnx import external_locations

        ids = []
        parent = Path(blob.path).parent
        for location in external_locations(model_file):
            parts = Path(location).parts
            if Path(location).is_absolute() or ".." in parts or not parts:
                continue  # the reader rejects it with a clear message
            path = (parent / location).as_posix()
            companion = (self.repo.index_blob(path) if tree == ":index"
                         else self.repo.tree_blob(tree, path) if tree else None)
            if companion is not None:
                self.repo.write_blob(companion, model_file.parent / location)
                ids.append(f"{location}:{companion.sha}")
        return ids
