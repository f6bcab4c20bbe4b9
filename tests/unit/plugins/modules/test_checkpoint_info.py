# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for unbroken.training.checkpoint_info and module_utils/checkpoint_manifest."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

import pytest
from ansible_collections.unbroken.training.plugins.module_utils import checkpoint_manifest as fmt
from ansible_collections.unbroken.training.plugins.modules import checkpoint_info
from module_runner import REPO_ROOT, run_module


def make_checkpoint(
    directory: Path,
    step: int,
    data: bytes,
    created: float | None = None,
    algorithm: str = fmt.HASH_ALGORITHM,
) -> Path:
    """A committed checkpoint written the way the runtime writes one (without torch)."""
    path = directory / fmt.checkpoint_name(step)
    path.mkdir(parents=True)
    (path / "state.pt").write_bytes(data)
    size, segments = fmt.hash_file(str(path / "state.pt"), 1024, algorithm)
    manifest = fmt.build_manifest(
        step,
        {"state.pt": fmt.file_entry(size, segments)},
        epoch=step // 100,
        config={"hidden": 64},
        created=created,
        segment_size=1024,
        algorithm=algorithm,
    )
    fmt.write_manifest(str(path), manifest)
    return path


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    now = time.time()
    for step in (100, 200, 300):
        make_checkpoint(directory, step, os.urandom(5000 + step), created=now - (400 - step))
    (directory / fmt.LOCK_NAME).write_text("pid 7 on gpu-node since 2026-01-01T00:00:00Z\n")
    return directory


def flip_bit(path: Path, offset: int = 3000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def test_reports_every_checkpoint_and_the_newest(ckpt_dir: Path) -> None:
    result = run_module(checkpoint_info, {"path": str(ckpt_dir)})
    assert result["changed"] is False and result["exists"] is True
    assert [c["name"] for c in result["checkpoints"]] == [
        "step-000300",
        "step-000200",
        "step-000100",
    ]
    assert (result["latest_name"], result["latest_step"]) == ("step-000300", 300)
    assert result["latest_size_bytes"] == 5300
    assert 90 <= result["latest_age_seconds"] < 3600
    assert result["latest"]["epoch"] == 3
    assert result["total_size_bytes"] == 5100 + 5200 + 5300
    assert result["corrupt"] == [] and result["incomplete"] == []
    assert result["writer"].startswith("pid 7 on gpu-node")


def test_missing_directory_is_reported_not_failed(tmp_path: Path) -> None:
    result = run_module(checkpoint_info, {"path": str(tmp_path / "not-yet")})
    assert result["exists"] is False
    assert result["latest"] is None and result["checkpoints"] == []


def test_path_that_is_a_file_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    failure = run_module(checkpoint_info, {"path": str(tmp_path / "file")}, fails=True)
    assert "is not a directory" in failure["msg"]


def test_flipped_bit_needs_hashing_to_be_found(ckpt_dir: Path) -> None:
    flip_bit(ckpt_dir / "step-000300" / "state.pt")
    sizes = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "sizes"})
    assert sizes["latest_name"] == "step-000300" and not sizes["latest"]["verified"]

    newest = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "newest"})
    assert newest["latest_name"] == "step-000200" and newest["latest"]["verified"]
    assert newest["corrupt"] == ["step-000300"]
    problem = newest["checkpoints"][0]["problems"][0]
    # The flip at byte 3000 lies in the third 1024-byte segment: the range is named.
    assert problem == (
        "state.pt: crc32 mismatch in 1 of 6 segment(s): segment 2 (bytes 2048-3071) (corrupted)"
    )
    assert newest["checkpoints"][2]["verified"] is False  # older ones only size-checked

    every = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "all"})
    assert [c["verified"] for c in every["checkpoints"]] == [True, True, True]
    assert every["corrupt"] == ["step-000300"]


def test_truncated_and_uncommitted_checkpoints_are_corrupt(ckpt_dir: Path) -> None:
    os.truncate(ckpt_dir / "step-000300" / "state.pt", 100)
    (ckpt_dir / "step-000200" / "MANIFEST.json").unlink()
    result = run_module(checkpoint_info, {"path": str(ckpt_dir)})
    assert result["latest_name"] == "step-000100"
    assert result["corrupt"] == ["step-000300", "step-000200"]
    problems = {c["name"]: c["problems"] for c in result["checkpoints"]}
    assert problems["step-000300"] == ["state.pt: size 100, manifest says 5300 (truncated or torn)"]
    assert "MANIFEST.json is missing" in problems["step-000200"][0]
    assert (
        result["checkpoints"][1]["size_bytes"] == 0 and result["checkpoints"][1]["created"] is None
    )


def test_edited_manifest_is_rejected(ckpt_dir: Path) -> None:
    manifest_path = ckpt_dir / "step-000300" / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["state.pt"]["size"] = 1  # a consistent-looking lie
    manifest_path.write_text(json.dumps(manifest))
    result = run_module(checkpoint_info, {"path": str(ckpt_dir)})
    assert result["corrupt"] == ["step-000300"]
    assert "digest does not match" in result["checkpoints"][0]["problems"][0]


def test_unfinished_writes_are_listed(ckpt_dir: Path) -> None:
    (ckpt_dir / ".tmp-step-000400-12-1").mkdir()
    (ckpt_dir / ".trash-step-000100-12-2").mkdir()
    (ckpt_dir / "status.json").write_text("{}")
    result = run_module(checkpoint_info, {"path": str(ckpt_dir)})
    assert result["incomplete"] == [".tmp-step-000400-12-1", ".trash-step-000100-12-2"]
    assert result["latest_name"] == "step-000300"


def test_quarantined_checkpoints_are_listed_apart_and_never_chosen(ckpt_dir: Path) -> None:
    # What the trainer leaves after moving a corrupt newest checkpoint aside.
    flip_bit(ckpt_dir / "step-000300" / "state.pt")
    aside = ckpt_dir / "quarantine-step-000300-20261207T044033Z"
    (ckpt_dir / "step-000300").rename(aside)
    fmt.write_quarantine_note(str(aside), {"name": "step-000300", "reason": "state.pt: crc32"})
    older = ckpt_dir / "quarantine-step-000250-20261206T000000Z"
    make_checkpoint(ckpt_dir, 250, b"x" * 10).rename(older)  # no note: reason unknown
    result = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "all"})
    assert result["latest_name"] == "step-000200" and result["corrupt"] == []
    assert [c["name"] for c in result["checkpoints"]] == ["step-000200", "step-000100"]
    assert result["quarantined"] == [
        {"name": aside.name, "step": 300, "reason": "state.pt: crc32"},
        {
            "name": older.name,
            "step": 250,
            "reason": "unknown (QUARANTINE.json is missing or unreadable)",
        },
    ]
    assert run_module(checkpoint_info, {"path": str(ckpt_dir / "missing")})["quarantined"] == []


def test_check_mode_reports_the_same_and_changes_nothing(ckpt_dir: Path) -> None:
    (ckpt_dir / ".tmp-step-000400-12-1").mkdir()
    before = sorted((p.relative_to(ckpt_dir), p.stat().st_mtime_ns) for p in ckpt_dir.rglob("*"))
    normal = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "all"})
    checked = run_module(checkpoint_info, {"path": str(ckpt_dir), "verify": "all"}, check_mode=True)
    after = sorted((p.relative_to(ckpt_dir), p.stat().st_mtime_ns) for p in ckpt_dir.rglob("*"))
    assert before == after
    for key in ("latest_name", "corrupt", "incomplete", "total_size_bytes"):
        assert normal[key] == checked[key]


def test_segment_checksums_are_crc32_by_default_and_sha256_on_request(tmp_path: Path) -> None:
    data = os.urandom(5000)
    (tmp_path / "f").write_bytes(data)
    chunks = [data[i : i + 1024] for i in range(0, len(data), 1024)]
    assert fmt.HASH_ALGORITHM == "crc32"
    crc = fmt.hash_file(str(tmp_path / "f"), 1024, threads=3)
    assert crc == (5000, [format(zlib.crc32(c), "08x") for c in chunks])
    sha = fmt.hash_file(str(tmp_path / "f"), 1024, "sha256", threads=1)
    assert sha == (5000, [hashlib.sha256(c).hexdigest() for c in chunks])
    with pytest.raises(
        ValueError, match="unknown checksum algorithm 'md5'; use one of crc32, sha256"
    ):
        fmt.hash_file(str(tmp_path / "f"), 1024, "md5")


def test_sha256_checkpoints_verify_and_a_flipped_bit_names_sha256(tmp_path: Path) -> None:
    for step in (100, 200):
        make_checkpoint(tmp_path, step, os.urandom(4000), algorithm="sha256")
    make_checkpoint(tmp_path, 300, os.urandom(4000))
    every = run_module(checkpoint_info, {"path": str(tmp_path), "verify": "all"})
    assert every["corrupt"] == [] and [c["verified"] for c in every["checkpoints"]] == [True] * 3
    flip_bit(tmp_path / "step-000200" / "state.pt")
    every = run_module(checkpoint_info, {"path": str(tmp_path), "verify": "all"})
    assert every["corrupt"] == ["step-000200"]
    assert every["checkpoints"][1]["problems"][0].startswith("state.pt: sha256 mismatch in 1 of 4")


def test_manifest_rejects_unknown_algorithms_and_digests_of_the_wrong_length() -> None:
    with pytest.raises(fmt.ManifestError, match="malformed digest"):
        fmt.build_manifest(1, {"state.pt": fmt.file_entry(3, ["0" * 64])})
    with pytest.raises(fmt.ManifestError, match="malformed digest"):
        fmt.build_manifest(1, {"state.pt": fmt.file_entry(3, ["0" * 8])}, algorithm="sha256")
    data = json.loads(
        fmt.dumps_manifest(fmt.build_manifest(1, {"state.pt": fmt.file_entry(3, ["0" * 8])}))
    )
    data["hash"]["algorithm"] = "md5"
    data.pop("digest")
    with pytest.raises(fmt.ManifestError, match="algorithm 'md5' is not one of crc32, sha256"):
        fmt.loads_manifest(fmt.dumps_manifest(data))
    data["hash"]["algorithm"] = ["crc32"]  # not even a name: refused, not a TypeError
    with pytest.raises(fmt.ManifestError, match=r"algorithm \['crc32'\] is not one of"):
        fmt.loads_manifest(fmt.dumps_manifest(data))


def test_manifest_rejects_unsafe_names_and_other_versions() -> None:
    entry = fmt.file_entry(3, ["0" * 8])
    with pytest.raises(fmt.ManifestError, match="unsafe file name"):
        fmt.build_manifest(1, {"../escape": entry})
    data = json.loads(fmt.dumps_manifest(fmt.build_manifest(1, {"state.pt": entry})))
    data["version"] = 2
    with pytest.raises(fmt.ManifestError, match="understands version 1"):
        fmt.loads_manifest(json.dumps(data).encode())


def test_reads_a_checkpoint_written_by_the_training_runtime(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(REPO_ROOT / "runtime"))
    try:
        from unbroken_ckpt import CheckpointManager
    finally:
        sys.path.pop(0)
    model = torch.nn.Linear(3, 2)
    with CheckpointManager(
        str(tmp_path), {"model": model}, config={"k": 1}, async_save=False
    ) as ckpt:
        ckpt.save(7, epoch=1)
    result = run_module(checkpoint_info, {"path": str(tmp_path), "verify": "all"})
    assert (result["latest_name"], result["latest_step"]) == ("step-000007", 7)
    assert result["latest"]["verified"] and result["latest"]["epoch"] == 1
    assert result["latest"]["config_fingerprint"] == fmt.config_fingerprint({"k": 1})
    assert f"pid {os.getpid()} on" in result["writer"]
