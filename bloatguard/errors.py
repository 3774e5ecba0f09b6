"""Errors that end up as one-line messages, never as tracebacks."""

from __future__ import annotations


class BloatguardError(Exception):
    """Something bloatguard cannot evaluate: usage, config or environment. Exit code 2."""


class ConfigError(BloatguardError):
    """A config file that cannot be used; the message names the file and the key."""


class UnreadableModel(Exception):
    """A model file a reader cannot turn into facts.

    `cause` says what is wrong with the file, `remedy` what the user can do about it. The engine
    turns this into a BG000 finding so that the other models are still measured.
    """

    def __init__(self, cause: str, remedy: str = "") -> None:
        super().__init__(cause)
        self.cause = cause
        self.remedy = remedy
