from __future__ import annotations

import re
from typing import Iterator

from bloatguard.rule import Finding, Rule, RuleContext, Severity

# Names a chat template has no business reaching: modules, code execution, introspection, and
# the Jinja globals whose `__init__.__globals__` leads to the os module (lipsum, cycler, joiner).
FORBIDDEN_NAMES = frozenset({
    "os", "sys", "subprocess", "builtins", "__builtins__", "importlib", "__import__", "eval",
    "exec", "compile", "open", "globals", "locals", "vars", "getattr", "setattr", "delattr",
    "lipsum", "cycler", "joiner", "self", "config", "request", "environ", "popen", "system",
})
DUNDER = re.compile(r"__\w+__")
MAX_TEMPLATE_CHARS = 1_000_000  # real templates are a few KB; parsing is not free
MAX_OFFENCES = 20


class UnsafeChatTemplate(Rule):
    """## What it does
    Parses the Jinja chat templates a GGUF file carries (`tokenizer.chat_template` and the named
    `tokenizer.chat_template.<name>` ones) with jinja2's sandboxed environment, without
    rendering them, and reports every expression that reaches for what a chat template never
    needs:

    - attributes or items whose name starts with an underscore (`__class__`, `__globals__`,
      `__subclasses__`, `__init__`, `_TemplateReference__context`), whether written as `x.attr`,
      `x["attr"]`, `x|attr("...")` or `map(attribute="...")`;
    - `attr` filters whose name is computed (`x|attr("__cla" ~ "ss__")`);
    - any string holding a dunder name (`"__import__"`);
    - names of modules and code-running builtins (`os`, `subprocess`, `sys`, `builtins`,
      `__import__`, `eval`, `exec`, `open`, `getattr`), and the Jinja globals `lipsum`,
      `cycler`, `joiner` and `self`, whose `__init__.__globals__` leads to the `os` module.

    A template too large or too deeply nested to parse is reported too: it cannot be checked.

    ## Why is this bad?
    Runtimes render the template on every chat request: llama-cpp-python rendered it with an
    unsandboxed jinja2 environment, so a GGUF file with
    `{{ ''.__class__.__mro__[1].__subclasses__() }}`-style expressions ran code on every machine
    that loaded the model (CVE-2024-34359). Legitimate templates only loop over messages and
    print their fields.

    ## Example
    ```text
    BG901 error: [unsafe-chat-template] tokenizer.chat_template reaches what a chat template
    never needs: `cycler.__init__.__globals__.os` (attribute __init__), ...
    ```

    ## Use instead
    Take the chat template from the model's original `tokenizer_config.json` and write it with
    `gguf-new-metadata --chat-template` (or re-convert with `convert_hf_to_gguf.py`); render
    templates only in a sandboxed environment (`jinja2.sandbox.ImmutableSandboxedEnvironment`).

    ## Fix safety
    No automatic fix: the template must come from a trusted source. This finding can never be
    waived.

    ## Options
    None.
    """

    code = "BG901"
    name = "unsafe-chat-template"
    summary = "GGUF Jinja chat templates that reach dunder attributes, modules or code execution"
    default_severity = Severity.ERROR
    reads = frozenset()  # the templates are in the facts

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        for key, template in sorted(ctx.facts.chat_templates.items()):
            finding = self._check_template(ctx, key, template)
            if finding is not None:
                yield finding

    def _check_template(self, ctx: RuleContext, key: str, template: str) -> Finding | None:
        if len(template) > MAX_TEMPLATE_CHARS:
            return self.finding(ctx, f"{key} is {len(template)} characters long, too large to "
                                "check (real chat templates are a few KB); a runtime would "
                                "render it unchecked", details={"key": key, "checked": False})
        problem, offences = scan_template(template)
        if problem is not None:
            return self.finding(ctx, f"{key} cannot be checked: {problem}; a runtime may still "
                                "render it", details={"key": key, "checked": False})
        if not offences:
            return None
        shown = ", ".join(f"`{expression}` ({reason})" for expression, reason in offences[:5])
        more = f" and {len(offences) - 5} more" if len(offences) > 5 else ""
        return self.finding(
            ctx, f"{key} reaches what a chat template never needs, which runtimes that render "
            f"templates unsandboxed execute (CVE-2024-34359): {shown}{more}",
            details={"key": key, "checked": True,
                     "expressions": [{"expression": e, "reason": r} for e, r in offences]})


def scan_template(template: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(why the template could not be parsed, or None; the offending expressions with why).
    The template is parsed by jinja2's sandboxed environment and never rendered."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    environment = ImmutableSandboxedEnvironment()
    try:
        tree = environment.parse(template)
    except TemplateSyntaxError as exc:
        return f"not valid Jinja (line {exc.lineno}: {exc.message})", []
    except RecursionError:
        return "it nests too deeply to parse", []
    offences: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()

    def report(node, reason: str) -> None:
        expression = _source(node)
        if (expression, reason) not in seen and len(offences) < MAX_OFFENCES:
            seen.add((expression, reason))
            offences.append((expression, reason))

    try:
        for node in tree.find_all(nodes.Node):
            _judge(node, nodes, report)
    except RecursionError:
        return "it nests too deeply to check", []
    return None, offences


def _judge(node, nodes, report) -> None:
    if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
        report(node, f"attribute {node.attr}")
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
            and isinstance(node.arg.value, str) and node.arg.value.startswith("_"):
        report(node, f"item {node.arg.value}")
    elif isinstance(node, nodes.Getitem) and _built_from_strings(node.arg, nodes):
        report(node, "item with a name built from strings")
    elif isinstance(node, nodes.Name) and node.name in FORBIDDEN_NAMES:
        report(node, f"name {node.name}")
    elif isinstance(node, nodes.Const) and isinstance(node.value, str) and (dunder := DUNDER.search(node.value)):
        report(node, f"string naming {dunder.group(0)}")
    elif isinstance(node, nodes.Filter) and node.name == "attr":
        name = node.args[0] if node.args else None
        if not isinstance(name, nodes.Const):
            report(node, "attr filter with a computed name")
        elif isinstance(name.value, str) and name.value.startswith("_"):
            report(node, f"attr filter on {name.value}")
    elif isinstance(node, (nodes.Filter, nodes.Test, nodes.Call)):
        for keyword in node.kwargs:
            value = keyword.value
            if keyword.key == "attribute" and isinstance(value, nodes.Const) \
                    and isinstance(value.value, str) and value.value.startswith("_"):
                report(node, f"attribute {value.value}")


def _built_from_strings(node, nodes) -> bool:
    """`'__glob' + 'als__'`, `'__glob' ~ 'als__'`: a key spelled in pieces to hide it."""
    if isinstance(node, (nodes.Add, nodes.Concat)):
        parts = [node.left, node.right] if isinstance(node, nodes.Add) else node.nodes
        return all(isinstance(p, nodes.Const) and isinstance(p.value, str)
                   or _built_from_strings(p, nodes) for p in parts)
    return False


def _source(node) -> str:
    """The expression as Jinja would spell it, near enough to find it in the template."""
    from jinja2 import nodes

    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_source(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return f"{_source(node.node)}[{_source(node.arg)}]"
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Call):
        return f"{_source(node.node)}(...)"
    if isinstance(node, nodes.Filter):
        inner = _source(node.node) if node.node is not None else ""
        args = ", ".join(_source(arg) for arg in node.args)
        return f"{inner}|{node.name}({args})"
    if isinstance(node, nodes.Concat):
        return " ~ ".join(_source(part) for part in node.nodes)
    if isinstance(node, nodes.Add):
        return f"{_source(node.left)} + {_source(node.right)}"
    if isinstance(node, nodes.Tuple):
        return "(" + ", ".join(_source(item) for item in node.items) + ")"
    return type(node).__name__
