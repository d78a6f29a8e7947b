"""Files and directories that nothing can damage: atomic writes, ownership markers, leftovers.

* Every write of a file a user or a resume reads goes through a temporary sibling and `os.replace`,
  so a crash leaves the old file or the new one, never half of one.
* Every directory a command creates carries a marker file `.headless-<kind>` (run, dataset, export,
  tokenizer).  `--overwrite` replaces a directory only when it carries the marker of the command
  doing the replacing, and no other marker below it: a run, a dataset, a user's folder or a parent
  of any of them is refused whatever the flags.
* Temporary names embed the writer's pid (`.NAME.tmp-PID`), so leftovers of a killed process can be
  recognised with certainty and removed at the next start, without touching anything else.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from headless.errors import HeadlessError

MARKER_PREFIX = ".headless-"
# scratch: a reproduce piece's evaluation folder; stage-parts / stage-dest: `headless stage split` / `pull`
KINDS = ("run", "dataset", "export", "tokenizer", "scratch", "stage-parts", "stage-dest")


# -- writes ------------------------------------------------------------------------------------

def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(directory: Path) -> str:
    """sha256 over a directory's files (relative names and contents; dot-files such as markers
    excluded): what a run stores of its tokenizer copy, to notice a damaged one on resume."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


def copytree_atomic(src: Path, dst: Path) -> None:
    """Copy a directory through a temporary sibling renamed into place: a crash or a full disk
    leaves no copy at all (and no partial one a later command would accept)."""
    tmp = tmp_sibling(Path(dst))
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                fsync_file(path)
        os.replace(tmp, dst)
        fsync_dir(Path(dst).absolute().parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_digest(obj: Any, length: int = 64) -> str:
    """sha256 of `obj` as canonical JSON (sorted keys; str() for what JSON lacks): the one way run
    keys, config fingerprints and content fingerprints are made."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def tmp_sibling(path: Path, pid: Optional[int] = None) -> Path:
    """`.NAME.tmp-PID` beside `path`: the one temporary name every writer here uses."""
    path = Path(path).absolute()
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def atomic_write(path: str | os.PathLike, data: str | bytes | Callable[[Path], Any], *, fsync: bool = False) -> None:
    """Write `data` (text, bytes, or a function writing to the path it is given) to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(path)
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary directory into place (replacing what is there): readers see the
    old directory or the new one, never a half-written one."""
    tmp, final = Path(tmp), Path(final)
    if final.exists() or final.is_symlink():
        shutil.rmtree(final) if final.is_dir() and not final.is_symlink() else final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def readable_json(obj: Any, indent: int = 2) -> str:
    """JSON indented like `json.dumps(indent=2)`, but a list of numbers or strings on one line: a
    piece's per-example predictions (tens of thousands of labels) would otherwise take one line
    each and make the file seven times larger."""
    def dump(value: Any, level: int) -> str:
        pad, inner = " " * indent * level, " " * indent * (level + 1)
        if isinstance(value, dict) and value:
            return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {dump(v, level + 1)}" for k, v in value.items()) \
                + f"\n{pad}}}"
        if isinstance(value, list) and any(isinstance(x, (dict, list)) for x in value):
            return "[\n" + ",\n".join(inner + dump(v, level + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value)

    # json's own round trip first: keys become strings, tuples lists, other objects str (default=str)
    return dump(json.loads(json.dumps(obj, default=str)), 0)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, readable_json(obj) + "\n")


_DISK_FULL_TEXT = ("No space left on device", "os error 28", "Errno 28", "StorageFull")


def is_write_failure(err: BaseException) -> bool:
    """An exception a writer raises when the file system refuses it: OSError (shutil.Error is one),
    safetensors' SafetensorError (`... os error 28`) and torch's short-write RuntimeError."""
    if isinstance(err, OSError):
        return True
    text = str(err)
    return type(err).__name__ == "SafetensorError" or any(t in text for t in _DISK_FULL_TEXT) or (
        isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text
                                           or "PytorchStreamWriter failed" in text))


def describe_os_error(err: BaseException) -> str:
    """One line for a failed write: ENOSPC, safetensors' `os error 28`, a shutil.Error listing
    ENOSPC and torch's short-write message all mean a full disk."""
    if isinstance(err, OSError) and err.errno is None and any(t in str(err) for t in _DISK_FULL_TEXT):
        return "the disk is full"  # shutil.Error: a list of (src, dst, "[Errno 28] ...")
    if type(err).__name__ == "SafetensorError" and any(t in str(err) for t in _DISK_FULL_TEXT):
        return "the disk is full"
    if isinstance(err, OSError):
        if err.errno == errno.ENOSPC:
            return "the disk is full"
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return "permission denied (read-only directory?)"
        return err.strerror or str(err)
    text = str(err)
    if "unexpected pos" in text or "file write failed" in text or "PytorchStreamWriter failed" in text:
        return "a write failed (is the disk full?)"
    return text.splitlines()[0] if text else type(err).__name__


# -- ownership markers -------------------------------------------------------------------------

MARKER_TEXT = "created by headless; do not remove\n"


def mark(directory: str | os.PathLike, kind: str, state: Optional[str] = None) -> None:
    """Say that this command created `directory` (so that its own --overwrite may replace it);
    `state` (a run's: see `headless.train.rundir`) says what a later command may do with it."""
    assert kind in KINDS, kind
    text = MARKER_TEXT + (f"state: {state}\n" if state else "")
    atomic_write(Path(directory) / f"{MARKER_PREFIX}{kind}", text)


def marker_state(directory: str | os.PathLike, kind: str) -> Optional[str]:
    """The `state:` a marker records (None: no marker, or one written before markers had states)."""
    try:
        text = (Path(directory) / f"{MARKER_PREFIX}{kind}").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = re.search(r"^state: *(\S+)", text, re.MULTILINE)
    return found.group(1) if found else None


def marked_kinds(directory: str | os.PathLike) -> set[str]:
    directory = Path(directory)
    if not directory.is_dir():
        return set()
    return {k for k in KINDS if (directory / f"{MARKER_PREFIX}{k}").is_file()}


def _markers_below(directory: Path, limit: int = 10000) -> Iterator[Path]:
    for count, (root, dirs, files) in enumerate(os.walk(directory)):
        if count > limit:  # a huge tree is not something headless wrote
            yield directory
            return
        for name in files:
            if name.startswith(MARKER_PREFIX) and name[len(MARKER_PREFIX):] in KINDS:
                yield Path(root) / name


def check_replaceable(target: str | os.PathLike, kind: str, *, protect: tuple = ()) -> None:
    """Raise unless `target` may be deleted and rewritten by the command that makes `kind` dirs.

    It may when it does not exist, is an empty directory, or carries the `kind` marker and no
    marker of anything else below it; never when it is (or contains) a path in `protect`.
    """
    target = Path(target)
    if not target.exists():
        return
    resolved = target.resolve()
    for path in protect:
        path = Path(path).resolve()
        if path == resolved or resolved in path.parents:
            raise HeadlessError(f"refusing to overwrite {target}: it holds {path}")
    if not target.is_dir():
        raise HeadlessError(f"refusing to overwrite {target}: it is a file, not a directory headless created")
    if not any(target.iterdir()):
        return
    if kind not in marked_kinds(target):
        raise HeadlessError(f"refusing to overwrite {target}: headless did not create it as a {kind} directory "
                            f"(no {MARKER_PREFIX}{kind}); remove it yourself or choose another output")
    foreign = [p for p in _markers_below(target) if p.parent != target or p.name != f"{MARKER_PREFIX}{kind}"]
    if foreign:
        raise HeadlessError(f"refusing to overwrite {target}: it contains {foreign[0].parent} "
                            "(another headless directory)")


# -- leftovers of killed writers ---------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(parent: Path, name_pattern: str, *, dead_only: bool = True) -> list[Path]:
    """Remove `parent/.{name_pattern}.tmp-PID` leftovers (the pattern is a regex of the name); with
    `dead_only`, only those whose writer is no longer running.  Returns what was removed."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    regex = re.compile(rf"^\.(?:{name_pattern})\.tmp-(\d+)$")
    removed = []
    for entry in parent.iterdir():
        match = regex.match(entry.name)
        if not match or (dead_only and pid_alive(int(match.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
