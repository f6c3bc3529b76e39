"""Checksums recorded when a file or folder is written, and checked before it is read: a file whose
bytes changed afterwards (a flipped bit, a partial copy, an edit) is named, never read as data.
Standard library only: the scan over a run's outputs runs while Snakemake builds its DAG."""

import hashlib
import os
from pathlib import Path


class DamagedFile(ValueError):
    """A file (or folder) whose bytes are not those written: the message names it and the `rm` that has it made again."""


# Beside every file written atomically, its sha256 as `sha256sum` writes it (so `sha256sum -c` checks it too);
# inside every folder written atomically, one such line per file.
CHECKSUM_SUFFIX, CHECKSUMS = ".sha256", "checksums.sha256"


def checksum_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """`text` into `path` through a temporary sibling, so a reader never sees half of it (for the small
    records kept beside outputs and in .snakemake/, which take no checksum of their own)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_checksums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise DamagedFile(f"{path}: not a checksum file (a line reads {line!r})")
        sums[name] = digest
    return sums


def checksum_damage(path, hasher=sha256) -> str | None:
    """Why the file or folder at `path` is not what was written, by the checksums recorded when it was
    (atomic_path, atomic_dir), or None; a file or folder written without them (by an earlier version)
    passes. `hasher` maps a file to its sha256 (a cache of them, for the scan over a whole run)."""
    path = Path(path)
    record = path / CHECKSUMS if path.is_dir() else checksum_path(path)
    if not record.is_file():
        return None
    try:
        sums = read_checksums(record)
    except (DamagedFile, UnicodeDecodeError):
        return f"its checksum record {record.name} is unreadable"
    base = path if path.is_dir() else path.parent
    for name, digest in sums.items():
        if not (base / name).is_file():
            return f"{name} is missing" if path.is_dir() else None
        if hasher(base / name) != digest:
            return (f"{name} was changed after it was written" if path.is_dir()
                    else "its bytes were changed after it was written (its sha256 differs from the one recorded)")
    return None


def verified(path, fix: str | None = None) -> Path:
    """`path`, after checking it holds what was written (checksum_damage); a loader calls this before
    reading, so a damaged file is never read as data. `fix` overrides the `rm` the message suggests."""
    path = Path(path)
    if (reason := checksum_damage(path)) is not None:
        raise DamagedFile(f"{path}: {reason}; it cannot be trusted. " + (
            fix or f"Remove it and rerun, which makes it again: rm -r {path}"))
    return path
