"""A quieter timing process on a shared host: one core, a higher priority, a lock.

End-to-end checks compare architectures whose latencies differ by a few percent, on a
machine other jobs share. A process that migrates between cores meets cold caches and
the other core's load; one pinned to a core (`os.sched_setaffinity`) with a higher
priority (a lower nice value) is preempted less often, so more of its timed runs are
clean and its best-of-rounds minimum is steadier. Both are best effort: where the
platform or the permissions refuse, the timing goes on as it is and says so in the log.
`file_lock` keeps two timing jobs that share a lock file from overlapping;
`timing_context` is both, what a table build's rounds (`latency_tables.build`) and an
end-to-end check's (`latency_tables.validate`) run in.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: nice value while timing (root may lower it; others keep theirs)
TIMING_NICE = -10


@contextlib.contextmanager
def one_core(core: int = -1, nice: int = TIMING_NICE) -> Iterator[int | None]:
    """Run the body pinned to one core (`core`: an index into the cores this process may
    use; -1, the last one) at nice value `nice` if allowed; restores both after.

    Yields the core pinned to, or None where pinning is not available.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.info("no sched_setaffinity on this platform: timing on any core")
        yield None
        return
    allowed = sorted(os.sched_getaffinity(0))
    if not -len(allowed) <= core < len(allowed):
        raise ValueError(f"core {core} is not one of this process's {len(allowed)} cores")
    pinned = allowed[core]
    old_nice = os.getpriority(os.PRIO_PROCESS, 0)
    os.sched_setaffinity(0, {pinned})
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as e:  # not permitted: time at the current priority
        log.info("timing at nice %d (could not set %d: %s)", old_nice, nice, e)
    try:
        yield pinned
    finally:
        os.sched_setaffinity(0, set(allowed))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, old_nice)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing), as ``flock PATH cmd`` does:
    timing jobs that share one lock file never overlap."""
    import fcntl

    with open(path, "a") as f:
        log.info("waiting for the timing lock %s", path)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def timing_context(lock: str | Path | None, core: int | None) -> Iterator[None]:
    """Hold `lock` (when given), then pin to `core` (when given): what timing rounds run
    in, entered after the conversions (single use; build a new one per timing spell)."""
    with contextlib.ExitStack() as stack:
        if lock is not None:
            stack.enter_context(file_lock(lock))
        if core is not None:
            stack.enter_context(one_core(core))
        yield
