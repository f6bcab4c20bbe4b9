# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The checkpoint manifest format: the single definition shared by writer and readers.

A checkpoint directory (``CHECKPOINT_DIR``) holds one sub-directory per committed
checkpoint, named ``step-<step, at least 6 digits>`` (e.g. ``step-000120``).  Each one
contains its data files and ``MANIFEST.json``, which lists every data file with its size
and content hash.  The manifest is written last and the directory is renamed into place
afterwards, so a checkpoint without a valid manifest was never committed and is never
chosen.  Other entries of ``CHECKPOINT_DIR``:

* ``.tmp-*``   a checkpoint being written (or abandoned by a crashed writer);
* ``.trash-*`` a checkpoint being deleted by rotation;
* ``.lock``    the one-writer lock file (``fcntl.flock``), holding the writer's pid/host;
* ``quarantine-step-<step>-<UTC time>`` a checkpoint found invalid (or unsafe to load),
  moved aside by the trainer and kept for inspection, with ``QUARANTINE.json`` saying
  why; it is never loaded, never counts toward rotation's ``keep`` and never deleted
  by the trainer (delete it once inspected);
* anything else (e.g. the status file) is ignored here.

Each file is checked per fixed-size segment (16 MiB by default), with the algorithm the
manifest names (``hash.algorithm``):

* ``crc32`` (default for new checkpoints): zlib's CRC-32, 1.9-3.9 GB/s per core on the
  project's CI machine against SHA-256's 1.0-1.4 (benchmarks/README.md), so hashing
  hides behind the disk write.  Per 16 MiB segment it detects every error burst of up
  to 32 bits and any other corruption (torn pages, zeroed blocks, bit flips) with
  probability 1 - 2**-32.  It does not stop deliberate tampering, and neither would an
  unkeyed SHA-256 next to a manifest the same writer can rewrite: what makes a hostile
  file harmless is ``torch.load(weights_only=True)``.
* ``sha256``: a cryptographic digest, for copies compared across sites; readers accept
  both, so checkpoints of either kind stay loadable.

Segmenting lets verification use several cores at once (``zlib`` and ``hashlib``
release the GIL) and name the corrupt byte range.  The manifest's own digest is always
SHA-256.

This file is imported by the Ansible module ``checkpoint_info`` (as module_utils) and by
the training runtime ``unbroken_ckpt`` (through a symlink), so it must stay standard
library only and Python 3.8 compatible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

FORMAT = "unbroken.training/checkpoint"
FORMAT_VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
LOCK_NAME = ".lock"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
CHECKPOINT_PREFIX = "step-"
QUARANTINE_PREFIX = "quarantine-"
QUARANTINE_NOTE = "QUARANTINE.json"
# Segment checksum algorithms readers understand, with their hex digest lengths.
HASH_ALGORITHMS = {"crc32": 8, "sha256": 64}
HASH_ALGORITHM = "crc32"
SEGMENT_SIZE = 16 * 1024 * 1024
# Verification reads 1 MiB at a time: the buffer stays in the core's cache while it is hashed
# and the kernel's read-ahead keeps the disk busy meanwhile (9-14 % less CPU than 8 MiB).
_READ_CHUNK = 1024 * 1024
_NAME_RE = re.compile(r"^step-(\d{6,})$")
_QUARANTINE_RE = re.compile(r"^quarantine-step-(\d{6,})-([0-9TZ]+)(?:-\d+)?$")
# Plain names, plus the ones torch.distributed.checkpoint writes (``.metadata``,
# ``__0_0.distcp``); never a path separator, ``.`` or ``..``.
_FILE_NAME_RE = re.compile(r"^(?:[A-Za-z0-9_]|\.[A-Za-z0-9_])[A-Za-z0-9._-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


class ManifestError(ValueError):
    """The manifest is missing, unreadable, or does not follow the format."""


def checkpoint_name(step: int) -> str:
    """Return the directory name of the checkpoint for ``step``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def parse_step(name: str) -> int | None:
    """Return the step encoded in a checkpoint directory name, or None for other names."""
    match = _NAME_RE.match(name)
    return int(match.group(1)) if match else None


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """Return a stable fingerprint of a JSON-serialisable run configuration."""
    return "sha256:" + hashlib.sha256(_canonical(dict(config))).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


class _Crc32:
    """zlib's CRC-32 behind the ``update``/``hexdigest`` interface of ``hashlib``."""

    name = "crc32"

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: Any) -> None:
        self._value = zlib.crc32(data, self._value)

    def hexdigest(self) -> str:
        return format(self._value, "08x")


def new_hasher(algorithm: str) -> Any:
    """Return a fresh ``update``/``hexdigest`` object for a segment checksum algorithm."""
    if not isinstance(algorithm, str) or algorithm not in HASH_ALGORITHMS:
        raise ValueError(
            "unknown checksum algorithm {!r}; use one of {}".format(
                algorithm, ", ".join(sorted(HASH_ALGORITHMS))
            )
        )
    return _Crc32() if algorithm == "crc32" else hashlib.new(algorithm)


def _hash_range(fd: int, start: int, length: int, algorithm: str) -> str:
    digest = new_hasher(algorithm)
    buf = bytearray(min(_READ_CHUNK, max(length, 1)))
    view = memoryview(buf)
    offset = start
    end = start + length
    while offset < end:
        want = min(len(buf), end - offset)
        got = _pread_into(fd, view[:want], offset)
        if got == 0:
            raise OSError(f"file shrank while hashing (offset {offset})")
        digest.update(view[:got])
        offset += got
    hexdigest: str = digest.hexdigest()
    return hexdigest


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    preadv: Callable[[int, list[memoryview], int], int] | None = getattr(os, "preadv", None)
    if preadv is not None:
        return preadv(fd, [view], offset)
    data = os.pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)


def default_threads() -> int:
    """Threads used for hashing: a few cores, never more than the machine has."""
    return max(1, min(4, os.cpu_count() or 1))


def hash_file(
    path: str,
    segment_size: int = SEGMENT_SIZE,
    algorithm: str = HASH_ALGORITHM,
    threads: int | None = None,
) -> tuple[int, list[str]]:
    """Return (size, per-segment hex digests) of a file, hashing segments in parallel."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        starts = list(range(0, size, segment_size)) or [0]
        workers = min(len(starts), threads or default_threads())

        def one(start: int) -> str:
            return _hash_range(fd, start, min(segment_size, size - start), algorithm)

        if workers <= 1:
            return size, [one(s) for s in starts]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return size, list(pool.map(one, starts))
    finally:
        os.close(fd)


def file_entry(size: int, segments: list[str]) -> dict[str, Any]:
    """Return the manifest entry of one data file."""
    return {"size": size, "segments": list(segments)}


def build_manifest(
    step: int,
    files: Mapping[str, Mapping[str, Any]],
    epoch: int | None = None,
    config: Mapping[str, Any] | None = None,
    created: float | None = None,
    writer: Mapping[str, Any] | None = None,
    segment_size: int = SEGMENT_SIZE,
    algorithm: str = HASH_ALGORITHM,
) -> dict[str, Any]:
    """Return a manifest (without its digest) for a checkpoint at ``step``."""
    config_dict = dict(config or {})
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "step": int(step),
        "epoch": None if epoch is None else int(epoch),
        "created": float(time.time() if created is None else created),
        "hash": {"algorithm": algorithm, "segment_size": int(segment_size)},
        "files": {name: dict(entry) for name, entry in files.items()},
        "config": config_dict,
        "config_fingerprint": config_fingerprint(config_dict),
        "writer": dict(writer or {}),
    }
    _check_structure(manifest)
    return manifest


def dumps_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Serialise a manifest with its self-digest (so a flipped bit in it is detected)."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    body["digest"] = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps(body, sort_keys=True, indent=1, allow_nan=False).encode("utf-8") + b"\n"


def loads_manifest(data: bytes) -> dict[str, Any]:
    """Parse and validate serialised manifest bytes; raise ManifestError when invalid."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{MANIFEST_NAME} is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ManifestError(
            "{} has format {!r}, expected {!r}".format(
                MANIFEST_NAME, manifest.get("format"), FORMAT
            )
        )
    if manifest.get("version") != FORMAT_VERSION:
        raise ManifestError(
            f"{MANIFEST_NAME} has version {manifest.get('version')!r}; "
            f"this reader understands version {FORMAT_VERSION}"
        )
    body = {k: v for k, v in manifest.items() if k != "digest"}
    expected = "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()
    if manifest.get("digest") != expected:
        raise ManifestError(
            f"{MANIFEST_NAME} digest does not match its content (edited or corrupted)"
        )
    _check_structure(manifest)
    return manifest


def _check_structure(manifest: Mapping[str, Any]) -> None:
    step = manifest.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ManifestError(f"manifest step must be a non-negative integer, got {step!r}")
    hash_info: Any = manifest.get("hash")
    algorithm = hash_info.get("algorithm") if isinstance(hash_info, dict) else None
    if not isinstance(algorithm, str) or algorithm not in HASH_ALGORITHMS:
        raise ManifestError(
            "manifest hash algorithm {!r} is not one of {}".format(
                algorithm, ", ".join(sorted(HASH_ALGORITHMS))
            )
        )
    segment = hash_info.get("segment_size")
    if not isinstance(segment, int) or segment <= 0:
        raise ManifestError("manifest segment_size must be a positive integer")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ManifestError("manifest lists no files")
    for name, entry in files.items():
        _check_file_entry(name, entry, segment, HASH_ALGORITHMS[algorithm])
    if not isinstance(manifest.get("config"), dict):
        raise ManifestError("manifest config must be an object")
    if not isinstance(manifest.get("created"), (int, float)):
        raise ManifestError("manifest created must be a number")


def _check_file_entry(name: str, entry: Any, segment_size: int, digest_len: int) -> None:
    if not _FILE_NAME_RE.match(name) or name == MANIFEST_NAME:
        raise ManifestError(f"manifest lists an unsafe file name {name!r}")
    if not isinstance(entry, dict):
        raise ManifestError(f"manifest entry for {name} is not an object")
    size = entry.get("size")
    segments = entry.get("segments")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"manifest size of {name} is not a non-negative integer")
    expected = max(1, -(-size // segment_size))
    if not isinstance(segments, list) or len(segments) != expected:
        raise ManifestError(f"manifest of {name} must have {expected} segment digests")
    for digest in segments:
        if not isinstance(digest, str) or len(digest) != digest_len or not _HEX_RE.match(digest):
            raise ManifestError(f"manifest of {name} has a malformed digest")


def fsync_dir(path: str) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(checkpoint_dir: str, manifest: Mapping[str, Any]) -> None:
    """Write MANIFEST.json into a (not yet committed) checkpoint directory, durably."""
    path = os.path.join(checkpoint_dir, MANIFEST_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = memoryview(dumps_manifest(manifest))
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(checkpoint_dir: str) -> dict[str, Any]:
    """Read and validate the manifest of a checkpoint directory."""
    path = os.path.join(checkpoint_dir, MANIFEST_NAME)
    try:
        with open(path, "rb") as handle:
            data = handle.read(16 * 1024 * 1024)
    except FileNotFoundError:
        raise ManifestError(f"{MANIFEST_NAME} is missing (checkpoint never committed)") from None
    except OSError as exc:
        raise ManifestError(f"{MANIFEST_NAME} is unreadable ({exc.strerror})") from None
    manifest = loads_manifest(data)
    step = parse_step(os.path.basename(os.path.normpath(checkpoint_dir)))
    if step is not None and step != manifest["step"]:
        raise ManifestError(
            f"{MANIFEST_NAME} says step {manifest['step']} but the directory is step {step}"
        )
    return manifest


def verify_files(
    checkpoint_dir: str,
    manifest: Mapping[str, Any],
    full: bool = True,
    threads: int | None = None,
) -> list[str]:
    """Check the listed files (sizes; and hashes when ``full``); return problems found."""
    problems: list[str] = []
    segment_size = manifest["hash"]["segment_size"]
    algorithm = manifest["hash"]["algorithm"]
    for name, entry in sorted(manifest["files"].items()):
        path = os.path.join(checkpoint_dir, name)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            problems.append("{}: {}".format(name, exc.strerror or "unreadable"))
            continue
        if size != entry["size"]:
            problems.append(
                f"{name}: size {size}, manifest says {entry['size']} (truncated or torn)"
            )
            continue
        if not full:
            continue
        try:
            digests = hash_file(path, segment_size, algorithm, threads)[1]
        except OSError as exc:
            problems.append(f"{name}: read error while hashing ({exc})")
            continue
        bad = [i for i, (got, want) in enumerate(zip(digests, entry["segments"])) if got != want]
        if bad:
            problems.append(
                f"{name}: {algorithm} mismatch in {len(bad)} of {len(digests)} "
                f"segment(s): {_segment_ranges(bad, segment_size, size)} (corrupted)"
            )
    return problems


def _segment_ranges(bad: list[int], segment_size: int, size: int, shown: int = 3) -> str:
    """Name the first mismatching segments with their byte ranges (the flip is inside)."""
    parts = []
    for index in bad[:shown]:
        start, end = index * segment_size, min(size, (index + 1) * segment_size) - 1
        parts.append(f"segment {index} (bytes {start}-{end})")
    if len(bad) > shown:
        parts.append(f"{len(bad) - shown} more")
    return ", ".join(parts)


class CheckpointStatus:
    """What is known about one checkpoint directory after inspection."""

    def __init__(self, name: str, step: int, path: str) -> None:
        self.name = name
        self.step = step
        self.path = path
        self.manifest: dict[str, Any] | None = None
        self.problems: list[str] = []
        self.verified = False

    @property
    def valid(self) -> bool:
        return self.manifest is not None and not self.problems

    @property
    def size(self) -> int:
        if self.manifest is None:
            return 0
        return sum(int(e["size"]) for e in self.manifest["files"].values())

    def reason(self) -> str:
        return "; ".join(self.problems)

    def as_dict(self, now: float | None = None) -> dict[str, Any]:
        created = self.manifest["created"] if self.manifest else None
        now = time.time() if now is None else now
        return {
            "name": self.name,
            "step": self.step,
            "path": self.path,
            "valid": self.valid,
            "verified": self.verified,
            "problems": list(self.problems),
            "size_bytes": self.size,
            "created": created,
            "age_seconds": None if created is None else max(0.0, now - created),
            "epoch": self.manifest.get("epoch") if self.manifest else None,
            "config_fingerprint": self.manifest.get("config_fingerprint")
            if self.manifest
            else None,
        }


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """Return (step, name) of checkpoint-named entries in ``directory``, newest first."""
    found = []
    for name in os.listdir(directory):
        step = parse_step(name)
        if step is not None and os.path.isdir(os.path.join(directory, name)):
            found.append((step, name))
    return sorted(found, reverse=True)


def quarantine_name(step: int, when: float | None = None) -> str:
    """Return the name a checkpoint of ``step`` is moved to when it is quarantined."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    return f"{QUARANTINE_PREFIX}{checkpoint_name(step)}-{stamp}"


def parse_quarantine(name: str) -> tuple[int, str] | None:
    """Return (step, UTC time stamp) of a quarantine directory name, or None."""
    match = _QUARANTINE_RE.match(name)
    return (int(match.group(1)), match.group(2)) if match else None


def write_quarantine_note(path: str, note: Mapping[str, Any]) -> None:
    """Record why a checkpoint was quarantined (small, not fsynced: only for people)."""
    with open(os.path.join(path, QUARANTINE_NOTE), "w", encoding="utf-8") as handle:
        json.dump(dict(note), handle, sort_keys=True, indent=1)
        handle.write("\n")


def list_quarantined(directory: str) -> list[dict[str, Any]]:
    """Return ``{"name", "step", "reason"}`` of quarantined checkpoints, newest first."""
    found = []
    for name in os.listdir(directory):
        parsed = parse_quarantine(name)
        path = os.path.join(directory, name)
        if parsed is None or not os.path.isdir(path):
            continue
        reason = f"unknown ({QUARANTINE_NOTE} is missing or unreadable)"
        try:
            with open(os.path.join(path, QUARANTINE_NOTE), encoding="utf-8") as handle:
                note = json.load(handle)
            if isinstance(note, dict) and isinstance(note.get("reason"), str):
                reason = note["reason"]
        except (OSError, ValueError):
            pass
        found.append((parsed[0], parsed[1], name, reason))
    found.sort(reverse=True)
    return [{"name": name, "step": step, "reason": reason} for step, _when, name, reason in found]


def list_incomplete(directory: str) -> list[str]:
    """Return names of uncommitted writes and unfinished deletions in ``directory``."""
    return sorted(n for n in os.listdir(directory) if n.startswith((TMP_PREFIX, TRASH_PREFIX)))


def inspect_checkpoint(
    directory: str, name: str, full: bool = True, threads: int | None = None
) -> CheckpointStatus:
    """Read the manifest of one checkpoint and check its files."""
    step = parse_step(name)
    if step is None:
        raise ValueError(f"{name!r} is not a checkpoint name")
    status = CheckpointStatus(name, step, os.path.join(directory, name))
    try:
        status.manifest = read_manifest(status.path)
    except ManifestError as exc:
        status.problems.append(str(exc))
        return status
    status.problems.extend(verify_files(status.path, status.manifest, full=full, threads=threads))
    status.verified = full
    return status


def find_newest_valid(
    directory: str,
    full: bool = True,
    threads: int | None = None,
    accept: Callable[[CheckpointStatus], None] | None = None,
) -> tuple[CheckpointStatus | None, list[CheckpointStatus]]:
    """Return (newest valid checkpoint or None, invalid ones newer than it).

    ``accept`` may raise to stop the search on a checkpoint that verifies but must not
    be used (e.g. a configuration mismatch); it is called before the caller loads it.
    """
    invalid: list[CheckpointStatus] = []
    for _step, name in list_checkpoints(directory):
        status = inspect_checkpoint(directory, name, full=full, threads=threads)
        if status.valid:
            if accept is not None:
                accept(status)
            return status, invalid
        invalid.append(status)
    return None, invalid
