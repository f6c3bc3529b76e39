"""Atomic file writes and resumable work folders: a reader (or a rerun after a kill) never sees
half a file, and a rerun resumes only work done under the same settings."""

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

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path`; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj))


def write_parquet(df: pd.DataFrame, path, metadata: dict | None = None) -> None:
    """Parquet with string key/value metadata (e.g. the token-position convention) in the schema."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **{
            k.encode(): str(v).encode() for k, v in metadata.items()}})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def parquet_metadata(path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"pandas")}


# A folder's identity, recorded inside it when the folder is written, so that a job fingerprinting its
# inputs reads a few bytes instead of hashing a whole model (gigabytes for an 8B model) every time.
IDENTITY = "identity.sha256"


@contextmanager
def atomic_dir(path):
    """Yield a temporary sibling folder of `path`; rename it into place only if the block succeeds,
    with its identity recorded in it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        (tmp / IDENTITY).write_text(identity(tmp))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def identity(path) -> str:
    """sha256 of a file's bytes; of a folder, the identity recorded in it (atomic_dir) or else the
    sha256 of its entries' names and identities in order; or of a data frame's records (data already read)."""
    if isinstance(path, pd.DataFrame):
        return hashlib.sha256(path.to_json(orient="records").encode()).hexdigest()
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        if (path / IDENTITY).is_file():
            return (path / IDENTITY).read_text()
        for entry in sorted(path.iterdir()):
            digest.update(entry.name.encode() + b"\0" + identity(entry).encode())
        return digest.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
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


def resumable_dir(partial, fingerprint: dict) -> None:
    """Make `partial` the work folder of a run identified by `fingerprint` (settings, data, ...).

    A folder left by a killed run with the same fingerprint is kept, so the run resumes from it;
    one written under another fingerprint is emptied, so stale work is never resumed.
    """
    partial = Path(partial)
    record = partial / "fingerprint.json"
    fingerprint = json.loads(json.dumps(fingerprint))  # tuples and lists alike, as stored
    if partial.exists() and (not record.exists() or json.loads(record.read_text()) != fingerprint):
        log.warning("%s was written with other settings or data: starting it over", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, fingerprint)
