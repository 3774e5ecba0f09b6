"""Model paths an attacker's pull request controls (issue 20, item 9): symlinks, FIFOs, devices.

A model path, and every file bloatguard opens for it, must be a regular file inside the checked
tree. A symlink is reported by its own name (BG000) with nothing of its target: not the target's
path, not its size (file_size is 0), not its first bytes. A FIFO or a device is reported without
being opened: opening a FIFO blocks until a writer comes, which in CI is never. The FIFO cases
run the real CLI in a subprocess, so a hang is a timeout failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bloatguard.formats import read_model

SECRET = b"\x80\x02}q\x00X\x06\x00\x00\x00secretq\x01K\x2as."  # a pickle outside the tree

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or not hasattr(os, "mkfifo"),
                                reason="needs POSIX symlinks and FIFOs")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """The checked tree, `repo/`, and a secret file outside it that links point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "credentials.pt"
    secret.write_bytes(SECRET)
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    monkeypatch.chdir(repo)
    return repo, secret


def check(*args) -> tuple[int, dict, str]:
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", *map(str, args),
                             "--output-format", "json", "--no-latency", "--no-cache"],
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def assert_reported_as_link_only(model: dict, link: str, secret: Path) -> None:
    assert model["path"] == link
    assert model["metrics"]["file_size"] == 0
    (finding,) = model["findings"]
    assert finding["code"] == "BG000" and "symbolic link" in finding["message"]
    text = json.dumps(model)
    assert str(secret.parent) not in text and "credentials" not in text
    assert str(len(SECRET)) not in text and "secret" not in text


@pytest.mark.parametrize("suffix", [".pt", ".onnx", ".safetensors", ".bin"])
def test_symlinked_model_in_a_directory_is_reported_not_followed(tree, suffix, run_cli):
    repo, secret = tree
    os.symlink(secret, repo / "models" / f"model{suffix}")
    code, out, err = run_cli("check", "models", "--output-format", "json", "--no-latency",
                             "--no-cache")
    report = json.loads(out)
    assert code == 2 and len(report["models"]) == 1
    assert_reported_as_link_only(report["models"][0], f"models/model{suffix}", secret)
    assert "credentials" not in err and str(secret.parent) not in err


def test_symlink_named_on_the_command_line_is_reported_not_followed(tree, run_cli):
    repo, secret = tree
    os.symlink(secret, repo / "models" / "model.pt")
    os.symlink(secret.parent / "missing.pt", repo / "models" / "dangling.pt")
    code, out, _ = run_cli("check", "models/model.pt", "models/dangling.pt", "--output-format",
                           "json", "--no-latency", "--no-cache")
    models = json.loads(out)["models"]
    assert code == 2
    assert_reported_as_link_only(models[0], "models/dangling.pt", secret)
    assert_reported_as_link_only(models[1], "models/model.pt", secret)


def test_link_to_a_file_inside_the_tree_is_named_by_the_link(tree, run_cli):
    repo, _ = tree
    (repo / "models" / "real.pt").write_bytes(SECRET)
    os.symlink(repo / "models" / "real.pt", repo / "models" / "alias.pt")
    code, out, _ = run_cli("check", "models/alias.pt", "--output-format", "json",
                           "--no-latency", "--no-cache")
    assert json.loads(out)["models"][0]["path"] == "models/alias.pt"


def test_reader_refuses_links_itself(tree):
    repo, secret = tree
    link = repo / "models" / "model.pt"
    os.symlink(secret, link)
    facts = read_model(link)
    assert "symbolic link" in facts.unreadable and facts.file_size == 0
    assert facts.unsafe_globals == [] and facts.tensors == []


def test_linked_directories_are_not_entered_and_linked_model_names_are_reported(tree, run_cli):
    repo, secret = tree
    os.symlink(secret.parent, repo / "models" / "more")            # a plain linked directory
    os.symlink(secret.parent, repo / "models" / "weights.onnx")    # a link with a model name
    code, out, _ = run_cli("check", "models", "--output-format", "json", "--no-latency",
                           "--no-cache")
    models = json.loads(out)["models"]
    assert code == 2 and [m["path"] for m in models] == ["models/weights.onnx"]
    assert_reported_as_link_only(models[0], "models/weights.onnx", secret)


@pytest.mark.parametrize("name", [
    "model.bin", "model.pt",
    # engine.check starts counting MACs of .onnx files in forked children before reading them:
    # only for regular files, or they would open the FIFO and block.
    "model.onnx",
])
def test_fifo_is_reported_without_being_opened(tree, name):
    repo, _ = tree
    os.mkfifo(repo / "models" / name)
    for target in ("models", f"models/{name}"):
        code, report, err = check(target)
        assert code == 2, err
        (model,) = report["models"]
        assert model["metrics"]["file_size"] == 0
        assert [f["code"] for f in model["findings"]] == ["BG000"]
        assert "not a regular file (a FIFO)" in err


def test_device_is_not_a_model():
    facts = read_model(Path(os.devnull))
    assert facts.unreadable == "not a regular file (a character device), so not a model"
    assert facts.file_size == 0


# --- paths a committed config names (samples, cache-dir) ------------------------------------------

def _samples_project(repo: Path, samples_path: str) -> None:
    """A model whose BG102 reads the samples, column 1 constant in them."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              repo / "models" / "m.onnx")
    (repo / "bloatguard.toml").write_text(f'[samples]\n"models/*.onnx" = "{samples_path}"\n')


def _samples(path: Path) -> None:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((32, 4)).astype(np.float32)
    x[:, 1] = 1.0
    np.savez(path, x=x)


def test_a_linked_samples_file_is_not_read(tree):
    repo, secret = tree
    _samples(secret.parent / "s.npz")
    (repo / "models" / "s.npz").symlink_to(secret.parent / "s.npz")
    _samples_project(repo, "models/s.npz")
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", "models", "--no-cache"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'models/s.npz' leads outside the project through a symlink" in result.stderr
    # A link to a file inside the project is not opened either: the samples are the file itself.
    _samples(repo / "s-real.npz")
    (repo / "models" / "s.npz").unlink()
    (repo / "models" / "s.npz").symlink_to(repo / "s-real.npz")
    code, report, _ = check("models/m.onnx")
    [finding] = report["models"][0]["findings"]
    assert finding["code"] == "BG102" and "the samples file is a symbolic link" in finding["message"]
    assert "redundant" not in finding["message"]
    # The same file, really in the project: read.
    (repo / "models" / "s.npz").unlink()
    _samples(repo / "models" / "s.npz")
    code, report, _ = check("models/m.onnx")
    [finding] = report["models"][0]["findings"]
    assert "1 of 4 features of input 'x' are redundant" in finding["message"]


@pytest.mark.parametrize("where", ["/etc/passwd.npz", "~/s.npz", "../outside/s.npz", "models/../../s.npz"])
def test_config_paths_outside_the_project_are_config_errors(tree, where):
    repo, secret = tree
    _samples(secret.parent / "s.npz")
    _samples_project(repo, where)
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", "models", "--no-cache"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"samples.\"models/*.onnx\": {where!r} is outside the project" in result.stderr, result.stderr
    (repo / "bloatguard.toml").write_text(f'cache-dir = "{where}"\n')
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", "models"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cache-dir: {where!r} is outside the project" in result.stderr


def test_a_cache_dir_through_a_linked_directory_is_refused(tree):
    repo, secret = tree
    _samples_project(repo, "models/s.npz")
    _samples(repo / "models" / "s.npz")
    (repo / "cache").symlink_to(secret.parent, target_is_directory=True)
    (repo / "bloatguard.toml").write_text('cache-dir = "cache/deep"\n')
    # The metric cache serves git blobs: --staged (the hook), --base, history.
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "models"], cwd=repo, check=True)
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", "--staged", "models"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "leads outside the project through a symlink" in result.stderr
    assert sorted(p.name for p in secret.parent.iterdir()) == ["credentials.pt"]  # nothing written


def test_a_samples_compression_bomb_is_refused_before_it_is_unpacked(tree):
    import time
    import zipfile

    from numpy.lib import format as npy

    repo, _ = tree
    _samples_project(repo, "models/s.npz")
    floats = (512 << 20) // 4 + 4096  # just over the 512 MiB bound, as zeros: a 2.3 MB file
    with zipfile.ZipFile(repo / "models" / "s.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            npy.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                "shape": (floats // 4, 4)})
            zeros, left = bytes(1 << 24), floats * 4
            while left > 0:
                member.write(zeros[:min(left, len(zeros))])
                left -= len(zeros)
    started = time.monotonic()
    code, report, _ = check("models/m.onnx")
    [finding] = report["models"][0]["findings"]
    assert "the samples unpack to 512 MiB, more than 512 MiB" in finding["message"]
    assert time.monotonic() - started < 30  # refused from the zip directory, not by unpacking
