"""A per-user secret, to tell files bloatguard wrote from files planted in a checkout.

Anything inside a repository can come from whoever can push to it. Where bloatguard must trust
a file it wrote on an earlier run (fix's recovery journals, the metric cache), it signs the
file's content with an HMAC under a key only this user on this machine holds:

    signature = sign(payload)        # a hex string, stored next to the payload
    if verify(payload, signature):   # True only for these exact bytes under this user's key
        ...

Put into `payload` everything the signature vouches for, including where the file belongs (its
absolute path, say): a signed file copied somewhere else must not be trusted there.

The key is KEY_BYTES random bytes in `${XDG_CACHE_HOME:-~/.cache}/bloatguard/key`, outside any
checkout, created with O_EXCL and mode 0600. A key file that is not a regular file owned by
this user and readable by nobody else is refused (KeyUnavailable), never used or replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from bloatguard.errors import BloatguardError

KEY_BYTES = 32


class KeyUnavailable(BloatguardError):
    """The key cannot be created or is not safe to use; the message says why and what to do."""


def key_path() -> Path:
    """Where the key lives. Relative directories are ignored (XDG says so for XDG_CACHE_HOME;
    an empty HOME would otherwise put the key in the working directory, maybe a checkout)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):
        cache = os.path.join(_home(), ".cache")
    return Path(cache) / "bloatguard" / "key"


def _home() -> str:
    home = os.environ.get("HOME", "")
    if not os.path.isabs(home):
        try:
            import pwd

            home = pwd.getpwuid(os.getuid()).pw_dir
        except (ImportError, KeyError):
            home = ""
    if not os.path.isabs(home):
        raise KeyUnavailable("bloatguard has no place for its signing key: HOME is not an "
                             "absolute path; set XDG_CACHE_HOME to a private directory")
    return home


def user_key() -> bytes:
    """This user's key, created on first use."""
    path = key_path()
    key = _read_key(path)
    if key is None:
        _create_key(path)
        key = _read_key(path)
    if key is None:  # pragma: no cover - created above, or by a concurrent run
        raise KeyUnavailable(f"the signing key {path} vanished while it was being created; run again")
    return key


def sign(data: bytes) -> str:
    """The HMAC-SHA256 of `data` under this user's key, as hex. Raises KeyUnavailable."""
    return hmac.new(user_key(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, signature: object) -> bool:
    """Whether `signature` is `sign(data)`. False (never an exception) for anything else,
    including when this user has no usable key: then nothing was signed by it."""
    try:
        key = _read_key(key_path())
    except KeyUnavailable:
        return False
    if key is None or not isinstance(signature, str):
        return False
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


def _read_key(path: Path) -> bytes | None:
    """The key at `path`, None if there is none yet."""
    try:
        # O_NOFOLLOW: a symlink planted at the key's path is refused, not followed.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyUnavailable(f"the signing key {path} cannot be opened ({exc.strerror}); "
                             f"remove it, and bloatguard creates a new one") from None
    try:
        info = os.fstat(descriptor)
        problem = _unsafe(info)
        if problem:
            raise KeyUnavailable(f"the signing key {path} {problem}, so it cannot be trusted; "
                                 f"remove it, and bloatguard creates a new one")
        key = os.read(descriptor, KEY_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(key) != KEY_BYTES:
        raise KeyUnavailable(f"the signing key {path} holds {len(key)} bytes instead of {KEY_BYTES}; "
                             f"remove it, and bloatguard creates a new one")
    return key


def _unsafe(info: os.stat_result) -> str | None:
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return "belongs to another user"
    if info.st_mode & 0o077:
        return f"is readable or writable by others (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _create_key(path: Path) -> None:
    """Write a fresh key beside `path`, then link it into place: the link fails if another
    run created the key first (its key wins), and nobody ever sees a half-written key."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".key-{os.getpid()}-{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                             0o600)
        try:
            os.write(descriptor, secrets.token_bytes(KEY_BYTES))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    except OSError as exc:
        raise KeyUnavailable(f"cannot create the signing key {path} ({exc.strerror}); set "
                             f"XDG_CACHE_HOME to a writable directory outside the checkout") from None
