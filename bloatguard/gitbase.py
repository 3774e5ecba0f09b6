"""The git side of a check: which version of each model is the base, and where each side's bytes
come from, read through gitpython without touching the working tree or the index.

Refs and paths are always passed to git as separate arguments after `--end-of-options` or `--`,
never through a shell, so a ref named `--upload-pack=...` or `$(...)` is just a missing ref.
Paths are literal (no pathspec globs or magic) and git prints them NUL-terminated (`-z`), so a
file named `évil.pt` or `a\tb".pt` is matched byte for byte instead of arriving C-quoted.

The repository found above a model is not necessarily the user's: a downloaded model folder can
carry its own `.git` whose config names commands (an fsmonitor hook, filter drivers) that plain
`git diff` or `git ls-files` would run. Every git call bloatguard makes therefore goes through
`GitRepo`, which overrides those settings on git's command line (see `SAFE_CONFIG`).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bloatguard.errors import BloatguardError
from bloatguard.paths import located

# Base blobs larger than this are refused rather than copied to a temporary file.
MAX_BLOB_BYTES = 8 * 2**30
_HEX = re.compile(r"^[0-9a-fA-F]{7,64}$")

# `-c` settings on every git call. Command-line settings beat every config file, so a
# repository's own config cannot make a read-only query run a command.
SAFE_CONFIG = (
    "core.fsmonitor=false",      # a hook command that status/diff/ls-files run on every index read
    "core.hooksPath=/dev/null",  # hooks such as post-index-change, run when git refreshes the index
    "diff.external=",            # an external diff program (also refused with --no-ext-diff)
    "protocol.ext.allow=never",  # `ext::` remotes run a command; only --fetch-base fetches
)
# Config scopes the user wrote (or the command line); anything else came with the repository.
_TRUSTED_SCOPES = {"system", "global", "command"}


@dataclass(frozen=True)
class Blob:
    """A file as stored in git: its object id, its path in the tree, its size."""

    sha: str
    path: str  # repo-relative posix path
    size: int


@dataclass
class Pairing:
    """One model's head and base sides. `head` is None for a deleted model; `head_blob` is set
    when the head bytes come from git (--staged, pre-push) rather than from the working tree."""

    path: str  # repo-relative posix path (the head path, or the base path when deleted)
    status: str
    same_bytes: bool = False  # unchanged, or renamed without a change (git's R100)
    head_file: Path | None = None
    head_blob: Blob | None = None
    base_blob: Blob | None = None


def _git():
    try:
        import git
    except ImportError:  # pragma: no cover - gitpython is a core dependency
        raise BloatguardError("gitpython is not installed; pip install gitpython") from None
    return git


class GitRepo:
    def __init__(self, start: Path) -> None:
        git = _git()
        # A path that is gone (a deleted model and its emptied directory, a typo) is in the
        # repository of the nearest directory that exists; whether it names a model to check
        # is discovery's to say.
        named = start
        while not start.exists() and start != start.parent:
            start = start.parent
        start = start if start.exists() else named
        try:
            self.repo = git.Repo(start.resolve(), search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise BloatguardError(f"{named}: not inside a git repository; --base and --staged "
                                  "need one (plain `bloatguard check` works anywhere)") from None
        if self.repo.bare:
            raise BloatguardError(f"{named}: a bare repository has no working tree to check")
        self.root = Path(self.repo.working_tree_dir).resolve()
        self.git = self.repo.git
        self._use_settings([])
        # Listing the repository's filter drivers is itself a git call, made with SAFE_CONFIG.
        self._use_settings(self._neutralized_filters())

    def _use_settings(self, extra: list[str]) -> None:
        """Options for every later call of this repository's git, including the `cat-file`
        process behind `repo.odb`. --literal-pathspecs: a model named `*.onnx` or `:(glob)x`
        is that one file, not a pattern."""
        self.git.set_persistent_git_options(literal_pathspecs=True, c=[*SAFE_CONFIG, *extra])

    def _neutralized_filters(self) -> list[str]:
        """`-c` settings that switch off every filter driver the repository's own config
        defines: git runs a driver's clean command when it compares a working-tree file.
        (A driver the user configured, such as a global git-lfs, keeps working.)"""
        git = _git()
        try:
            listing = self.git.config("--show-scope", "-z", "--get-regexp", r"^filter\.")
        except git.GitCommandError as exc:
            if exc.status == 1:  # no filter configured at all
                return []
            # Never go on with the drivers unknown: `git diff` would run them.
            raise BloatguardError(f"{self.root}: cannot list the repository's git filter drivers "
                                  f"(git config exited with {exc.status}); bloatguard needs git "
                                  "2.26 or newer") from None
        fields = listing.split("\0")  # scope, "filter.<driver>.<key>\n<value>", scope, ...
        drivers = set()
        for scope, entry in zip(fields[::2], fields[1::2]):
            key = entry.partition("\n")[0]
            if scope not in _TRUSTED_SCOPES:
                drivers.add(key[len("filter."):key.rindex(".")])
        settings = []
        for driver in sorted(drivers):
            if "=" in driver:  # `-c` splits at the first "=": such a name cannot be overridden
                raise BloatguardError(
                    f"{self.root}: the repository's git config defines a filter driver named "
                    f"{driver!r}, which bloatguard cannot switch off; remove it from .git/config")
            settings += [f"filter.{driver}.clean=", f"filter.{driver}.smudge=",
                         f"filter.{driver}.process=", f"filter.{driver}.required=false"]
        return settings

    @property
    def is_shallow(self) -> bool:
        return (Path(self.repo.git_dir) / "shallow").exists()

    def relpath(self, path: Path) -> str:
        try:
            return located(path).relative_to(self.root).as_posix()
        except ValueError:
            raise BloatguardError(f"{path}: outside the git repository at {self.root}") from None

    def commit_of(self, ref: str) -> str | None:
        git = _git()
        try:
            return self.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}").strip()
        except git.GitCommandError:
            return None

    def resolve_base(self, ref: str, *, fetch: bool = False) -> str:
        """The commit to compare against: the merge-base with HEAD for a branch (what a pull
        request diff shows), the commit itself for a SHA."""
        sha = self.commit_of(ref)
        if sha is None and fetch:
            self.fetch(ref)
            sha = self.commit_of(ref) or self.commit_of("FETCH_HEAD")
        if sha is None:
            raise BloatguardError(self._missing_base_message(ref))
        if _HEX.match(ref) and sha.startswith(ref.lower()):
            return sha
        head = self.commit_of("HEAD")
        if head is None:
            return sha
        git = _git()
        try:
            return self.git.merge_base("--end-of-options", head, sha).strip()
        except git.GitCommandError:
            raise BloatguardError(
                f"base {ref!r} has no common ancestor with HEAD"
                + (" in this shallow clone; fetch more history (`fetch-depth: 0` on "
                   "actions/checkout)" if self.is_shallow else "")) from None

    def path_history(self, path: str, *, since: str | None = None,
                     max_count: int | None = None) -> list[tuple[str, str, str, str]]:
        """(sha, ISO date, subject, the path in that commit) of every first-parent commit that
        changed `path`, newest first, following renames."""
        args = ["--first-parent", "--follow", "--format=%x01%H%x00%cI%x00%s", "--name-only", "-z"]
        if max_count is not None:
            args.append(f"--max-count={max_count}")
        revision = [f"{self.resolve_base(since)}..HEAD"] if since else ["HEAD"]
        out = self.git.log(*args, "--end-of-options", *revision, "--", path)
        history = []
        for record in out.split("\x01")[1:]:
            fields = record.split("\0")
            if len(fields) >= 4:
                history.append((fields[0], fields[1], fields[2], fields[3].strip("\n")))
        return history

    def messages(self, base: str, head: str) -> list[tuple[str, str]]:
        """(sha, message) of every commit in base..head (what a pull request adds), newest
        first; empty when head is not a commit yet."""
        head_sha = self.commit_of(head)
        if head_sha is None:
            return []
        # NUL after the sha and -z between commits: a message can hold anything else.
        out = self.git.log("-z", "--format=%H%x00%B", "--end-of-options", f"{base}..{head_sha}", "--")
        fields = out.split("\0")
        return [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2) if fields[i]]

    def _missing_base_message(self, ref: str) -> str:
        if self.is_shallow:
            return (f"base {ref!r} is not in this shallow clone; use `fetch-depth: 0` on "
                    f"actions/checkout, run `git fetch --depth=1 origin {ref}`, or pass --fetch-base")
        return (f"base {ref!r} is not a commit in this repository; fetch it "
                f"(`git fetch origin {ref}`) or pass --fetch-base")

    def fetch(self, ref: str) -> None:
        git = _git()
        try:
            self.git.fetch("--quiet", "--depth=1", "--no-tags", "origin", "--end-of-options", ref)
        except git.GitCommandError as exc:
            raise BloatguardError(f"could not fetch base {ref!r} from origin: "
                                  f"{exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else exc}") from None

    def tree_blob(self, commit: str, path: str) -> Blob | None:
        git = _git()
        try:
            listing = self.git.ls_tree("-l", "-z", "--full-tree", "--end-of-options", commit, "--", path)
        except git.GitCommandError:
            return None
        meta = _entry_named(listing, path)
        if meta is None:
            return None
        mode, kind, sha, size = meta.split()
        if kind != "blob":
            return None
        return Blob(sha=sha, path=path, size=int(size) if size != "-" else 0)

    def index_blob(self, path: str) -> Blob | None:
        git = _git()
        try:
            meta = _entry_named(self.git.ls_files("--stage", "-z", "--", path), path)
        except git.GitCommandError:
            return None
        if meta is None:
            return None
        sha = meta.split()[1]
        size = int(self.git.cat_file("-s", sha).strip())
        return Blob(sha=sha, path=path, size=size)

    def changes(self, base: str, head: str | None, *, staged: bool, paths: list[str]) -> dict[str, tuple[str, str]]:
        """{head path: (status letter, base path)} of what changed between base and head.

        head None means the working tree (or the index with staged=True).
        """
        args = ["--name-status", "-z", "-M", "--no-ext-diff", "--no-textconv"]
        if staged:
            args.append("--cached")
        args += ["--end-of-options", base]
        if head:
            args.append(head)
        fields = self.git.diff(*args, "--", *paths).split("\0")
        result: dict[str, tuple[str, str]] = {}
        index = 0
        while index < len(fields) and fields[index]:
            status = fields[index]
            if status[0] in "RC":
                old, new = fields[index + 1], fields[index + 2]
                result[new] = (status, old)
                index += 3
            else:
                result[fields[index + 1]] = (status[0], fields[index + 1])
                index += 2
        return result

    def write_blob(self, blob: Blob, target: Path) -> Path:
        """Stream a blob to `target`, refusing oversized blobs. A Git LFS pointer whose object
        is in the local LFS store is replaced by the object, so the real model is measured."""
        if blob.size > MAX_BLOB_BYTES:
            raise BloatguardError(f"{blob.path}: the git version is {blob.size} bytes, over the "
                                  f"{MAX_BLOB_BYTES} byte cap for reading blobs")
        target.parent.mkdir(parents=True, exist_ok=True)
        stream = self.repo.odb.stream(bytes.fromhex(blob.sha))
        written = 0
        with open(target, "wb") as handle:
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > MAX_BLOB_BYTES:
                    raise BloatguardError(f"{blob.path}: blob larger than declared")
                handle.write(chunk)
        self._resolve_lfs(target)
        return target

    def _resolve_lfs(self, target: Path) -> None:
        from bloatguard.lfs import LFS_POINTER_PREFIX, lfs_oid

        if target.stat().st_size > 1024:
            return
        content = target.read_bytes()
        if not content.startswith(LFS_POINTER_PREFIX):
            return
        oid = lfs_oid(content)
        obj = Path(self.repo.git_dir) / "lfs" / "objects" / oid[:2] / oid[2:4] / oid if oid else None
        if obj is not None and obj.is_file():
            shutil.copyfile(obj, target)


class BlobWorkspace:
    """A temporary directory holding base (or staged) blobs for the readers, removed on close."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bloatguard-base-"))
        self._count = 0

    def new_dir(self) -> Path:
        self._count += 1
        path = self.root / str(self._count)
        path.mkdir()
        return path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BlobWorkspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pair_models(repo: GitRepo, head_files: list[Path], base: str, *, staged: bool = False,
                head_commit: str | None = None, scope: list[str] | None = None,
                is_model_path=None) -> Iterator[Pairing]:
    """Pair each head model with its base version and say what happened to it.

    The diff covers the whole repository, not just `scope`: a rename is only detected when git
    sees both paths, and pre-commit passes files one by one. `scope` limits deleted models."""
    scope = scope or ["."]
    changes = repo.changes(base, head_commit, staged=staged, paths=["."])
    seen_base_paths = set()
    for file in head_files:
        path = repo.relpath(file)
        status_letter, base_path = changes.get(path, ("", path))
        head_blob = None
        if head_commit:
            head_blob = repo.tree_blob(head_commit, path)
            if head_blob is None:
                continue
        elif staged:
            head_blob = repo.index_blob(path)
            if head_blob is None:
                continue  # not staged: not part of this commit
        base_blob = repo.tree_blob(base, base_path)
        seen_base_paths.add(base_path)
        if base_blob is None:
            status = "new"
        elif status_letter.startswith("R"):
            status = "renamed"
        elif status_letter in ("", ) or (head_blob is not None and head_blob.sha == base_blob.sha):
            status = "unchanged"
        else:
            status = "modified"
        same_bytes = status == "unchanged" or status_letter == "R100" or (
            head_blob is not None and base_blob is not None and head_blob.sha == base_blob.sha)
        yield Pairing(path=path, status=status, head_file=file, head_blob=head_blob,
                      base_blob=base_blob, same_bytes=same_bytes)
    for path, (letter, base_path) in changes.items():
        if (letter == "D" and base_path not in seen_base_paths and _within(path, scope)
                and (is_model_path is None or is_model_path(path))):
            blob = repo.tree_blob(base, base_path)
            yield Pairing(path=path, status="deleted", base_blob=blob)


def _entry_named(listing: str, path: str) -> str | None:
    """The metadata of the entry for exactly `path` in `-z` output of ls-tree or ls-files
    ("<metadata>\\t<path>\\0" per entry), or None."""
    for entry in listing.split("\0"):
        meta, _, name = entry.partition("\t")
        if name == path:
            return meta
    return None


def _within(path: str, scope: list[str]) -> bool:
    return any(part in (".", "") or path == part or path.startswith(part.rstrip("/") + "/")
               for part in scope)
