"""A per-user secret key, so bloatguard can tell files it wrote itself from files someone else
planted (a metric cache entry committed to the repository, say).

The key lives in the user's cache directory, never in a checkout: `${XDG_CACHE_HOME:-~/.cache}/
bloatguard/key`, 32 random bytes, created once with mode 0600. When it cannot be read or created
(no home directory, a read-only disk), `sign` returns None and `verify` refuses everything: the
callers then lose speed (no cache), never safety.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32


def key_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bloatguard" / "key"


@functools.lru_cache(maxsize=None)
def _key_at(path: Path) -> bytes | None:
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another bloatguard created it first
        try:
            return _read_key(path)
        except OSError:
            return None
    except OSError:
        return None
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key)
    return key


def _read_key(path: Path) -> bytes | None:
    """The key, if it is a regular file of the right size that only this user can read."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid()
                or info.st_mode & 0o077 or info.st_size != KEY_BYTES):
            return None
        key = handle.read(KEY_BYTES + 1)
    return key if len(key) == KEY_BYTES else None


def user_key() -> bytes | None:
    """This user's key, created on first use; None when it cannot be had."""
    return _key_at(key_path())


def sign(data: bytes) -> str | None:
    """An HMAC-SHA256 of `data` under the user's key (hex), or None without a key."""
    key = user_key()
    return None if key is None else hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(data: bytes, signature: object) -> bool:
    """Whether `signature` is this user's signature of `data`."""
    expected = sign(data)
    return (expected is not None and isinstance(signature, str)
            and hmac.compare_digest(expected, signature))
