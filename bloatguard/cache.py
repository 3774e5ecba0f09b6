"""Measurements and rule outcomes keyed by git blob id, so an unchanged model is measured once.

Two kinds of entries, both JSON written atomically:

- facts: a model's measurements, keyed by its blob, bloatguard's version and the settings that
  change a measurement (input shapes for MACs);
- outcomes: one rule's findings and notes on that model, keyed by the facts' key, the rule, its
  options and every setting that applies to the model's path (samples by content).

A cached entry stands in only for what it fully determines (the engine runs every other rule
fresh), so a warm run reports exactly what a cold one does.

The cache is untrusted input too. It lives in the repository's git directory by default, where
no checkout can put files; every entry carries an HMAC under a per-user key
(bloatguard.secret), so an entry someone else wrote, committed or forged is ignored; files are
opened without following symlinks and only when they are regular files of bounded size. Facts
are cached only for formats whose reading is not itself a security verdict: a pickle is always
scanned again, and an unreadable model is always read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from bloatguard.atomic import replace_file
from bloatguard.facts import FACTS_SCHEMA, ModelFacts, facts_from_dict, facts_to_dict

# Under the repository's git directory (`git rev-parse --git-common-dir`).
GIT_SUBDIR = "bloatguard-cache"
# Formats whose facts may come from the cache: reading them decides no security verdict (BG000,
# BG900; GGUF's chat templates decide BG901, so GGUF is read every time, like pickles).
CACHEABLE_FORMATS = frozenset({"onnx", "safetensors", "tflite"})
MAX_ENTRY_BYTES = 64 * 2**20


class MetricCache:
    def __init__(self, directory: Path | None, *, anchor: Path | None = None) -> None:
        """`anchor`: a directory `directory` lies in (the repository); no directory between
        them may be a symlink, so a committed link cannot send the cache elsewhere."""
        self.directory = directory if directory is not None and _no_links(directory, anchor) else None

    @staticmethod
    def key(blob_sha: str, settings: dict[str, Any]) -> str:
        return _digest({"blob": blob_sha, "settings": settings})

    @staticmethod
    def outcome_key(facts_key: str, code: str, options: dict[str, Any], settings) -> str:
        """The key of one rule's outcome on the model whose facts have `facts_key`.
        `settings` is the model's ResolvedSettings: everything a rule may read besides the model."""
        fields = {name: value for name, value in vars(settings).items() if name != "samples"}
        fields["samples"] = _file_digest(settings.samples)
        return _digest({"facts": facts_key, "rule": code, "options": options, "settings": fields})

    def get(self, key: str, display: str) -> ModelFacts | None:
        payload = self._read(key)
        if payload is None:
            return None
        try:
            facts = facts_from_dict(display, payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # a foreign entry: measure again and overwrite it
        return facts if facts.format in CACHEABLE_FORMATS and not facts.unreadable else None

    def put(self, key: str, facts: ModelFacts) -> None:
        if facts.format in CACHEABLE_FORMATS and not facts.unreadable:
            self._write(key, facts_to_dict(facts))

    def get_outcome(self, key: str) -> dict[str, Any] | None:
        return self._read(key)

    def put_outcome(self, key: str, outcome: dict[str, Any]) -> None:
        self._write(key, outcome)

    # --- entries -------------------------------------------------------------------------------

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def _read(self, key: str) -> Any:
        """The payload stored under `key`, or None when absent, damaged, foreign or unsigned."""
        from bloatguard import secret

        if self.directory is None:
            return None
        try:
            raw = _read_regular(self._file(key))
            entry = json.loads(raw)
            text = entry["payload"]
            if (entry.get("key") != key or not isinstance(text, str)
                    or not secret.verify(_signed(key, text), entry.get("signature"))):
                return None
            return json.loads(text)
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None

    def _write(self, key: str, payload: Any) -> None:
        from bloatguard import secret

        if self.directory is None:
            return
        text = json.dumps(payload)  # key order kept: reports print details in it
        try:
            signature = secret.sign(_signed(key, text))
        except secret.KeyUnavailable:
            return  # no key: nothing this user writes could be told from a forgery
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.parent.is_symlink():
                return
            self._ensure_gitignore()
            entry = json.dumps({"key": key, "payload": text, "signature": signature})
            replace_file(target, entry.encode("utf-8"), sync=False)
        except OSError:
            pass  # a read-only or full disk only costs speed

    def _ensure_gitignore(self) -> None:
        """A cache put inside a working tree (`cache-dir`) ignores itself. O_EXCL never follows
        a planted link, dangling or not, to create a file elsewhere."""
        assert self.directory is not None  # called by _write, which checked
        try:
            descriptor = os.open(self.directory / ".gitignore",
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except OSError:
            return
        with os.fdopen(descriptor, "w") as handle:
            handle.write("# created by bloatguard\n*\n")


def _digest(material: dict[str, Any]) -> str:
    from bloatguard import __version__

    text = json.dumps({**material, "version": __version__, "schema": FACTS_SCHEMA},
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def _signed(key: str, text: str) -> bytes:
    return f"{key}\0{text}".encode()


def _file_digest(path: Path | None) -> str | None:
    """A samples file by content: editing it must re-run the rules that read it."""
    if path is None:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return digest.hexdigest()


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes, without following a symlink and up to MAX_ENTRY_BYTES (a link to
    /dev/zero or a FIFO is refused, not read forever)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
            raise OSError("not a regular file of a cache entry's size")
        return handle.read(MAX_ENTRY_BYTES + 1)


def _no_links(directory: Path, anchor: Path | None) -> bool:
    """Whether neither `directory` nor a directory between it and `anchor` is a symlink."""
    directory = Path(os.path.abspath(directory))
    below = Path(os.path.abspath(anchor)) if anchor is not None else None
    chain = [directory] + [path for path in directory.parents if below in path.parents]
    return not any(path.is_symlink() for path in chain)
