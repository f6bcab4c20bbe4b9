#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ensure a Docker image pinned by digest (or by image ID from an archive) is present."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_image_digest
short_description: Ensure a Docker image pinned by digest is present, pulled or loaded safely
version_added: 0.1.0
description:
  - Ensures the image C(repository@digest) is in the local Docker engine. The digest, not the
    tag, is what is pulled and verified; the tag is applied locally for readability.
  - Before anything is pulled it asks the registry for the manifest (with the given credentials
    and the CA certificate Docker uses for that registry), so a wrong digest or rejected
    credentials fail with a clear message, and the image size feeds a free-disk check on
    Docker's data root.
  - Pulls with retries and exponential backoff on transient failures only; a missing manifest,
    rejected credentials or a certificate error fail at once.
  - Credentials are handed to C(docker pull) through a temporary client configuration that is
    removed afterwards; they are never written to a persistent file nor returned.
  - With O(source=archive) it loads a C(docker save) tarball from the managed host instead,
    after checking that the tarball holds the expected image ID, and checks the ID again after
    loading.
  - Optionally keeps at most O(keep_older) older images of the same repository, never removing
    one that a container (running or stopped) uses.
  - Uses the C(docker) command-line client; needs no Python library on the managed host.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  repository:
    description:
      - Repository without tag or digest, e.g. C(pytorch/pytorch), C(nvcr.io/nvidia/pytorch),
        C(registry.example.org:5000/ml/pytorch).
    type: str
    required: true
  tag:
    description: Tag applied locally to the image for readability; never used to pull.
    type: str
  digest:
    description:
      - Manifest digest C(sha256:<64 hex>) that is pulled and verified.
      - Required when O(source=registry).
    type: str
  require_digest:
    description:
      - Refuse to pull without O(digest). When false and no digest is given, O(tag) is pulled
        once and never refreshed (the image is present from then on).
    type: bool
    default: true
  image_id:
    description:
      - Expected image ID (config digest) C(sha256:<64 hex>).
      - Required when O(source=archive); checked after a pull when given.
    type: str
  source:
    description: Where the image comes from.
    type: str
    choices: [registry, archive]
    default: registry
  archive_path:
    description: Path of a C(docker save) tarball on the managed host (O(source=archive)).
    type: path
  username:
    description: Registry user name (for NGC use C($oauthtoken)).
    type: str
  password:
    description: Registry password, token or API key. Never logged nor returned.
    type: str
  ca_cert:
    description:
      - CA certificate file for the registry's TLS certificate.
      - Defaults to C(/etc/docker/certs.d/<registry>/ca.crt) when that file exists, which is
        also where the Docker engine looks.
    type: path
  mirrors:
    description:
      - Registry mirror URLs (Docker Hub images only) asked for the manifest before Docker Hub.
    type: list
    elements: str
    default: []
  required_space_mb:
    description:
      - Free space in MiB required on Docker's data root before pulling or loading.
      - C(0) derives it from the image size (registry manifest or archive size).
    type: int
    default: 0
  space_factor:
    description:
      - Multiple of the compressed size (from the registry manifest) required free, covering
        download and extraction. Archives, already uncompressed, need 1.1 times their size.
    type: float
    default: 2.5
  fallback_space_mb:
    description: Free space in MiB required when the image size cannot be learned.
    type: int
    default: 25000
  retries:
    description: Pull attempts after the first one on transient failures.
    type: int
    default: 5
  backoff_initial:
    description: Seconds to wait before the first retry; doubled at each further retry.
    type: float
    default: 5
  backoff_max:
    description: Upper bound in seconds for one wait between retries.
    type: float
    default: 120
  timeout:
    description: Seconds for registry HTTP requests.
    type: int
    default: 30
  keep_older:
    description:
      - Keep at most this many older images of O(repository); C(-1) disables pruning.
      - Images used by any container are never removed.
    type: int
    default: -1
  docker_bin:
    description: Docker command-line client.
    type: str
    default: docker
notes:
  - Supports check mode and diff mode.
requirements:
  - The C(docker) command-line client and a running Docker engine on the managed host.
"""

EXAMPLES = r"""
- name: Pull the PyTorch image by digest
  unbroken.training.docker_image_digest:
    repository: pytorch/pytorch
    tag: 2.13.0-cuda12.6-cudnn9-runtime
    digest: sha256:6acf597eeb8e376a96580dde4952f37cc017fef732bb40bfc73f28f25e3f64b4

- name: Pull from NGC with an API key and keep two older versions
  unbroken.training.docker_image_digest:
    repository: nvcr.io/nvidia/pytorch
    tag: 25.01-py3
    digest: "{{ ngc_digest }}"
    username: $oauthtoken
    password: "{{ ngc_api_key }}"
    keep_older: 2
  no_log: false

- name: Load the image from a tarball on an air-gapped host
  unbroken.training.docker_image_digest:
    repository: pytorch/pytorch
    tag: 2.13.0-cuda12.6-cudnn9-runtime
    source: archive
    archive_path: /srv/images/pytorch.tar
    image_id: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
"""

RETURN = r"""
image_id:
  description: ID of the image now present (config digest).
  returned: success
  type: str
reference:
  description: Reference that names exactly this image locally (C(repo@digest) or the ID).
  returned: success
  type: str
action:
  description: What was done to make the image present.
  returned: always
  type: str
  sample: pulled
attempts:
  description: Number of pull attempts made.
  returned: always
  type: int
size_bytes:
  description: Image size learned before pulling or loading (compressed for registries).
  returned: when known
  type: int
size_source:
  description: Where the required space came from (manifest, archive, configured, fallback).
  returned: when a pull or load was needed
  type: str
required_bytes:
  description: Free bytes required on Docker's data root.
  returned: when a pull or load was needed
  type: int
free_bytes:
  description: Free bytes found on Docker's data root.
  returned: when a pull or load was needed
  type: int
docker_root:
  description: Docker's data root that was checked.
  returned: when a pull or load was needed
  type: str
removed:
  description: References removed by pruning.
  returned: always
  type: list
  elements: str
kept_in_use:
  description: Older image IDs kept because a container uses them.
  returned: always
  type: list
  elements: str
"""

import base64
import hashlib
import json
import os
import platform
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlConnectionError
from ansible.module_utils.urls import open_url

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Docker's reference grammar, reduced to what a repository (no tag, no digest) may be.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = r"(?:" + _LABEL + r"(?:\." + _LABEL + r")*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
REPOSITORY_RE = re.compile(r"^(?:" + _DOMAIN + r"/)?" + _COMPONENT + r"(?:/" + _COMPONENT + r")*$")
PATH_RE = re.compile(r"^" + _COMPONENT + r"(?:/" + _COMPONENT + r")*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
CERTS_D = "/etc/docker/certs.d"
MIB = 1024 * 1024
ARCHIVE_FACTOR = 1.1

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
# Failures that another attempt cannot fix: fail at once instead of backing off.
PERMANENT_PULL_ERRORS = (
    "manifest unknown",
    "not found",
    "unauthorized",
    "denied",
    "authentication required",
    "no basic auth credentials",
    "invalid reference format",
    "x509:",
    "certificate signed by unknown authority",
    "no matching manifest",
)

Runner = Callable[..., Tuple[int, str, str]]


class ImageError(Exception):
    """A failure with a message meant for the user."""


class AuthError(ImageError):
    """The registry refused access."""


class Reference:
    """A repository split into registry, API host and path, as Docker resolves it."""

    def __init__(self, repository: str) -> None:
        if not REPOSITORY_RE.match(repository):
            raise ImageError(
                f"repository {repository!r} is not a valid image repository (lower-case "
                "path components, optional registry host[:port] first, no tag or digest)"
            )
        first, _sep, rest = repository.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            self.registry, self.path = first, rest
        else:
            self.registry, self.path = DOCKER_HUB, repository
        if not PATH_RE.match(self.path):
            raise ImageError(
                f"repository {repository!r} is not a valid image repository: path components "
                "must be lower case (only a registry host may contain upper case, '.' or ':')"
            )
        if self.registry in (DOCKER_HUB, "index.docker.io") and "/" not in self.path:
            self.path = "library/" + self.path
        self.repository = repository

    @property
    def is_docker_hub(self) -> bool:
        return self.registry in (DOCKER_HUB, "index.docker.io")

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.is_docker_hub else self.registry

    @property
    def auth_key(self) -> str:
        return DOCKER_HUB_AUTH_KEY if self.is_docker_hub else self.registry

    @property
    def familiar(self) -> str:
        """The name `docker image ls` and RepoDigests use for this repository."""
        if self.is_docker_hub:
            return self.path[len("library/") :] if self.path.startswith("library/") else self.path
        return f"{self.registry}/{self.path}"


# --- registry manifest --------------------------------------------------------------------


def _parse_challenge(header: str) -> Tuple[str, Dict[str, str]]:
    scheme, _sep, params = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def _basic(username: str, password: str) -> str:
    raw = (f"{username}:{password}").encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class Registry:
    """Just enough of the registry v2 API to read a manifest with Docker's auth flow."""

    def __init__(
        self,
        ref: Reference,
        credentials: Optional[Tuple[str, str]],
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
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials or self._authorization:
                return False
            self._authorization = _basic(*self.credentials)
            return True
        if scheme != "bearer" or "realm" not in params or self._authorization:
            return False
        query = {"service": params.get("service", "")}
        query["scope"] = params.get("scope") or f"repository:{self.ref.path}:pull"
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        if self.credentials:
            request.add_header("Authorization", _basic(*self.credentials))
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


def manifest_size(manifest: Dict[str, Any]) -> int:
    parts = [manifest.get("config", {}), *list(manifest.get("layers", []))]
    return sum(int(part.get("size", 0)) for part in parts)


def pick_platform(index: Dict[str, Any], os_arch: Tuple[str, str]) -> Optional[str]:
    for entry in index.get("manifests", []):
        plat = entry.get("platform", {})
        if (plat.get("os"), plat.get("architecture")) == os_arch:
            digest: Optional[str] = entry.get("digest")
            return digest
    return None


def remote_manifest_size(
    registry: Registry, digest: str, bases: Sequence[str], os_arch: Tuple[str, str]
) -> int:
    """Compressed size of the image behind `digest`; ImageError on a definite refusal."""
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
        if DIGEST_RE.match(digest) and "sha256:" + hashlib.sha256(body).hexdigest() != digest:
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
        return manifest_size(document)
    raise OSError(last_error)


# --- docker client ------------------------------------------------------------------------


class Docker:
    def __init__(self, run: Runner, binary: str) -> None:
        self._run = run
        self.binary = binary

    def call(self, *args: str, **kwargs: Any) -> Tuple[int, str, str]:
        return self._run([self.binary, *args], **kwargs)

    def check(self, *args: str) -> str:
        rc, out, err = self.call(*args)
        if rc != 0:
            raise ImageError("`docker {}` failed: {}".format(" ".join(args), (err or out).strip()))
        return out

    def inspect(self, reference: str) -> Optional[Dict[str, Any]]:
        rc, out, _err = self.call("image", "inspect", reference)
        if rc != 0:
            return None
        data = json.loads(out)
        return data[0] if data else None

    def root_dir(self) -> str:
        return self.check("info", "--format", "{{.DockerRootDir}}").strip()

    def image_ids(self, repository: str) -> List[str]:
        out = self.check("image", "ls", "--no-trunc", "--quiet", repository)
        return sorted({line.strip() for line in out.splitlines() if line.strip()})

    def container_image_ids(self) -> List[str]:
        ids = self.check("ps", "--all", "--quiet", "--no-trunc").split()
        if not ids:
            return []
        out = self.check("inspect", "--format", "{{.Image}}", *ids)
        return sorted({line.strip() for line in out.splitlines() if line.strip()})


def free_bytes(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def ensure_space(path: str, required: int, what: str, free: Callable[[str], int]) -> int:
    available = free(path)
    if available < required:
        raise ImageError(
            f"not enough free disk space for {what} on Docker's data root {path}: "
            f"{required // MIB} MiB required, {available // MIB} MiB free. Free space (e.g. "
            "prune unused images) or set the required space explicitly if the estimate is "
            "wrong; nothing was pulled or loaded"
        )
    return available


def is_transient(message: str) -> bool:
    lowered = message.lower()
    return not any(marker in lowered for marker in PERMANENT_PULL_ERRORS)


def write_client_config(directory: str, ref: Reference, credentials: Tuple[str, str]) -> None:
    auth = base64.b64encode(("{}:{}".format(*credentials)).encode("utf-8")).decode("ascii")
    path = os.path.join(directory, "config.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"auths": {ref.auth_key: {"auth": auth}}}, handle)


def saved_credentials(ref: Reference, config_dir: str) -> Optional[Tuple[str, str]]:
    """Credentials `docker login` stored in plain form, so the manifest check can use them."""
    try:
        with open(os.path.join(config_dir, "config.json")) as handle:
            auths = json.load(handle).get("auths", {})
    except (OSError, ValueError):
        return None
    entry = auths.get(ref.auth_key) or auths.get(f"https://{ref.registry}") or {}
    raw = entry.get("auth")
    if not raw:
        return None
    user, _sep, password = base64.b64decode(raw).decode("utf-8").partition(":")
    return user, password


def pull(
    docker: Docker,
    ref: Reference,
    target: str,
    credentials: Optional[Tuple[str, str]],
    retries: int,
    backoff: Tuple[float, float],
    sleep: Callable[[float], None],
) -> int:
    """Pull `target`; return the number of attempts. Retries transient failures only."""
    config_dir = tempfile.mkdtemp(prefix="docker_image_digest.") if credentials else None
    try:
        args: List[str] = []
        if config_dir and credentials:
            write_client_config(config_dir, ref, credentials)
            args = ["--config", config_dir]
        delay, cap = backoff
        attempt = 0
        while True:
            attempt += 1
            rc, out, err = docker.call(*args, "pull", "--quiet", target)
            if rc == 0:
                return attempt
            message = (err or out).strip()
            if credentials:
                message = message.replace(credentials[1], "********")
            if not is_transient(message):
                raise ImageError(f"pulling {target} failed: {message}")
            if attempt > retries:
                raise ImageError(
                    f"pulling {target} failed after {attempt} attempts (transient errors); "
                    f"last error: {message}"
                )
            sleep(min(delay, cap))
            delay *= 2
    finally:
        if config_dir:
            shutil.rmtree(config_dir, ignore_errors=True)


# --- archives -----------------------------------------------------------------------------


def archive_image_ids(path: str) -> List[str]:
    """Image IDs in a `docker save` tarball, checked against the config blobs' own hashes."""
    try:
        with tarfile.open(path) as archive:
            manifest_member = archive.extractfile("manifest.json")
            if manifest_member is None:
                raise ImageError(f"{path} has no manifest.json: not a docker save archive")
            manifest = json.load(manifest_member)
            ids = []
            for entry in manifest:
                member = archive.extractfile(entry["Config"])
                if member is None:
                    raise ImageError("{} lacks config {}".format(path, entry["Config"]))
                ids.append("sha256:" + hashlib.sha256(member.read()).hexdigest())
            return ids
    except (tarfile.TarError, KeyError, ValueError, TypeError) as err:
        raise ImageError(f"{path} is not a readable docker save archive: {err}") from None


# --- pruning ------------------------------------------------------------------------------


def references_of(image: Dict[str, Any], familiar: str) -> List[str]:
    refs = list(image.get("RepoTags") or []) + list(image.get("RepoDigests") or [])
    return sorted(r for r in refs if re.split(r"[@]|:(?=[^/:]*$)", r)[0] == familiar)


def plan_prune(
    docker: Docker, ref: Reference, current_id: str, keep: int
) -> Tuple[List[str], List[str]]:
    """References to remove and image IDs kept because a container uses them."""
    in_use = set(docker.container_image_ids())
    older = []
    for image_id in docker.image_ids(ref.familiar):
        if image_id == current_id:
            continue
        image = docker.inspect(image_id)
        if image:
            older.append(image)
    older.sort(key=lambda image: image.get("Created", ""), reverse=True)
    remove: List[str] = []
    kept_in_use: List[str] = []
    for image in older[keep:]:
        if image["Id"] in in_use:
            kept_in_use.append(image["Id"])
            continue
        remove.extend(references_of(image, ref.familiar) or [image["Id"]])
    return remove, kept_in_use


# --- the module ---------------------------------------------------------------------------


def validate(params: Dict[str, Any]) -> Reference:
    ref = Reference(params["repository"])
    if params["tag"] is not None and not TAG_RE.match(params["tag"]):
        raise ImageError("tag {!r} is not a valid Docker tag".format(params["tag"]))
    for key in ("digest", "image_id"):
        value = params[key]
        if value is not None and not DIGEST_RE.match(value):
            raise ImageError(
                f"{key} {value!r} is malformed: expected sha256: followed by 64 lower-case "
                "hex digits"
            )
    if params["source"] == "registry" and not params["digest"]:
        if params["require_digest"]:
            raise ImageError("digest is required to pull: a tag can move, a digest cannot")
        if not params["tag"]:
            raise ImageError("a tag or, better, a digest is required to pull")
    if params["source"] == "archive" and not (params["archive_path"] and params["image_id"]):
        raise ImageError("source=archive needs archive_path and the expected image_id")
    if bool(params["username"]) != bool(params["password"]):
        raise ImageError("username and password go together")
    if params["keep_older"] < -1 or params["retries"] < 0 or params["space_factor"] <= 0:
        raise ImageError("keep_older >= -1, retries >= 0 and space_factor > 0 are required")
    return ref


class ImageManager:
    def __init__(
        self,
        module: Any,
        docker: Docker,
        sleep: Callable[[float], None] = time.sleep,
        free: Callable[[str], int] = free_bytes,
        opener: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.module = module
        self.params = module.params
        self.docker = docker
        self.sleep = sleep
        self.free = free
        self.opener = opener
        self.result: Dict[str, Any] = {
            "changed": False,
            "action": "none",
            "attempts": 0,
            "removed": [],
            "kept_in_use": [],
        }

    @property
    def credentials(self) -> Optional[Tuple[str, str]]:
        if self.params["username"]:
            return self.params["username"], self.params["password"]
        return None

    def cafile(self, ref: Reference) -> Optional[str]:
        ca_cert: Optional[str] = self.params["ca_cert"]
        if ca_cert:
            return ca_cert
        default = os.path.join(CERTS_D, ref.registry, "ca.crt")
        return default if os.path.isfile(default) else None

    def required_space(self, ref: Reference) -> Tuple[int, str]:
        params = self.params
        if params["source"] == "archive":
            size = os.path.getsize(params["archive_path"])
            self.result["size_bytes"] = size
            derived = (int(size * ARCHIVE_FACTOR), "archive")
        else:
            derived = self.registry_space(ref)
        if params["required_space_mb"] > 0:
            return params["required_space_mb"] * MIB, "configured"
        return derived

    def registry_space(self, ref: Reference) -> Tuple[int, str]:
        docker_config = os.environ.get("DOCKER_CONFIG") or os.path.join(
            os.environ.get("HOME", "/"), ".docker"
        )
        credentials = self.credentials or saved_credentials(ref, docker_config)
        registry = Registry(ref, credentials, self.cafile(ref), self.params["timeout"], self.opener)
        bases = [f"https://{ref.api_host}"]
        if ref.is_docker_hub:
            bases = [m.rstrip("/") for m in self.params["mirrors"]] + bases
        try:
            wanted = self.params["digest"] or self.params["tag"]
            size = remote_manifest_size(registry, wanted, bases, host_platform())
        except AuthError:
            if credentials is not None:
                raise
            # Docker may hold credentials in a helper we cannot read: the pull decides.
            return self.fallback("the registry wants credentials this module cannot read")
        except (OSError, ValueError) as err:
            return self.fallback(str(err))
        self.result["size_bytes"] = size
        return int(size * self.params["space_factor"]), "manifest"

    def fallback(self, why: str) -> Tuple[int, str]:
        self.module.warn(
            f"could not read the image size from the registry ({why}); requiring "
            f"{self.params['fallback_space_mb']} MiB free"
        )
        return self.params["fallback_space_mb"] * MIB, "fallback"

    def target(self, ref: Reference) -> str:
        if self.params["digest"]:
            return f"{ref.repository}@{self.params['digest']}"
        return f"{ref.repository}:{self.params['tag']}"

    def present_id(self, ref: Reference) -> Optional[str]:
        if self.params["source"] == "archive":
            image = self.docker.inspect(self.params["image_id"])
        else:
            image = self.docker.inspect(self.target(ref))
        return image["Id"] if image else None

    def check_archive(self) -> None:
        path = self.params["archive_path"]
        if not os.path.isfile(path):
            raise ImageError(f"archive {path} does not exist on the host")
        ids = archive_image_ids(path)
        if self.params["image_id"] not in ids:
            raise ImageError(
                "archive {} holds image {}, not the expected {}: refusing to load it".format(
                    path, ", ".join(ids) or "nothing", self.params["image_id"]
                )
            )

    def obtain(self, ref: Reference) -> None:
        params = self.params
        if params["source"] == "archive":
            self.check_archive()
        required, source = self.required_space(ref)
        root = self.docker.root_dir()
        self.result.update(required_bytes=required, size_source=source, docker_root=root)
        what = "image " + (
            params["image_id"] if params["source"] == "archive" else self.target(ref)
        )
        self.result["free_bytes"] = ensure_space(root, required, what, self.free)
        self.result["changed"] = True
        if params["source"] == "archive":
            self.result["action"] = "loaded"
            if not self.module.check_mode:
                self.docker.check("load", "--quiet", "--input", params["archive_path"])
        else:
            self.result["action"] = "pulled"
            if not self.module.check_mode:
                self.result["attempts"] = pull(
                    self.docker,
                    ref,
                    self.target(ref),
                    self.credentials,
                    params["retries"],
                    (params["backoff_initial"], params["backoff_max"]),
                    self.sleep,
                )

    def verify(self, ref: Reference) -> str:
        image_id = self.present_id(ref)
        expected = self.params["image_id"]
        if image_id is None:
            raise ImageError(
                "after the {}, image {} is not in the engine".format(
                    self.result["action"], expected or self.target(ref)
                )
            )
        if expected and image_id != expected:
            raise ImageError(
                f"image {self.target(ref)} has ID {image_id}, not the expected {expected}"
            )
        return image_id

    def ensure_tag(self, ref: Reference, image_id: Optional[str]) -> None:
        tag = self.params["tag"]
        if not tag:
            return
        name = f"{ref.repository}:{tag}"
        current = self.docker.inspect(name)
        if current and current["Id"] == image_id:
            return
        self.result["changed"] = True
        if not self.module.check_mode and image_id:
            self.docker.check("tag", image_id, name)

    def prune(self, ref: Reference, image_id: Optional[str]) -> None:
        keep = self.params["keep_older"]
        if keep < 0:
            return
        remove, kept_in_use = plan_prune(self.docker, ref, image_id or "", keep)
        self.result["kept_in_use"] = kept_in_use
        self.result["removed"] = remove
        if not remove:
            return
        self.result["changed"] = True
        if not self.module.check_mode:
            for reference in remove:
                rc, out, err = self.docker.call("image", "rm", reference)
                # Removing a tag also drops digest references of the same repository.
                if rc != 0 and self.docker.inspect(reference) is not None:
                    raise ImageError(f"removing {reference} failed: {(err or out).strip()}")

    def run(self) -> Dict[str, Any]:
        ref = validate(self.params)
        before = self.present_id(ref)
        image_id = before
        if before is None:
            self.obtain(ref)
            if not self.module.check_mode:
                image_id = self.verify(ref)
        elif self.params["image_id"] and before != self.params["image_id"]:
            raise ImageError(
                f"image {self.target(ref)} has ID {before}, not the expected "
                f"{self.params['image_id']}"
            )
        self.ensure_tag(ref, image_id)
        self.prune(ref, image_id)
        self.result["image_id"] = image_id or self.params["image_id"] or ""
        if self.params["source"] == "archive":
            self.result["reference"] = self.result["image_id"]
        else:
            self.result["reference"] = self.target(ref)
        self.result["diff"] = {
            "before": "image: %s\n" % (before or "absent"),
            "after": "image: {}\nremoved: {}\n".format(
                image_id or "present", ", ".join(self.result["removed"]) or "nothing"
            ),
        }
        return self.result


def argument_spec() -> Dict[str, Any]:
    return {
        "repository": {"type": "str", "required": True},
        "tag": {"type": "str"},
        "digest": {"type": "str"},
        "require_digest": {"type": "bool", "default": True},
        "image_id": {"type": "str"},
        "source": {"type": "str", "choices": ["registry", "archive"], "default": "registry"},
        "archive_path": {"type": "path"},
        "username": {"type": "str"},
        "password": {"type": "str", "no_log": True},
        "ca_cert": {"type": "path"},
        "mirrors": {"type": "list", "elements": "str", "default": []},
        "required_space_mb": {"type": "int", "default": 0},
        "space_factor": {"type": "float", "default": 2.5},
        "fallback_space_mb": {"type": "int", "default": 25000},
        "retries": {"type": "int", "default": 5},
        "backoff_initial": {"type": "float", "default": 5},
        "backoff_max": {"type": "float", "default": 120},
        "timeout": {"type": "int", "default": 30},
        "keep_older": {"type": "int", "default": -1},
        "docker_bin": {"type": "str", "default": "docker"},
    }


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    binary = module.get_bin_path(module.params["docker_bin"], required=True)
    docker = Docker(module.run_command, binary)
    manager = ImageManager(module, docker)
    try:
        result = manager.run()
    except ImageError as err:
        module.fail_json(msg=str(err), **manager.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
