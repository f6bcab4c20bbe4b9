# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for image_registry: the manifest read, its auth flow, and saved logins."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import urllib.error
from email.message import Message
from typing import Any

import pytest

# conftest makes ansible_collections.unbroken.training importable from a plain checkout.
from ansible_collections.unbroken.training.plugins.module_utils import image_reference as r
from ansible_collections.unbroken.training.plugins.module_utils import image_registry as g

DIGEST = "sha256:" + "a" * 64


def size_of(*args: Any) -> int:
    return g.remote_manifest(*args).size


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = Message()
        for key, value in (headers or {}).items():
            self.headers[key] = value

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def http_error(url: str, status: int, headers: dict[str, str] | None = None):
    msg = Message()
    for key, value in (headers or {}).items():
        msg[key] = value
    return urllib.error.HTTPError(url, status, "err", msg, io.BytesIO(b"{}"))


def manifest_bytes(sizes: list[int]) -> bytes:
    return json.dumps(
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"size": 100},
            "layers": [{"size": size} for size in sizes],
        }
    ).encode()


class Opener:
    """Serves manifests by digest; enforces Basic or Bearer auth like a registry."""

    def __init__(self, manifests: dict[str, bytes], scheme: str = "basic", password: str = "pw"):
        self.manifests = manifests
        self.scheme = scheme
        self.password = password
        self.requests: list[Any] = []

    def good_basic(self) -> str:
        return g.basic_auth("user", self.password)

    def __call__(self, request):
        self.requests.append(request)
        url = request.full_url
        auth = request.get_header("Authorization")
        if "/token" in url:
            if auth != g.basic_auth("user", "pw"):
                raise http_error(url, 401)
            return Response(200, json.dumps({"token": "T"}).encode())
        wanted = "Bearer T" if self.scheme == "bearer" else g.basic_auth("user", "pw")
        if auth != wanted:
            challenge = (
                'Bearer realm="https://auth.example/token",service="reg"'
                if self.scheme == "bearer"
                else 'Basic realm="test"'
            )
            raise http_error(url, 401, {"WWW-Authenticate": challenge})
        digest = url.rsplit("/", 1)[1]
        if digest not in self.manifests:
            raise http_error(url, 404)
        return Response(200, self.manifests[digest])


def registry(opener: Opener, password: str = "pw") -> g.Registry:
    ref = r.Reference("reg.example:5000/ml/pytorch")
    return g.Registry(ref, ("user", password), None, 5, opener)


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_manifest_size_follows_the_auth_challenge(scheme):
    body = manifest_bytes([1000, 2000])
    opener = Opener({digest_of(body): body}, scheme=scheme)
    size = size_of(registry(opener), digest_of(body), ["https://reg"], ("linux", "amd64"))
    assert size == 3100


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_rejected_credentials_fail_clearly_without_the_password(scheme):
    body = manifest_bytes([1])
    opener = Opener({digest_of(body): body}, scheme=scheme)
    with pytest.raises(g.AuthError) as err:
        size_of(
            registry(opener, password="s3cret-wrong"),
            digest_of(body),
            ["https://reg"],
            ("linux", "amd64"),
        )
    assert "rejected the credentials of user 'user'" in str(err.value)
    assert "s3cret-wrong" not in str(err.value)


def test_unknown_digest_fails_clearly():
    opener = Opener({})
    with pytest.raises(r.ImageError, match=f"has no manifest {DIGEST}"):
        size_of(registry(opener), DIGEST, ["https://reg"], ("linux", "amd64"))


def test_manifest_not_matching_its_digest_is_refused():
    body = manifest_bytes([1])
    opener = Opener({DIGEST: body})
    with pytest.raises(r.ImageError, match="does not match its digest"):
        size_of(registry(opener), DIGEST, ["https://reg"], ("linux", "amd64"))


def test_index_picks_the_host_platform():
    amd = manifest_bytes([5000])
    arm = manifest_bytes([7])
    index = json.dumps(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"digest": digest_of(arm), "platform": {"os": "linux", "architecture": "arm64"}},
                {"digest": digest_of(amd), "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
    ).encode()
    opener = Opener({digest_of(index): index, digest_of(amd): amd, digest_of(arm): arm})
    size = size_of(registry(opener), digest_of(index), ["https://reg"], ("linux", "amd64"))
    assert size == 5100


def test_unreachable_endpoint_falls_through_to_the_next():
    body = manifest_bytes([10])

    def opener(request):
        if request.full_url.startswith("https://mirror"):
            raise urllib.error.URLError("connection refused")
        return Opener({digest_of(body): body})(request)

    size = size_of(
        registry(opener), digest_of(body), ["https://mirror", "https://reg"], ("linux", "amd64")
    )
    assert size == 110


# --- credentials docker login saved ----------------------------------------------------


REF = r.Reference("reg.example:5000/ml/pytorch")


def write_config(directory, config: dict) -> str:
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory)


def no_command(*_args, **_kwargs):
    raise AssertionError("no command expected")


def test_plain_saved_login_is_read(tmp_path):
    auth = base64.b64encode(b"user:pw").decode()
    config = write_config(tmp_path, {"auths": {"reg.example:5000": {"auth": auth}}})
    assert g.saved_credentials(REF, config, no_command) == ("user", "pw")


def fake_helper(tmp_path, monkeypatch, name: str) -> None:
    """A docker-credential-<name> on PATH (its answers come from the runner below)."""
    binary = tmp_path / "bin" / f"docker-credential-{name}"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PATH", str(binary.parent))


@pytest.mark.parametrize("key", ["credHelpers", "credsStore"])
def test_credential_helper_is_asked_with_the_server_on_stdin(tmp_path, monkeypatch, key):
    fake_helper(tmp_path, monkeypatch, "pass")
    value = {"reg.example:5000": "pass"} if key == "credHelpers" else "pass"
    config = write_config(tmp_path, {key: value})
    asked = []

    def run(args, data=None):
        asked.append((os.path.basename(args[0]), args[1:], data))
        return 0, json.dumps({"Username": "robot", "Secret": "from-helper"}), ""

    assert g.saved_credentials(REF, config, run) == ("robot", "from-helper")
    assert asked == [("docker-credential-pass", ["get"], "reg.example:5000")]


def test_missing_helper_or_identity_token_means_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    config = write_config(tmp_path, {"credsStore": "absent"})
    assert g.saved_credentials(REF, config, no_command) is None
    fake_helper(tmp_path, monkeypatch, "pass")
    config = write_config(tmp_path, {"credsStore": "pass"})

    def token(args, data=None):
        return 0, json.dumps({"Username": "<token>", "Secret": "t"}), ""

    assert g.saved_credentials(REF, config, token) is None
