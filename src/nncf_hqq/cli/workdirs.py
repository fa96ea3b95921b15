"""
Directories written whole or not at all: a temporary sibling that is marked as ours, a manifest that makes a
finished directory verifiable, a lock for a destination, and the cleanup of temporaries that a killed run left.

- A temporary directory holds an owner file (`OWNER_FILE`: process id, host, creation time). It is stale when its
  process is gone (same host) or, for another host's, after `STALE_SECONDS`; later runs remove stale ones, and only
  directories that carry an owner file.
- A manifest (`MANIFEST_FILE`: the size and CRC-32 of every file) is written last; a directory whose files do not
  match it is damaged (truncated, missing or corrupted files) and is rebuilt.
"""

import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nncf
from nncf.common.logging import nncf_logger

OWNER_FILE = ".nncf-hqq-owner"
MANIFEST_FILE = "nncf-hqq-manifest.json"
STALE_SECONDS = 24 * 3600
_CHUNK = 1 << 24


def make_temporary_dir(parent: Path, prefix: str) -> Path:
    """A new directory `parent/prefix...`, marked as this process's (0700 by mkdtemp; see `chmod_like_mkdir`)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (path / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}))
    return path


def chmod_like_mkdir(path: Path) -> None:
    """Give a mkdtemp directory the permissions a plain mkdir would (mkdtemp makes it 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)


def _is_stale(owner_file: Path) -> bool:
    try:
        owner = json.loads(owner_file.read_text())
        pid, host, created = int(owner["pid"]), str(owner["host"]), float(owner["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not recognisably ours: leave it alone
    if host != socket.gethostname():
        return time.time() - created > STALE_SECONDS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale_temporaries(parent: Path, prefix: str) -> None:
    """Removes the directories `parent/prefix*` that a run of nncf-hqq left behind when it was killed."""
    if not parent.is_dir():
        return
    for path in parent.glob(f"{prefix}*"):
        if path.is_dir() and not path.is_symlink() and _is_stale(path / OWNER_FILE):
            nncf_logger.info(f"Removing {path}, left by an interrupted nncf-hqq run")
            shutil.rmtree(path, ignore_errors=True)


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def write_manifest(directory: Path) -> None:
    """Records the size and CRC-32 of every file under `directory` in its manifest, written last."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in (MANIFEST_FILE, OWNER_FILE)):
        files[str(path.relative_to(directory))] = {"size": path.stat().st_size, "crc32": _crc32(path)}
    partial = directory / f".{MANIFEST_FILE}.partial"
    partial.write_text(json.dumps({"files": files}, indent=1))
    os.replace(partial, directory / MANIFEST_FILE)


def manifest_problem(directory: Path) -> str | None:
    """None if every file of the manifest is there with its size and CRC-32; otherwise what is wrong."""
    try:
        files = json.loads((directory / MANIFEST_FILE).read_text())["files"]
    except FileNotFoundError:
        return "no manifest (an interrupted or older export)"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable manifest ({error})"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['size']} expected"
    for name, expected in files.items():  # sizes first: they are free to check
        if _crc32(directory / name) != expected["crc32"]:
            return f"{name} is corrupted (its checksum changed)"
    return None


@contextmanager
def locked(lock_file: Path, what: str) -> Iterator[None]:
    """
    An exclusive lock on `lock_file` for the block (created, removed after). Another holder makes this raise
    nncf.ValidationError at once, naming `what` is being written.
    """
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"another nncf-hqq run is writing {what} (lock {lock_file}): wait for it or choose another path."
            raise nncf.ValidationError(msg) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino  # not a file a finished run just removed
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock_file.unlink(missing_ok=True)
        os.close(fd)
