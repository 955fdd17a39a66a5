"""Small file helpers: atomic writes, JSON in and out (never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

#: One harmless path component (a run name, a trial id): letters, digits, "_", "." and
#: "-", starting with a letter or digit (so never "..", a hidden file or an option).
SAFE_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: What a plain `open()` would give: temp files (mkstemp, mkdtemp, safetensors' own
#: writer) are private (0600 / 0700), which would keep a run from a colleague or from the
#: other nodes of a cluster.
_UMASK = _umask()  # read once: os.umask can only be read by setting it
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def share(path: str | os.PathLike[str]) -> None:
    """Give `path` (a file, or a directory and all it holds) the umask's usual modes."""
    p = Path(path)
    if p.is_dir():
        os.chmod(p, DIR_MODE)
        for root, dirs, files in os.walk(p):
            for d in dirs:
                os.chmod(os.path.join(root, d), DIR_MODE)
            for f in files:
                os.chmod(os.path.join(root, f), FILE_MODE)
    elif p.is_file():
        os.chmod(p, FILE_MODE)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write `text` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_append_lock = threading.Lock()  # appends from threads of one process; flock covers processes


def append_durably(path: str | os.PathLike[str], data: bytes) -> None:
    """Append `data` (whole lines) under a lock, flushed and fsynced: a crash leaves at
    most a torn last line, which the next append starts a fresh line after."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _flock(fd)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn line from a crash: start a fresh one
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock


def _flock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: the in-process lock is all we have
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
