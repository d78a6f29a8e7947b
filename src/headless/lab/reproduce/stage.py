"""Staging a corpus larger than one GPU job's transfer on the GPU machine, in parts.

A call to the lent GPU machine carries at most 64 MiB of working tree (about 45 M tokens of
xz-compressed text once the repository is counted), while the shared English text the studies
train on is about 110 MiB.  So the corpus travels in several calls, each carrying one part, into a
folder outside the repository that persists while the machine stays up (docs/guide/reproduction.md):

* `split`: the inputs, read as one byte stream (files in path order), cut into parts of at most
  `--max-mib`; each part is named after its sha256 (content-addressed: the same files give the same
  parts), and `manifest.json` holds every part's and file's sha256 and the whole stream's.
* `pull` (on the GPU machine): verifies each carried part against the manifest (a corrupted one is
  refused before anything is written), copies it into DEST/parts through a temporary name, and
  rebuilds every file whose bytes are all there into DEST/data.  Everything present is verified
  again on every call, so a copy cut short (a leftover temporary, a truncated part) is found and
  redone from the carried part, or reported as missing when that part is not carried.
* `check`: every part, every file and the whole stream verified -> the folder to pass as
  `data_root`; else one line naming what is missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from headless.errors import HeadlessError
from headless.files import (atomic_write, atomic_write_json, fsync_dir, mark, marked_kinds, remove_stale_tmp,
                            sha256_file, tmp_sibling)

FORMAT = "headless-stage/1"
MANIFEST = "manifest.json"
RECEIVED = "received.json"  # DEST's record of the parts verified there, with when
_BLOCK = 1 << 20
MIB = 1 << 20
CALL_MIB = 64  # what one call to the lent GPU machine carries: the working tree and the carried paths


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# -- split -------------------------------------------------------------------------------------

def _corpus_files(inputs: list, base: str | os.PathLike | None) -> list[tuple[str, Path]]:
    """(name in the staged folder, path) of every file of `inputs`, sorted by name.  A folder
    contributes its files under its own name (`enwiki/train/...`), a file its name, both relative
    to `base` instead when given (so that a layout like ../shared/data is kept)."""
    base_dir = Path(base).resolve() if base else None
    found: dict[str, Path] = {}
    for spec in inputs:
        path = Path(spec)
        if not path.exists():
            raise HeadlessError(f"corpus input not found: {path}")
        files = ([path] if path.is_file() else
                 sorted(p for p in path.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        anchor = base_dir or path.resolve().parent
        for file in files:
            try:
                name = file.resolve().relative_to(anchor).as_posix() if base_dir else \
                    (Path(path.resolve().name) / file.relative_to(path)).as_posix() if path.is_dir() else path.name
            except ValueError:
                raise HeadlessError(f"{file} is not under --base {base_dir}") from None
            if name in found and found[name].resolve() != file.resolve():
                raise HeadlessError(f"two inputs would be staged as {name!r}: {found[name]} and {file}; "
                                    "pass --base or rename one")
            found[name] = file
    if not found:
        raise HeadlessError("no files to stage in " + ", ".join(map(str, inputs)))
    return sorted(found.items())


def _part_name(index: int, digest: str, count: int) -> str:
    return f"{index:0{max(3, len(str(count - 1)))}d}-{digest[:12]}.part"


def split_corpus(inputs: list, parts_dir: str | os.PathLike, max_mib: float = 36.0,
                 base: str | os.PathLike | None = None) -> dict:
    """Cut `inputs` into parts of at most `max_mib` MiB in PARTS_DIR with their manifest; returns
    the manifest.  PARTS_DIR is written through a temporary sibling (never half-written) and may
    replace only an earlier split's folder."""
    if not max_mib > 0:
        raise HeadlessError(f"--max-mib must be > 0, got {max_mib}")
    part_bytes = max(1, int(max_mib * MIB))
    files = _corpus_files(inputs, base)
    parts_dir = Path(parts_dir)
    if parts_dir.exists() and (not parts_dir.is_dir() or any(parts_dir.iterdir())) \
            and "stage-parts" not in marked_kinds(parts_dir):
        raise HeadlessError(f"refusing to write parts into {parts_dir}: it exists and `headless stage split` "
                            "did not make it; choose an empty or new folder")
    tmp = tmp_sibling(parts_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        mark(tmp, "stage-parts")
        stream = hashlib.sha256()
        entries, parts = [], []
        out, part_hash, filled = None, None, 0

        def close_part() -> None:
            nonlocal out, filled
            out.close()
            digest = part_hash.hexdigest()
            parts.append({"sha256": digest, "bytes": filled, "tmp": out.name})
            out, filled = None, 0

        offset = 0
        for name, path in files:
            file_hash, size = hashlib.sha256(), 0
            with open(path, "rb") as handle:
                while block := handle.read(_BLOCK):
                    file_hash.update(block)
                    stream.update(block)
                    size += len(block)
                    while block:
                        if out is None:
                            out, part_hash = open(tmp / f".part-{len(parts)}", "wb"), hashlib.sha256()
                        take = block[:part_bytes - filled]
                        out.write(take)
                        part_hash.update(take)
                        filled += len(take)
                        block = block[len(take):]
                        if filled == part_bytes:
                            close_part()
            entries.append({"path": name, "bytes": size, "sha256": file_hash.hexdigest(), "offset": offset})
            offset += size
        if out is not None:
            close_part()
        for i, part in enumerate(parts):
            part["name"] = _part_name(i, part["sha256"], len(parts))
            os.replace(part.pop("tmp"), tmp / part["name"])
        manifest = {"format": FORMAT, "sha256": stream.hexdigest(), "bytes": offset, "part_bytes": part_bytes,
                    "parts": parts, "files": entries}
        atomic_write_json(tmp / MANIFEST, manifest)
        if parts_dir.exists():
            shutil.rmtree(parts_dir)  # an earlier split's folder (checked above): replaced whole
        parts_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, parts_dir)
        fsync_dir(parts_dir.absolute().parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# -- what one device call carries ---------------------------------------------------------

def tree_bytes(path: str | os.PathLike) -> int | None:
    """Bytes of the git working tree holding `path` that a device call carries besides the named
    paths (tracked files and untracked ones git does not ignore); None outside a git checkout."""
    try:
        root = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        names = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               capture_output=True, check=True, timeout=60).stdout.split(b"\0")
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(f.stat().st_size for n in names if n and (f := Path(root) / os.fsdecode(n)).is_file())


def carry_warning(manifest: dict, parts_dir: str | os.PathLike, limit_mib: float = CALL_MIB) -> str | None:
    """One line when the largest part, its manifest and the checkout's tree exceed one device call
    (the call is then refused before it starts), with the --max-mib that fits; None when it fits
    or the tree is unknown.  The tree grows as campaigns are committed: 40 MiB parts fitted a
    23 MiB tree and were refused at 24 MiB."""
    tree = tree_bytes(Path(parts_dir).resolve().parent)
    if tree is None or not manifest["parts"]:
        return None
    largest = max(p["bytes"] for p in manifest["parts"])
    carried = tree + largest + (Path(parts_dir) / MANIFEST).stat().st_size
    if carried <= limit_mib * MIB:
        return None
    room = int((limit_mib * MIB - tree) / MIB) - 1
    return (f"warning: the largest part ({_mib(largest)}) with this checkout's {_mib(tree)} of files is "
            f"{_mib(carried)}, more than one device call's {limit_mib:g} MiB: such a call is refused; "
            + (f"split again with --max-mib {room}" if room > 0 else "the tree alone leaves no room"))


# -- manifests ---------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike) -> dict:
    """A stage manifest (a file, or the folder holding manifest.json), checked for shape."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise HeadlessError(f"no stage manifest at {path} (made by `headless stage split`)") from None
    except (OSError, ValueError) as err:
        raise HeadlessError(f"{path} is not a readable stage manifest: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not all(isinstance(manifest.get(k), list) for k in ("parts", "files")):
        raise HeadlessError(f"{path} is not a stage manifest of format {FORMAT}")
    return manifest


def _verified(path: Path, part: dict) -> bool:
    return path.is_file() and path.stat().st_size == part["bytes"] and sha256_file(path) == part["sha256"]


# -- pull --------------------------------------------------------------------------------------

def _open_dest(dest: Path, manifest: dict) -> None:
    """Create DEST for this corpus, or accept it when it already stages the same one."""
    if dest.exists():
        if not dest.is_dir():
            raise HeadlessError(f"{dest} is a file, not a staging folder")
        if any(dest.iterdir()) and "stage-dest" not in marked_kinds(dest):
            raise HeadlessError(f"refusing to stage into {dest}: it is not empty and `headless stage pull` "
                                "did not make it; choose a new folder")
        staged = dest / MANIFEST
        if staged.is_file():
            other = read_manifest(staged)
            if other["sha256"] != manifest["sha256"]:
                raise HeadlessError(f"{dest} stages another corpus (sha256 {other['sha256'][:12]}, not "
                                    f"{manifest['sha256'][:12]}); choose another folder")
            return
    (dest / "parts").mkdir(parents=True, exist_ok=True)
    (dest / "data").mkdir(exist_ok=True)
    mark(dest, "stage-dest")
    atomic_write_json(dest / MANIFEST, manifest)


def _record(dest: Path) -> dict:
    try:
        return json.loads((dest / RECEIVED).read_text())
    except (OSError, ValueError):
        return {}


def _assemble(dest: Path, manifest: dict, have: set[str]) -> tuple[int, list[str]]:
    """Rebuild into DEST/data every file whose bytes lie in verified parts; returns (files ready,
    files rebuilt now).  A file already there with its sha256 is kept."""
    size = manifest["part_bytes"]
    parts = manifest["parts"]
    ready, rebuilt = 0, []
    for entry in manifest["files"]:
        first, last = entry["offset"] // size, (entry["offset"] + entry["bytes"] - 1) // size
        if not all(parts[i]["name"] in have for i in range(first, last + 1)):  # an empty file needs none
            continue
        target = dest / "data" / entry["path"]
        remove_stale_tmp(target.parent, r".+")  # a rebuild cut short by a killed pull
        if target.is_file() and target.stat().st_size == entry["bytes"] and sha256_file(target) == entry["sha256"]:
            ready += 1
            continue

        def write(tmp: Path, entry=entry, first=first, last=last) -> None:
            remaining, skip = entry["bytes"], entry["offset"] - first * size
            with open(tmp, "wb") as out:
                for i in range(first, last + 1):
                    with open(dest / "parts" / parts[i]["name"], "rb") as handle:
                        handle.seek(skip)
                        while remaining and (block := handle.read(min(_BLOCK, remaining))):
                            out.write(block)
                            remaining -= len(block)
                    skip = 0
            if sha256_file(tmp) != entry["sha256"]:
                raise HeadlessError(f"{entry['path']} rebuilt from its parts does not match the manifest's sha256")

        atomic_write(target, write, fsync=True)
        ready += 1
        rebuilt.append(entry["path"])
    return ready, rebuilt


def pull(part_dir: str | os.PathLike, dest: str | os.PathLike, *, log=print) -> dict:
    """Take the parts carried in PART_DIR into DEST (see the module's docstring); returns
    {"received": [names], "missing": [names], "files_ready": n, "complete": bool}."""
    part_dir, dest = Path(part_dir), Path(dest)
    manifest = read_manifest(part_dir)
    by_name = {p["name"]: p for p in manifest["parts"]}
    stray = sorted(p.name for p in part_dir.glob("*.part") if p.name not in by_name)
    if stray:
        raise HeadlessError(f"{part_dir / stray[0]} is not in {part_dir / MANIFEST}: carry the manifest "
                            "that split it")
    carried = [p for p in manifest["parts"] if (part_dir / p["name"]).is_file()]
    for part in carried:  # every carried part checked before DEST is touched
        path = part_dir / part["name"]
        got = path.stat().st_size
        if got != part["bytes"] or sha256_file(path) != part["sha256"]:
            what = (f"{got} of {part['bytes']} bytes" if got != part["bytes"]
                    else "its sha256 differs from the manifest's")
            raise HeadlessError(f"refusing the corrupted part {path} ({what}): carry an intact copy or split again")
    _open_dest(dest, manifest)
    parts = dest / "parts"
    remove_stale_tmp(dest, r"(received|manifest)\.json")
    for leftover in remove_stale_tmp(parts, r".+\.part"):
        log(f"removed an interrupted copy: {leftover.name}")
    record = _record(dest)
    have, received = set(), []
    for part in manifest["parts"]:
        target = parts / part["name"]
        if _verified(target, part):
            have.add(part["name"])
            continue
        if target.exists():  # a copy cut short or damaged: redone from the carried part, else dropped
            target.unlink()
            record.pop(part["name"], None)
            log(f"{part['name']} in {parts} was incomplete or damaged: "
                + ("copying it again" if part in carried else "removed; carry it again"))
        if part in carried:
            atomic_write(target, lambda tmp, src=part_dir / part["name"]: shutil.copyfile(src, tmp), fsync=True)
            if not _verified(target, part):
                target.unlink()
                raise HeadlessError(f"the copy of {part['name']} in {parts} does not match the manifest; "
                                    "is the disk full or failing?")
            have.add(part["name"])
            received.append(part["name"])
            record[part["name"]] = {"sha256": part["sha256"], "bytes": part["bytes"],
                                    "received": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(dest / RECEIVED, record)
    ready, rebuilt = _assemble(dest, manifest, have)
    missing = [p["name"] for p in manifest["parts"] if p["name"] not in have]
    total = len(manifest["parts"])
    log(f"received {len(received)} part(s) ({_mib(sum(by_name[n]['bytes'] for n in received))}); "
        f"{total - len(missing)} of {total} parts and {ready} of {len(manifest['files'])} files in {dest}"
        + (f"; missing: {', '.join(missing)}" if missing else f"; complete: data_root={dest / 'data'}"))
    return {"received": received, "missing": missing, "files_ready": ready, "rebuilt": rebuilt,
            "complete": not missing}


# -- check -------------------------------------------------------------------------------------

def check(dest: str | os.PathLike, manifest_path: str | os.PathLike) -> Path:
    """DEST/data when every part, every file and the whole stream match MANIFEST; else one
    HeadlessError naming what is missing or damaged."""
    dest = Path(dest)
    manifest = read_manifest(manifest_path)
    staged = dest / MANIFEST
    if not staged.is_file():
        raise HeadlessError(f"nothing is staged in {dest}: run `headless stage pull PART_DIR {dest}` first")
    if read_manifest(staged)["sha256"] != manifest["sha256"]:
        raise HeadlessError(f"{dest} stages another corpus than {manifest_path}")
    stream, missing = hashlib.sha256(), []
    for part in manifest["parts"]:
        path = dest / "parts" / part["name"]
        digest = hashlib.sha256()
        if path.is_file() and path.stat().st_size == part["bytes"]:
            with open(path, "rb") as handle:
                while block := handle.read(_BLOCK):
                    digest.update(block)
                    stream.update(block)
        if digest.hexdigest() != part["sha256"]:
            missing.append(part["name"])
    if missing:
        raise HeadlessError(f"{dest} is incomplete: {len(missing)} of {len(manifest['parts'])} parts missing or "
                            f"damaged ({', '.join(missing)}); carry them with `headless stage pull`")
    if stream.hexdigest() != manifest["sha256"]:
        raise HeadlessError(f"the parts in {dest} do not make the manifest's corpus (whole sha256 differs)")
    bad = [e["path"] for e in manifest["files"]
           if not _verified(dest / "data" / e["path"], e)]
    if bad:
        raise HeadlessError(f"{dest / 'data'}: {len(bad)} file(s) missing or damaged ({', '.join(bad[:5])}"
                            f"{', ...' if len(bad) > 5 else ''}); run `headless stage pull` again to rebuild them")
    return (dest / "data").absolute()
