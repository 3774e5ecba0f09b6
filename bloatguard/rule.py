"""The rule interface: what a rule declares, what it sees, and what it reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol

from bloatguard.settings import ResolvedSettings

if TYPE_CHECKING:
    from pathlib import Path

    from bloatguard.facts import ModelFacts, WeightView
    from bloatguard.opgraph import OpGraph


class RuleConfig(Protocol):
    """What a rule reads of the config (bloatguard.config.Config): its own options, and the
    file's path for messages. A protocol, so the rule interface does not import the config
    module, which imports the rule registry."""

    path: Path | None

    def rule_options(self, rule_name: str) -> dict[str, Any]: ...


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True)
class Option:
    """One option under `[tool.bloatguard.rules.<name>]`, declared once: how the config value is
    parsed, the default, and the line `bloatguard explain` prints for it."""

    parse: Callable[[Any], Any]
    default: Any
    doc: str
    shown: str = ""  # the default as a config would spell it ("64 KiB"); else repr-like

    def describe(self, name: str) -> str:
        shown = self.shown or (str(self.default).lower() if isinstance(self.default, bool)
                               else repr(self.default))
        import textwrap

        return textwrap.fill(f"- `{name}` (default `{shown}`): {self.doc}", width=96,
                             subsequent_indent="  ")


@dataclass
class Fix:
    """A hint for `bloatguard fix`: which transform would address a finding, and whether it keeps
    the model's outputs identical (`safe`) or changes them (quantization, pruning)."""

    kind: str
    safe: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "safe": self.safe, **self.details}


@dataclass
class Finding:
    code: str
    rule: str
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    fix: Fix | None = None
    # Set by a waiver (bloatguard.waivers): {reason, expires, source}. The finding keeps its
    # severity but does not fail the run.
    accepted: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Finding:
        """The inverse of to_json (for merged reports and worker processes)."""
        fix = entry.get("fix")
        if fix is not None:
            details = {key: value for key, value in fix.items() if key not in ("kind", "safe")}
            fix = Fix(kind=fix["kind"], safe=bool(fix["safe"]), details=details)
        return cls(code=entry["code"], rule=entry["rule"], severity=Severity(entry["severity"]),
                   message=entry["message"], details=entry.get("details") or {}, fix=fix,
                   accepted=entry.get("accepted"))

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "details": self.details,
            "fix": None if self.fix is None else self.fix.to_json(),
            **({"accepted": self.accepted} if self.accepted is not None else {}),
        }


@dataclass
class RuleContext:
    """What a rule sees for one model: its facts, the base version's facts (with --base), and the
    settings that apply to this model's path."""

    facts: ModelFacts
    base: ModelFacts | None
    settings: ResolvedSettings
    config: RuleConfig
    # The model at the config's drift reference, and that reference's name ("v1.0").
    reference: ModelFacts | None = None
    reference_name: str | None = None
    _values: Any = field(default=None, repr=False)
    _samples: Any = field(default=None, repr=False)

    @property
    def budgets(self) -> dict[str, Any]:
        return self.settings.budgets

    def values(self):
        """Tensor values of this model (bloatguard.values.TensorValues), opened on first use and
        shared by every rule; `available` is False when the model's bytes cannot be read."""
        if self._values is None:
            from bloatguard.values import TensorValues

            self._values = TensorValues(self.facts)
        return self._values

    def op_graph(self) -> OpGraph | None:
        """The model's operator graph in no format's terms (bloatguard.opgraph.OpGraph: scopes,
        nodes with plain attributes, consumers, liveness, constants), built by the reader's
        handle on first use and shared by the rules; None for a format without an op graph,
        an unreadable model, or facts restored without their model."""
        facts = self.facts
        if facts.unreadable or not hasattr(facts.handle, "op_graph"):
            return None
        return facts.handle.op_graph(facts)

    def weight_uses(self) -> WeightView | None:
        """Where the stored weights go, in no format's terms (bloatguard.facts.WeightView: the
        layers each weight feeds and their kind, what nothing reads, dead operators), from the
        graph or, without one, from the weights' names; None when the model's reader left none
        (an unreadable model, or facts restored without their model)."""
        return self.facts.weight_view()

    def samples(self):
        """The configured sample inputs of this model (bloatguard.samples.Samples), loaded once;
        None without samples. Raises ConfigError for a file that cannot be used."""
        if self.settings.samples is None:
            return None
        if self._samples is None:
            from bloatguard import samples

            self._samples = samples.load(self.settings.samples, self.facts.inputs)
        return self._samples

    def permutation_effects(self, arrays, columns: dict[str, list[int]]) -> dict[str, list[float]]:
        """How much the outputs move when each listed input column is shuffled across the
        sample rows, measured on onnxruntime in an isolated child (bloatguard.measure.
        permutation). Raises bloatguard.measure.permutation.PermutationError."""
        from bloatguard.measure.permutation import permutation_effects

        return permutation_effects(self.facts.file, arrays, columns)

    def close(self) -> None:
        if self._values is not None:
            self._values.close()


class Rule:
    """Base class of every rule. Subclasses set the metadata and implement `check`.

    The class docstring is the rule's documentation (`bloatguard explain CODE` prints it), written
    in the ruff style: What it does / Why is this bad? / Example / Use instead / Fix safety / Options.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    default_severity: ClassVar[Severity] = Severity.WARNING
    # Per-rule options accepted under [tool.bloatguard.rules.<name>]; "severity" is accepted
    # for every rule. `explain` lists them under the docstring's "## Options".
    options: ClassVar[dict[str, Option]] = {}
    # What the findings depend on besides the model's facts, the rule's options and the settings
    # for the model's path: "model" (its bytes: weights, graph, samples run through it), "base"
    # (the base version's facts, and the drift reference's) and "latency" (this run's timings). The engine caches the
    # findings of a built-in rule that reads at most "model", keyed by the model's git blob, and
    # reads the model again for it when they are not cached. A rule that declares nothing is
    # taken to read everything: never cached, never handed facts without their model.
    reads: ClassVar[frozenset[str]] = frozenset({"model", "base", "latency"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        raise NotImplementedError

    def severity(self, ctx: RuleContext) -> Severity:
        configured = ctx.config.rule_options(self.name).get("severity")
        return Severity(configured) if configured else self.default_severity

    def option(self, ctx: RuleContext, key: str) -> Any:
        """The configured value of one of `options`, or its default."""
        return ctx.config.rule_options(self.name).get(key, self.options[key].default)

    @classmethod
    def documentation(cls) -> str:
        """The docstring, with a line per declared option at the top of its "## Options"."""
        import inspect

        doc = inspect.cleandoc(cls.__doc__ or "")
        if not cls.options:
            return doc
        lines = "\n".join(option.describe(name) for name, option in cls.options.items())
        if "## Options" not in doc:
            return f"{doc}\n\n## Options\n{lines}"
        head, _, tail = doc.partition("## Options")
        tail = tail.strip("\n")
        return f"{head}## Options\n{lines}" + (f"\n{tail}" if tail else "")

    def finding(self, ctx: RuleContext, message: str, *, details: dict[str, Any] | None = None,
                fix: Fix | None = None, severity: Severity | None = None) -> Finding:
        return Finding(code=self.code, rule=self.name, severity=severity or self.severity(ctx),
                       message=message, details=details or {}, fix=fix)
