# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read one image manifest from a registry (v2 API, Docker's auth flow) before pulling.

Why this exists next to ``docker pull``: the size of an image (for the free-disk check
and the pull's progress) and a definite "no such digest" or "credentials rejected" are
needed before the engine starts a pull that may take many minutes. ``docker manifest
inspect`` asks no mirror and reads no CA file but certs.d; community.docker's modules need
the Docker SDK on the host. Credentials come from the module, or from the same place
``docker login`` put them: the client configuration, including credential helpers.
Standard library only (plus Ansible's open_url): this runs on managed hosts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url
from ansible_collections.unbroken.training.plugins.module_utils.image_reference import (
    ImageError,
    Reference,
    is_digest,
)

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)

Credentials = Tuple[str, str]
Runner = Callable[..., Tuple[int, str, str]]


class AuthError(ImageError):
    """The registry refused access."""


class Layer(NamedTuple):
    digest: str
    size: int


class Manifest(NamedTuple):
    """What a pull will download: compressed layers (and the config blob)."""

    size: int
    layers: List[Layer]


def parse_challenge(header: str) -> Tuple[str, Dict[str, str]]:
    scheme, _sep, params = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def basic_auth(username: str, password: str) -> str:
    raw = (f"{username}:{password}").encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Registry:
    """Just enough of the registry v2 API to read a manifest with Docker's auth flow."""

    def __init__(
        self,
        ref: Reference,
        credentials: Optional[Credentials],
        cafile: Optional[str],
        timeout: int,
        opener: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.ref = ref
        self.credentials = credentials
        self.timeout = timeout
        self._cafile = cafile
        self._open = opener or self._open_url
        self._authorization: Optional[str] = None

    def _open_url(self, request: urllib.request.Request) -> Any:
        return open_url(
            request.full_url,
            headers=dict(request.header_items()),
            timeout=self.timeout,
            validate_certs=True,
            ca_path=self._cafile,
        )

    def _get(self, url: str, accept: Optional[str]) -> Tuple[int, Dict[str, str], bytes]:
        request = urllib.request.Request(url)
        if accept:
            request.add_header("Accept", accept)
        if self._authorization:
            request.add_header("Authorization", self._authorization)
        try:
            with self._open(request) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as err:
            headers = dict(err.headers.items()) if err.headers else {}
            return err.code, headers, err.read() or b""

    def _authenticate(self, challenge: str) -> bool:
        """Answer a 401 challenge; False when no better answer can be given."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials or self._authorization:
                return False
            self._authorization = basic_auth(*self.credentials)
            return True
        if scheme != "bearer" or "realm" not in params or self._authorization:
            return False
        query = {"service": params.get("service", "")}
        query["scope"] = params.get("scope") or f"repository:{self.ref.path}:pull"
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        if self.credentials:
            request.add_header("Authorization", basic_auth(*self.credentials))
        try:
            with self._open(request) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise AuthError(self.rejected()) from None
            raise
        token = body.get("token") or body.get("access_token")
        if not token:
            return False
        self._authorization = "Bearer " + token
        return True

    def rejected(self) -> str:
        if self.credentials:
            return (
                f"registry {self.ref.registry} rejected the credentials of user "
                f"{self.credentials[0]!r}: check the user name and password/API key "
                "(for NGC the user is $oauthtoken)"
            )
        return (
            f"registry {self.ref.registry} requires credentials for {self.ref.repository}: "
            "set the registry user name and password"
        )

    def fetch(self, base: str, reference: str, accept: str) -> Tuple[int, Dict[str, str], bytes]:
        url = f"{base}/v2/{self.ref.path}/manifests/{reference}"
        status, headers, body = self._get(url, accept)
        if status == 401:
            challenge = headers.get("WWW-Authenticate") or headers.get("Www-Authenticate") or ""
            if self._authenticate(challenge):
                status, headers, body = self._get(url, accept)
        return status, headers, body


def host_platform() -> Tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "ppc64le": "ppc64le"}
    return "linux", arch.get(machine, machine)


def manifest_of(document: Dict[str, Any]) -> Manifest:
    layers = [
        Layer(str(part.get("digest", "")), int(part.get("size", 0)))
        for part in document.get("layers", [])
    ]
    config = int(document.get("config", {}).get("size", 0))
    return Manifest(config + sum(layer.size for layer in layers), layers)


def pick_platform(index: Dict[str, Any], os_arch: Tuple[str, str]) -> Optional[str]:
    for entry in index.get("manifests", []):
        plat = entry.get("platform", {})
        if (plat.get("os"), plat.get("architecture")) == os_arch:
            digest = entry.get("digest")
            return str(digest) if digest else None
    return None


def remote_manifest(
    registry: Registry, digest: str, bases: Sequence[str], os_arch: Tuple[str, str]
) -> Manifest:
    """The image behind `digest` for this platform; ImageError on a definite refusal."""
    last_error = "no registry endpoint"
    for base in bases:
        try:
            status, _headers, body = registry.fetch(base, digest, MANIFEST_ACCEPT)
        except (urllib.error.URLError, UrlConnectionError, OSError, ValueError) as err:
            last_error = f"{base}: {err}"
            continue
        if status in (401, 403):
            raise AuthError(registry.rejected())
        if status == 404:
            raise ImageError(
                f"registry {registry.ref.registry} has no manifest {digest} for "
                f"{registry.ref.repository}: the digest (or the repository) is wrong or was "
                "deleted; check the image digest (tags are not used to pull)"
            )
        if status != 200:
            last_error = f"{base} answered HTTP {status}"
            continue
        if is_digest(digest) and "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise ImageError(
                f"the manifest {digest} served for {registry.ref.repository} does not match "
                "its digest: refusing it"
            )
        document = json.loads(body.decode("utf-8"))
        if document.get("mediaType") in INDEX_TYPES or "manifests" in document:
            child = pick_platform(document, os_arch)
            if not child:
                raise ImageError(
                    f"image {registry.ref.repository}@{digest} has no "
                    f"{os_arch[0]}/{os_arch[1]} variant"
                )
            status, _headers, body = registry.fetch(base, child, MANIFEST_ACCEPT)
            if status != 200:
                last_error = f"{base} answered HTTP {status} for {child}"
                continue
            document = json.loads(body.decode("utf-8"))
        return manifest_of(document)
    raise OSError(last_error)


def client_config_dir() -> str:
    """Where the docker client (and `docker login`) keeps its configuration."""
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.environ.get("HOME", "/"), ".docker")


def saved_credentials(ref: Reference, config_dir: str, run: Runner) -> Optional[Credentials]:
    """Credentials `docker login` stored: in a credential helper or in plain form.

    Same order as the docker client: the registry's credHelpers entry, then credsStore,
    then the auths entry. `run` runs a command (module.run_command).
    """
    try:
        with open(os.path.join(config_dir, "config.json")) as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return None
    helper = (config.get("credHelpers") or {}).get(ref.registry) or config.get("credsStore")
    if helper:
        found = helper_credentials(helper, ref.auth_key, run)
        if found:
            return found
    auths = config.get("auths") or {}
    entry = auths.get(ref.auth_key) or auths.get(f"https://{ref.registry}") or {}
    raw = entry.get("auth")
    if not raw:
        return None
    user, _sep, password = base64.b64decode(raw).decode("utf-8").partition(":")
    return user, password


def helper_credentials(helper: str, server: str, run: Runner) -> Optional[Credentials]:
    """Ask `docker-credential-<helper>` (the credential helper protocol: `get`, URL on stdin)."""
    binary = shutil.which(f"docker-credential-{helper}")
    if not binary:
        return None
    rc, out, _err = run([binary, "get"], data=server)
    if rc != 0:
        return None
    try:
        answer = json.loads(out)
    except ValueError:
        return None
    user, secret = answer.get("Username"), answer.get("Secret")
    # "<token>" marks an identity token, which only the engine can exchange.
    if not user or not secret or user == "<token>":
        return None
    return str(user), str(secret)
