"""Atomic, checksummed file writes and resumable work folders: a reader (or a rerun after a kill)
never sees half a file nor reads a file changed after it was written as data, and a rerun resumes
only work done under the same settings."""

import errno
import hashlib
import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from soft_tokens.core.checksums import (CHECKSUM_SUFFIX, CHECKSUMS, DamagedFile, atomic_write_text, checksum_path, sha256,
                                        verified)
from soft_tokens.core.phases import phase

log = logging.getLogger(__name__)


class StorageError(OSError):
    """A write the storage refused (no space left, read-only): the message names the path, the cause and the fix."""


def readable_by_group(path: Path) -> None:
    """Give a finished file (or every entry of a folder) the mode the umask allows: some writers create
    files 0600, which colleagues sharing a group folder cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for entry in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.chmod(entry, (0o777 if entry.is_dir() else 0o666) & ~umask)


def storage_error(err: BaseException, path: Path) -> StorageError | None:
    """`err`, raised while writing `path`, in words when the storage caused it: torch reports a full disk
    as `basic_ios::clear: iostream error`, never as "no space left"."""
    folder = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    code = getattr(err, "errno", None)
    if code == errno.ENOSPC or free < 1 << 20:
        return StorageError(errno.ENOSPC, f"no space left on the device holding {path} ({free >> 20} MiB free): free "
                            "some space, or set `workdir` to a larger disk, and rerun (a killed job resumes)")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StorageError(code, f"cannot write {path} ({os.strerror(code)}): make {folder} writable "
                            "(chmod -R u+w) or set `workdir` to a folder you can write, and rerun")
    return None


@contextmanager
def storage_errors(path: Path):
    """Re-raise a failed write whose cause is the storage (storage_error) as one StorageError."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, StorageError) or (clear := storage_error(err, path)) is None:
            raise
        raise clear from err


def write_checksums(path: Path, sums: dict[str, str]) -> None:
    """`sums` ({name: sha256}) into `path` in `sha256sum`'s format, atomically."""
    atomic_write_text(path, "".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    readable_by_group(path)


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path`; move it into place only if the block succeeds, with its
    checksum recorded beside it (checksum_path) and the mode the umask allows."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with phase("save"):
                readable_by_group(tmp)
                write_checksums(checksum_path(path), {path.name: sha256(tmp)})
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def read_json(path, fix: str | None = None):
    """A JSON file atomic_write_json wrote, checked (verified); a truncated one is named, not a parser error."""
    try:
        return json.loads(verified(path, fix).read_text())
    except DamagedFile:
        raise
    except ValueError as err:  # a parser's or a decoder's
        raise DamagedFile(f"{path}: not readable JSON ({err}); " + (
            fix or f"remove it and rerun, which makes it again: rm -r {path}")) from None


def read_parquet(path, **kwargs) -> pd.DataFrame:
    return pd.read_parquet(verified(path), **kwargs)


def write_parquet(df: pd.DataFrame, path, metadata: dict | None = None) -> None:
    """Parquet with string key/value metadata (e.g. the token-position convention) in the schema."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{
            k.encode(): str(v).encode() for k, v in metadata.items()}})
    with atomic_path(path) as tmp, phase("save"):
        pq.write_table(table, tmp)


def parquet_metadata(path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"pandas")}


# A folder's identity, recorded inside it when the folder is written, so that a job fingerprinting its
# inputs reads a few bytes instead of hashing a whole model (gigabytes for an 8B model) every time.
IDENTITY = "identity.sha256"
# Files that record how a folder was made (a training history or curve, with its timings), not what it
# holds: outside its identity, so an identical retrain leaves the jobs that read the folder alone.
RECORDS = frozenset({"history.json", "curve.parquet"})


@contextmanager
def atomic_dir(path):
    """Yield a temporary sibling folder of `path`; rename it into place only if the block succeeds,
    with its identity and every file's checksum (CHECKSUMS) recorded in it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with storage_errors(path):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            yield tmp
            with phase("save"):
                readable_by_group(tmp)
                sums = {f.relative_to(tmp): sha256(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
                # each file hashed once
                (tmp / IDENTITY).write_text(identity(tmp, lambda f: sums[f.relative_to(tmp)]))
                sums[Path(IDENTITY)] = sha256(tmp / IDENTITY)
                write_checksums(tmp / CHECKSUMS, {str(name): sums[name] for name in sorted(sums)})
                os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def identity(path, hasher=sha256) -> str:
    """sha256 of a file's bytes; of a folder, the identity recorded in it (atomic_dir) or else the
    sha256 of its entries' names and identities in order (but RECORDS and checksum files); or of a data
    frame's records (data already read). `hasher` gives a file's sha256 (one known already, say)."""
    if isinstance(path, pd.DataFrame):
        return hashlib.sha256(path.to_json(orient="records").encode()).hexdigest()
    path = Path(path)
    if not path.is_dir():
        return hasher(path)
    if (path / IDENTITY).is_file():
        return (path / IDENTITY).read_text()
    digest = hashlib.sha256()
    for entry in sorted(path.iterdir()):
        if entry.name not in RECORDS | {CHECKSUMS} and not entry.name.endswith(CHECKSUM_SUFFIX):
            digest.update(entry.name.encode() + b"\0" + identity(entry, hasher).encode())
    return digest.hexdigest()


def fingerprint(params: dict, inputs: dict) -> dict:
    """What half-done work must share with this run to be resumed: the job's parameters (exactly the
    config keys it reads) and the identities of its input files."""
    return json.loads(json.dumps({"params": params, "inputs": {k: identity(v) for k, v in sorted(inputs.items())}}))


def partial_path(out) -> Path:
    """Where the half-done work of output `out` lives (a checkpoint file or a work folder)."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


@contextmanager
def resumable_output(out, params: dict, inputs: dict):
    """Train into `out` resumably: yield the checkpoint path beside it (partial_path) and the run's
    fingerprint; the checkpoint goes once the block (which writes `out`) has succeeded."""
    checkpoint = partial_path(out)
    yield checkpoint, fingerprint(params, inputs)
    checkpoint.unlink(missing_ok=True)
    checksum_path(checkpoint).unlink(missing_ok=True)


def resumable_dir(partial, fingerprint: dict) -> None:
    """Make `partial` the work folder of a run identified by `fingerprint` (settings, data, ...).

    A folder left by a killed run with the same fingerprint is kept, so the run resumes from it;
    one written under another fingerprint is emptied, so stale work is never resumed.
    """
    partial = Path(partial)
    record = partial / "fingerprint.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples and lists alike, as stored
    if partial.exists() and (not record.exists() or read_json(record, f"Remove the folder, which starts the job over: "
                                                                      f"rm -r {partial}") != fingerprint):
        log.warning("%s was written with other settings or data: starting it over", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, fingerprint)
