# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for docker_image_digest: references, registry auth flow, retries, disk, archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import urllib.error
from typing import Any

import pytest
from ansible_collections.unbroken.training.plugins.module_utils import image_registry, image_storage
from ansible_collections.unbroken.training.plugins.modules import docker_image_digest as m
from module_runner import run_module

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def params(**overrides: Any) -> dict[str, Any]:
    spec = m.argument_spec()
    values = {key: option.get("default") for key, option in spec.items()}
    values.update(repository="reg.example:5000/ml/pytorch", tag="1.0", digest=DIGEST)
    values.update(overrides)
    return values


class FakeModule:
    def __init__(self, check_mode: bool = False, **overrides: Any) -> None:
        self.params = params(**overrides)
        self.check_mode = check_mode
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def run_command(self, args: list[str], **_: Any) -> tuple[int, str, str]:
        raise AssertionError(f"no command expected here: {args}")


class FakeDocker:
    """A scripted docker CLI: images by reference, containers, and a record of calls."""

    def __init__(self) -> None:
        self.images: dict[str, dict[str, Any]] = {}
        self.container_images: list[str] = []
        self.calls: list[list[str]] = []
        self.pull_results: list[tuple[int, str, str]] = []
        self.root = "/var/lib/docker"
        self.on_pull: dict[str, Any] | None = None
        self.on_line_hook: Any = None

    def add(self, image: dict[str, Any], *refs: str) -> None:
        for ref in (image["Id"], *refs):
            self.images[ref] = image

    def stream(self, args: list[str], on_line: Any) -> tuple[int, str]:
        """`docker pull`, as run with its output read line by line."""
        args = args[1:]
        self.calls.append(args)
        if args[:1] == ["--config"]:
            config = os.path.join(args[1], "config.json")
            with open(config) as handle:
                self.seen_config = json.load(handle)
            self.seen_mode = os.stat(config).st_mode & 0o777
            args = args[2:]
        assert args[0] == "pull", args
        rc, out, err = self.pull_results.pop(0) if self.pull_results else (0, "", "")
        for line in out.splitlines():
            if self.on_line_hook:
                self.on_line_hook(line)
            on_line(line)
        if rc == 0 and self.on_pull:
            self.add(self.on_pull, args[-1])
        return rc, err

    def __call__(self, args: list[str], **_: Any) -> tuple[int, str, str]:
        args = args[1:]
        self.calls.append(args)
        if args[:2] == ["image", "inspect"]:
            image = self.images.get(args[2])
            return (0, json.dumps([image]), "") if image else (1, "[]", "No such image")
        if args[0] == "info":
            return 0, self.root + "\n", ""
        if args[0] == "tag":
            self.images[args[2]] = self.images[args[1]]
            return 0, "", ""
        if args[:2] == ["image", "ls"]:
            repo = args[-1]
            ids = {
                image["Id"]
                for ref, image in self.images.items()
                if ref.startswith(repo + ":") or ref.startswith(repo + "@")
            }
            return 0, "\n".join(sorted(ids)), ""
        if args[0] == "ps":
            return 0, "\n".join(f"c{i}" for i in range(len(self.container_images))), ""
        if args[0] == "inspect":
            return 0, "\n".join(self.container_images), ""
        if args[:2] == ["image", "rm"]:
            image = self.images.pop(args[2], None)
            return (0, "", "") if image else (1, "", "No such image")
        if args[0] == "load":
            return 0, "", ""
        raise AssertionError(f"unexpected docker call {args}")


def manager(
    docker: FakeDocker, free: int = 10**12, check_mode: bool = False, **overrides: Any
) -> m.ImageManager:
    module = FakeModule(check_mode=check_mode, **overrides)
    return m.ImageManager(
        module,
        m.Docker(docker, "docker", docker.stream),
        sleep=lambda _s: None,
        free=lambda _path: free,
    )


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"digest": None}, "digest is required"),
        ({"digest": "sha256:abc"}, "malformed"),
        ({"digest": "md5:" + "a" * 64}, "malformed"),
        ({"image_id": "sha256:" + "A" * 64}, "malformed"),
        ({"source": "archive", "image_id": DIGEST}, "archive_path"),
        ({"username": "u"}, "go together"),
        ({"digest": None, "require_digest": False, "tag": None}, "a tag or"),
    ],
)
def test_bad_input_is_refused(overrides, message):
    with pytest.raises(m.ImageError, match=message):
        m.validate(params(**overrides))


def test_tag_only_pull_is_allowed_when_digest_not_required():
    m.validate(params(digest=None, require_digest=False))


# --- the whole module flow -------------------------------------------------------------


IMAGE = {"Id": OTHER, "Created": "2026-01-02", "RepoTags": [], "RepoDigests": []}


def test_present_image_is_neither_checked_nor_pulled():
    docker = FakeDocker()
    docker.add(IMAGE, f"reg.example:5000/ml/pytorch@{DIGEST}", "reg.example:5000/ml/pytorch:1.0")
    mgr = manager(docker, free=0)
    result = mgr.run()
    assert result["changed"] is False
    assert result["action"] == "none"
    assert not [c for c in docker.calls if c[0] in ("pull", "info")]
    assert result["reference"] == f"reg.example:5000/ml/pytorch@{DIGEST}"


def test_missing_image_is_pulled_tagged_and_verified(monkeypatch):
    docker = FakeDocker()
    docker.on_pull = IMAGE
    mgr = manager(docker)
    monkeypatch.setattr(mgr, "registry_space", lambda _ref: (1000, "manifest"))
    result = mgr.run()
    assert result["changed"] is True
    assert result["action"] == "pulled"
    assert result["image_id"] == OTHER
    assert ["tag", OTHER, "reg.example:5000/ml/pytorch:1.0"] in docker.calls


def test_insufficient_disk_fails_before_any_pull(monkeypatch):
    docker = FakeDocker()
    mgr = manager(docker, free=500 * m.MIB)
    monkeypatch.setattr(mgr, "registry_space", lambda _ref: (2000 * m.MIB, "manifest"))
    with pytest.raises(m.ImageError, match="2000 MiB required, 500 MiB free"):
        mgr.run()
    assert not [c for c in docker.calls if "pull" in c]


def test_configured_space_overrides_the_derived_one(monkeypatch):
    docker = FakeDocker()
    mgr = manager(docker, free=500 * m.MIB, required_space_mb=501)
    monkeypatch.setattr(mgr, "registry_space", lambda _ref: (1, "manifest"))
    with pytest.raises(m.ImageError, match="501 MiB required"):
        mgr.run()


def test_space_is_derived_from_the_manifest_size(monkeypatch):
    docker = FakeDocker()
    manifest = image_registry.Manifest(1000 * m.MIB, [])
    monkeypatch.setattr(m, "remote_manifest", lambda *_a: manifest)
    mgr = manager(docker, free=0, username="user", password="pw")
    with pytest.raises(m.ImageError, match="2500 MiB required"):
        mgr.run()


def test_unreachable_registry_falls_back_with_a_warning():
    docker = FakeDocker()
    docker.on_pull = IMAGE

    def opener(_request):
        raise urllib.error.URLError("no route")

    mgr = manager(docker)
    mgr.opener = opener
    result = mgr.run()
    assert result["size_source"] == "fallback"
    assert result["required_bytes"] == 25000 * m.MIB
    assert "no route" in mgr.module.warnings[0]


def test_check_mode_changes_nothing(monkeypatch):
    docker = FakeDocker()
    mgr = manager(docker, check_mode=True)
    monkeypatch.setattr(mgr, "registry_space", lambda _ref: (1, "manifest"))
    result = mgr.run()
    assert result["changed"] is True
    assert not [c for c in docker.calls if c[0] in ("pull", "tag")]


def test_pulled_image_with_unexpected_id_fails(monkeypatch):
    docker = FakeDocker()
    docker.on_pull = IMAGE
    mgr = manager(docker, image_id=DIGEST)
    monkeypatch.setattr(mgr, "registry_space", lambda _ref: (1, "manifest"))
    with pytest.raises(m.ImageError, match="not the expected"):
        mgr.run()


# --- archives --------------------------------------------------------------------------


def write_archive(path, config: bytes) -> str:
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_hex}.json", "Layers": []}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in ((f"{config_hex}.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + config_hex


def test_archive_ids_are_hashes_of_the_config_blobs(tmp_path):
    path = tmp_path / "a.tar"
    expected = write_archive(path, b'{"rootfs": {}}')
    assert image_storage.archive_image_ids(str(path)) == [expected]


def test_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(b"not a tar")
    with pytest.raises(m.ImageError, match="not a readable docker save archive"):
        image_storage.archive_image_ids(str(path))


def test_archive_with_another_image_is_refused_before_loading(tmp_path):
    path = tmp_path / "a.tar"
    actual = write_archive(path, b"{}")
    docker = FakeDocker()
    mgr = manager(docker, source="archive", archive_path=str(path), image_id=DIGEST, digest=None)
    with pytest.raises(m.ImageError, match=f"holds image {actual}, not the expected"):
        mgr.run()
    assert not [c for c in docker.calls if c[0] == "load"]


def test_archive_space_is_derived_from_its_size(tmp_path):
    path = tmp_path / "a.tar"
    image_id = write_archive(path, b"{}" + b" " * 10000)
    size = path.stat().st_size
    docker = FakeDocker()
    mgr = manager(
        docker, free=size, source="archive", archive_path=str(path), image_id=image_id, digest=None
    )
    with pytest.raises(m.ImageError, match="not enough free disk space"):
        mgr.run()


# --- pruning ---------------------------------------------------------------------------


def image(n: int, *refs: str) -> dict[str, Any]:
    tags = [r for r in refs if "@" not in r]
    digests = [r for r in refs if "@" in r]
    return {
        "Id": f"sha256:{n:064x}",
        "Created": f"2026-01-{n:02d}",
        "RepoTags": tags,
        "RepoDigests": digests,
    }


def test_prune_keeps_the_newest_and_images_in_use():
    repo = "reg.example:5000/ml/pytorch"
    docker = FakeDocker()
    current = image(9, f"{repo}:1.0", f"{repo}@{DIGEST}")
    docker.add(current, *current["RepoTags"], *current["RepoDigests"])
    olds = [image(n, f"{repo}:old{n}") for n in (1, 2, 3, 4)]
    for old in olds:
        docker.add(old, *old["RepoTags"])
    docker.container_images = [olds[0]["Id"]]
    mgr = manager(docker, keep_older=1)
    result = mgr.run()
    assert result["kept_in_use"] == [olds[0]["Id"]]
    assert result["removed"] == [f"{repo}:old3", f"{repo}:old2"]
    assert f"{repo}:old4" in docker.images
    assert f"{repo}:old1" in docker.images
    assert f"{repo}:1.0" in docker.images


def test_prune_is_off_by_default():
    repo = "reg.example:5000/ml/pytorch"
    docker = FakeDocker()
    current = image(9, f"{repo}:1.0", f"{repo}@{DIGEST}")
    docker.add(current, *current["RepoTags"], *current["RepoDigests"])
    old = image(1, f"{repo}:old")
    docker.add(old, f"{repo}:old")
    result = manager(docker).run()
    assert result["removed"] == []
    assert f"{repo}:old" in docker.images


def test_references_of_matches_only_the_repository():
    img = {"RepoTags": ["a/b:1", "a/bc:1", "reg:5000/a/b:2"], "RepoDigests": ["a/b@" + DIGEST]}
    assert image_storage.references_of(img, "a/b") == ["a/b:1", "a/b@" + DIGEST]
    assert image_storage.references_of(img, "reg:5000/a/b") == ["reg:5000/a/b:2"]


# --- through AnsibleModule -------------------------------------------------------------


def test_main_refuses_bad_input_with_its_message(monkeypatch):
    monkeypatch.setattr(m.AnsibleModule, "get_bin_path", lambda *_a, **_k: "/usr/bin/docker")
    failure = run_module(m, {"repository": "pytorch/pytorch", "digest": "sha256:abc"}, fails=True)
    assert "malformed" in failure["msg"]


def test_main_reports_a_present_image_unchanged(monkeypatch):
    docker = FakeDocker()
    docker.add(IMAGE, f"pytorch/pytorch@{DIGEST}", "pytorch/pytorch:1.0")
    monkeypatch.setattr(m.AnsibleModule, "get_bin_path", lambda *_a, **_k: "/usr/bin/docker")
    monkeypatch.setattr(m.AnsibleModule, "run_command", lambda _self, args, **_k: docker(args))
    result = run_module(m, {"repository": "pytorch/pytorch", "tag": "1.0", "digest": DIGEST})
    assert result["changed"] is False
    assert result["image_id"] == OTHER


def test_password_is_declared_no_log():
    assert m.argument_spec()["password"]["no_log"] is True
