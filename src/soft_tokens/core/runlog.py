"""The start of every Snakemake script: one process per output at a time, and its logging, warnings
and tqdm progress in the rule's log file. Standard library only: trivial jobs import nothing more."""

import atexit
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path

from soft_tokens.core.phases import SUFFIX, record_at_exit
from soft_tokens.core.warm_start import run_in_warm_fork


def start_job(smk) -> None:
    """Run in a fork of the run's warm server if there is one (soft_tokens.core.warm_start). Then hold the
    job's output (hold_output), and log to its log file: a second copy stops before it truncates the first
    one's log. Where the job's time goes is written beside the log when it ends (soft_tokens.core.phases)."""
    run_in_warm_fork()
    try:
        hold_output(smk.output[0])
    except JobRunning as err:
        sys.exit(str(err))  # one message, no traceback
    log_to(smk.log[0])
    record_at_exit(smk.log[0] + SUFFIX)


def log_to(path: str) -> None:
    """Standard error, logging and warnings to `path`; handlers made earlier on standard error (by libraries
    a warm-start server imported before this job began) follow it there."""
    earlier, sys.stderr = sys.stderr, open(path, "w", buffering=1)
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is earlier:
                handler.setStream(sys.stderr)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)


class JobRunning(RuntimeError):
    """Another process is writing the same output: a second copy would overwrite its work (and, when it
    failed, have Snakemake delete the first copy's finished result)."""


LOCKS = []  # the lock files this process holds, open for as long as it runs


def lock_path(out) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def hold_output(out) -> None:
    """Take the exclusive lock on output `out` (a hidden lock file beside it) for the rest of this process,
    or stop at once naming the process that holds it. The kernel drops the lock when the holder ends,
    even by kill -9, so a lock is never stale; the file goes when the holder exits normally."""
    lock = lock_path(out)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "a process"
            os.close(fd)
            raise JobRunning(
                f"{holder} is already writing {out}; a second copy of the job would overwrite its work, so this one "
                f"stops. Let it finish, or end it (`kill <PID>` on that host) and rerun. After a `kill -9` of "
                "Snakemake, its jobs go on running: `pgrep -af .snakemake/scripts` lists them.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file as we opened it: take the new one
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}".encode())
    LOCKS.append((fd, lock))
    if len(LOCKS) == 1:
        atexit.register(release_outputs)


def release_outputs() -> None:
    """Remove this process's lock files, then let go of them (hold_output takes a lock only on the file
    its path names, so a process that opened a removed one tries again)."""
    while LOCKS:
        fd, lock = LOCKS.pop()
        lock.unlink(missing_ok=True)
        os.close(fd)
