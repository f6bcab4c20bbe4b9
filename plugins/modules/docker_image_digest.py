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
  - Pulls with C(docker pull), so the engine's mirrors, C(certs.d) and proxy settings and the
    client's saved logins and credential helpers apply; retries with exponential backoff on
    transient failures only; a missing manifest, rejected credentials or a certificate error
    fail at once.
  - Credentials are handed to C(docker pull) through a temporary client configuration that is
    removed afterwards; they are never written to a persistent file nor returned.
  - The docker client does what it can do (pull, load, tag, remove, inspect). The module adds
    only what neither the client nor community.docker does. The digest-only policy (no pull
    by tag unless allowed). The manifest read before a pull, for the size (free-disk check,
    progress) and a definite "no such digest" or "credentials rejected" before minutes of
    pulling; C(docker manifest inspect) asks no mirror, and community.docker's modules need
    the Docker SDK for Python on the host. The free-disk check. The image ID check of an
    archive before C(docker load). Pruning that keeps N older versions and every image a
    container uses.
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
  progress_file:
    description:
      - While pulling, keep a JSON document here with the layers and bytes done so far
        (C(target), C(attempt), C(layers_done), C(layers_total), C(bytes_done),
        C(bytes_total), C(elapsed_s)), replaced atomically at each change and removed when
        the module ends.
      - Meant for a run with C(async) and a poller such as M(unbroken.training.docker_pull_progress)
        that shows it in the task output; bytes advance a layer at a time, since C(docker pull)
        prints no byte counts without a terminal.
    type: path
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

import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.module_utils.docker_cli import (
    Docker,
    PullProgress,
    pull,
    write_progress,
)
from ansible_collections.unbroken.training.plugins.module_utils.image_reference import (
    ImageError,
    Reference,
    is_digest,
    is_tag,
)
from ansible_collections.unbroken.training.plugins.module_utils.image_registry import (
    AuthError,
    Credentials,
    Manifest,
    Registry,
    client_config_dir,
    host_platform,
    remote_manifest,
    saved_credentials,
)
from ansible_collections.unbroken.training.plugins.module_utils.image_storage import (
    ARCHIVE_FACTOR,
    MIB,
    archive_image_ids,
    ensure_space,
    free_bytes,
    plan_prune,
)

CERTS_D = "/etc/docker/certs.d"


# --- the module ---------------------------------------------------------------------------


def validate(params: Dict[str, Any]) -> Reference:
    ref = Reference(params["repository"])
    if params["tag"] is not None and not is_tag(params["tag"]):
        raise ImageError("tag {!r} is not a valid Docker tag".format(params["tag"]))
    for key in ("digest", "image_id"):
        value = params[key]
        if value is not None and not is_digest(value):
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
        self.manifest = Manifest(0, [])
        self.result: Dict[str, Any] = {
            "changed": False,
            "action": "none",
            "attempts": 0,
            "removed": [],
            "kept_in_use": [],
        }

    @property
    def credentials(self) -> Optional[Credentials]:
        if self.params["username"]:
            return self.params["username"], self.params["password"]
        return None

    def cafile(self, ref: Reference) -> Optional[str]:
        if self.params["ca_cert"]:
            return str(self.params["ca_cert"])
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
        credentials = self.credentials or saved_credentials(
            ref, client_config_dir(), self.module.run_command
        )
        registry = Registry(ref, credentials, self.cafile(ref), self.params["timeout"], self.opener)
        bases = [f"https://{ref.api_host}"]
        if ref.is_docker_hub:
            bases = [m.rstrip("/") for m in self.params["mirrors"]] + bases
        try:
            wanted = self.params["digest"] or self.params["tag"]
            self.manifest = remote_manifest(registry, wanted, bases, host_platform())
        except AuthError:
            if credentials is not None:
                raise
            # Docker may hold credentials in a helper we cannot read: the pull decides.
            return self.fallback("the registry wants credentials this module cannot read")
        except (OSError, ValueError) as err:
            return self.fallback(str(err))
        self.result["size_bytes"] = self.manifest.size
        return int(self.manifest.size * self.params["space_factor"]), "manifest"

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
                    self.progress(ref),
                )

    def progress(self, ref: Reference) -> Optional[PullProgress]:
        """Layers and bytes done, written where a poller reads them (progress_file)."""
        path = self.params["progress_file"]
        if not path:
            return None
        return PullProgress(
            self.target(ref), self.manifest.layers, lambda state: write_progress(path, state)
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
        "progress_file": {"type": "path"},
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
    finally:
        if module.params["progress_file"] and os.path.exists(module.params["progress_file"]):
            os.unlink(module.params["progress_file"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
