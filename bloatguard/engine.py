"""The pipeline: find -> load -> measure -> rules. Reports and the CLI sit on top of this."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bloatguard.config import Config
from bloatguard.facts import ModelFacts
from bloatguard.registry import all_rules, selector_matches
from bloatguard.rule import Finding, Rule, RuleContext, Severity


@dataclass
class ModelResult:
    path: str
    facts: ModelFacts | None  # None for a model deleted since the base
    base: ModelFacts | None = None
    status: str | None = None  # new / modified / renamed / deleted / unchanged, with --base
    base_path: str | None = None
    findings: list[Finding] = field(default_factory=list)
    # Where the model lives in the repository (settings are resolved for this path), and where
    # each side's bytes can be read for measurements that need a file (latency, fixes).
    settings_path: Path | None = None
    same_bytes: bool = False  # head and base are the same blob (unchanged, or a pure rename)
    head_file: Path | None = None
    base_file: Callable[[], Path | None] | None = field(default=None, repr=False)


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
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
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

    def __init__(self) -> None:
        self.jobs: list[tuple[Path, dict[str, list[int]]]] = []
        self.owners: list[list[ModelFacts]] = []  # the facts each job's count belongs to
        self.index: dict[str, int] = {}
        self.queues: list[tuple[int, object]] = []  # (index of its first job, isolate.Queue)
        self.started = 0
        self.done_callbacks: list[Callable[[], None]] = []

    def start(self, jobs: list[tuple[Path, dict[str, list[int]]]] = ()) -> None:
        """Start counting the given (path, input shapes) jobs and any added so far. A job's
        count is kept only for facts later `add`ed with the same path and shapes."""
        for path, shapes in jobs:
            if _job_key(path, shapes) not in self.index:
                self._new_job(path, shapes)
        pending = self.jobs[self.started:]
        if pending:
            import onnx  # noqa: F401 - imported once here, inherited by every child

            from bloatguard.isolate import Queue
            from bloatguard.measure import compute  # noqa: F401

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
                    _store_macs(facts, outcome)
        # Counted and stored: facts added from now on need jobs of their own.
        self.jobs, self.owners, self.index, self.started = [], [], {}, 0
        callbacks, self.done_callbacks = self.done_callbacks, []
        for callback in callbacks:
            callback()


def _job_key(path: Path, input_shapes: dict[str, list[int]]) -> str:
    import json

    return json.dumps([str(path), input_shapes], sort_keys=True)


def _count_file(job) -> dict:
    from dataclasses import asdict

    from bloatguard.formats.onnx import read_proto
    from bloatguard.measure.compute import count_macs

    path, shapes = job
    return asdict(count_macs(read_proto(path), shapes))


def _store_macs(facts: ModelFacts, outcome) -> None:
    if isinstance(outcome, Exception):
        facts.note(f"MACs not measured: shape inference {outcome}")
        return
    facts.macs = outcome["macs"]
    facts.extra["macs_by_op"] = outcome["by_op"]
    for note in outcome["notes"]:
        facts.note(note)


def _findings(facts: ModelFacts, base: ModelFacts | None, path: Path, config: Config,
              rules: list[Rule]) -> tuple[list[Finding], list[str]]:
    """apply_rules for one model, returning the findings and the facts' notes (a rule that
    failed leaves a note, which a worker's copy of the facts would otherwise keep)."""
    result = ModelResult(path=facts.path, facts=facts, base=base)
    apply_rules(result, path, config, rules)
    return result.findings, facts.notes


def _findings_as_json(call: tuple) -> list:
    findings, notes = _findings(*call)
    return [[finding.to_json() for finding in findings], notes]


def _in_order(calls: list[tuple], jobs: int) -> list[tuple[list[Finding], list[str]]]:
    """_findings for every call, in `jobs` forked workers when jobs > 1, in the calls' order.

    Workers answer through bloatguard.isolate's JSON pipe, not pickle: they read untrusted
    weights, and a worker subverted through a native bug must not make the parent run code. A
    call whose worker crashed is checked again here, as jobs=1 would."""
    if jobs <= 1 or len(calls) <= 1:
        return [_findings(*call) for call in calls]
    from bloatguard.isolate import map_isolated

    answers = map_isolated(_findings_as_json, calls, workers=min(jobs, len(calls)),
                           timeout=600 + 120 * len(calls))
    return [_findings(*call) if isinstance(answer, Exception)
            else ([Finding.from_json(entry) for entry in answer[0]], answer[1])
            for call, answer in zip(calls, answers)]


def apply_rules(result: ModelResult, path: Path, config: Config, rules: list[Rule]) -> None:
    settings = config.resolve(path)
    context = RuleContext(facts=result.facts, base=result.base, settings=settings, config=config)
    try:
        for rule in rules:
            if any(selector_matches(code, rule) for code in settings.ignored):
                continue
            try:
                result.findings.extend(rule.check(context))
            except Exception as exc:  # one rule's bug on one odd model must not sink the run
                if os.environ.get("BLOATGUARD_DEBUG"):
                    raise
                result.facts.note(f"{rule.code} {rule.name} could not check this model "
                                  f"({type(exc).__name__}: {exc}); set BLOATGUARD_DEBUG=1 for details")
    finally:
        context.close()


def check(paths: list[Path], config: Config, selection: Selection,
          progress: Callable[[int, int, str], None] | None = None,
          latency: bool = False, shard: Shard | None = None, jobs: int = 1) -> list[ModelResult]:
    from bloatguard.discover import discover

    results = []
    models = [path for path in discover(paths, config) if shard is None or display_path(path) in shard]
    macs = MacsBatch()
    # Count MACs while the models are read: shape inference is most of a static check's time.
    macs.start([(path, config.resolve(path).inputs) for path in models if path.suffix.lower() == ".onnx"])
    for index, path in enumerate(models):
        if progress:
            progress(index, len(models), display_path(path))
        results.append(ModelResult(path=display_path(path), facts=measure(path, config, macs=macs),
                                   settings_path=path, head_file=path))
    macs.run()
    _finish(results, config, selection, latency, jobs)
    return results


def _finish(results: list[ModelResult], config: Config, selection: Selection, latency: bool,
            jobs: int = 1) -> None:
    """The steps that need every model measured first: latency (interleaved, corrected for
    multiple comparisons across models), then the rules. The rules scan weights, the per-model
    work that grows with model size, so `jobs` runs them for several models at once; latency
    stays serial, since parallel timing would measure the contention."""
    if latency:
        from bloatguard.measure.latency import attach_latency

        attach_latency(results, config)
    rules = selection.rules(config)
    checked = [result for result in results if result.facts is not None]
    calls = [(result.facts, result.base, result.settings_path or Path(result.path), config, rules)
             for result in checked]
    for result, (findings, notes) in zip(checked, _in_order(calls, jobs)):
        result.findings.extend(findings)
        for note in notes:
            result.facts.note(note)


def check_against_base(paths: list[Path], config: Config, selection: Selection, base_ref: str | None,
                       *, staged: bool = False, head_ref: str | None = None, fetch: bool = False,
                       use_cache: bool = True, latency: bool = False,
                       progress: Callable[[int, int, str], None] | None = None,
                       shard: Shard | None = None, jobs: int = 1) -> list[ModelResult]:
    """Measure each model and its base version; see gitbase for where each side comes from."""
    from bloatguard.cache import DEFAULT_DIR, MetricCache
    from bloatguard.discover import AMBIGUOUS_SUFFIXES, MODEL_SUFFIXES, discover
    from bloatguard.gitbase import BlobWorkspace, GitRepo, pair_models

    repo = GitRepo(paths[0] if paths else Path.cwd())
    base = repo.resolve_base(base_ref, fetch=fetch) if base_ref else None
    head_commit = repo.resolve_base(head_ref) if head_ref else None
    cache_dir = (config.root / config.cache_dir if config.cache_dir else repo.root / DEFAULT_DIR)
    cache = MetricCache(cache_dir if use_cache else None)
    head_files = discover(paths, config)
    scope = [repo.relpath(p) if p.resolve() != repo.root else "." for p in paths] or ["."]
    results: list[ModelResult] = []
    with BlobWorkspace() as workspace:
        macs = MacsBatch()
        side = _BlobMeasurer(repo, workspace, cache, config, macs)
        if base is None:  # no commit yet: everything staged is new
            pairings = [pairing for file in head_files
                        if (pairing := _new_pairing(repo, file, staged, head_commit)) is not None]
        else:
            pairings = list(pair_models(
                repo, head_files, base, staged=staged, head_commit=head_commit, scope=scope,
                is_model_path=lambda p: Path(p).suffix.lower() in MODEL_SUFFIXES - AMBIGUOUS_SUFFIXES
                and config.is_included(repo.root / p)))
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
        _finish(results, config, selection, latency, jobs)
    return results


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
        cached_key = self.cache.key(blob.sha, settings)
        cached = self.cache.get(cached_key, display)
        if cached is not None and not cached.external_files:
            return cached
        model_file, companions = self._materialize(blob, tree)
        key = self.cache.key(blob.sha, {**settings, "companions": companions}) if companions else cached_key
        if companions:
            cached = self.cache.get(key, display)
            if cached is not None:
                return cached
        facts = measure(model_file, self.config, display, settings_path=real_path, macs=self.macs)
        self.macs.then(lambda: self.cache.put(key, facts))  # cache only complete measurements
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


def summarize(results: list[ModelResult]) -> dict[str, int]:
    findings = [f for r in results for f in r.findings]
    return {
        "models": len(results),
        "errors": sum(f.severity is Severity.ERROR for f in findings),
        "warnings": sum(f.severity is Severity.WARNING for f in findings),
        "unreadable": sum(f.code == "BG000" for f in findings),
    }


def exit_code(results: list[ModelResult]) -> int:
    """2 when a model could not be evaluated, 1 for an error-level finding, else 0."""
    summary = summarize(results)
    if summary["unreadable"]:
        return 2
    return 1 if summary["errors"] else 0
