"""The per-user signing key: created once, private, outside any checkout; a key that anyone else
could have written or read is refused, never used or silently replaced."""

from __future__ import annotations

import os
import stat

import pytest

from bloatguard import secret


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_key_is_created_once_private_and_reused(cache):
    signature = secret.sign(b"payload")
    key = cache / "bloatguard" / "key"
    assert secret.key_path() == key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == secret.KEY_BYTES
    assert secret.sign(b"payload") == signature  # the same key, not a new one per call
    assert sorted(p.name for p in key.parent.iterdir()) == ["key"]  # no draft left behind


def test_verify_accepts_exactly_what_was_signed(cache):
    signature = secret.sign(b"payload")
    assert secret.verify(b"payload", signature)
    assert not secret.verify(b"payload!", signature)
    assert not secret.verify(b"payload", signature[:-1] + ("0" if signature[-1] != "0" else "1"))
    for junk in (None, 42, ["x"], "", "é" * 64):
        assert not secret.verify(b"payload", junk)


def test_without_a_key_nothing_verifies_and_nothing_is_created(cache):
    assert not secret.verify(b"payload", "0" * 64)
    assert not cache.exists()


def test_another_users_key_is_never_trusted(cache):
    """A new key (another user's, another machine's) does not vouch for old signatures."""
    signature = secret.sign(b"payload")
    (cache / "bloatguard" / "key").unlink()
    secret.user_key()
    assert not secret.verify(b"payload", signature)


@pytest.mark.parametrize("plant", ["readable by others", "symlink", "short"])
def test_an_unsafe_key_file_is_refused_not_used(cache, tmp_path, plant):
    key = cache / "bloatguard" / "key"
    key.parent.mkdir(parents=True)
    if plant == "readable by others":
        key.write_bytes(b"k" * secret.KEY_BYTES)
        key.chmod(0o644)  # what a checked-out file looks like
    elif plant == "symlink":
        target = tmp_path / "known"
        target.write_bytes(b"k" * secret.KEY_BYTES)
        target.chmod(0o600)
        key.symlink_to(target)
    else:
        key.write_bytes(b"k")
        key.chmod(0o600)
    before = os.lstat(key)
    with pytest.raises(secret.KeyUnavailable, match="remove it"):
        secret.sign(b"payload")
    assert not secret.verify(b"payload", "0" * 64)
    assert os.lstat(key).st_ino == before.st_ino  # refused, not replaced


def test_relative_directories_never_place_the_key_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert secret.key_path() == tmp_path / ".cache" / "bloatguard" / "key"
    monkeypatch.setenv("HOME", "")
    assert secret.key_path().is_absolute()
