# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk policy for images: free space before a pull or load, archive IDs, pruning.

None of this is in the docker client or community.docker: the engine starts a pull
whatever the free space and fails half-way; `docker load` trusts a tarball's contents;
`docker image prune` knows nothing of "keep N older versions of this repository".
Standard library only: this runs on managed hosts (Python >= 3.8).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from typing import Any, Callable, Dict, List, Tuple

from ansible_collections.unbroken.training.plugins.module_utils.docker_cli import Docker
from ansible_collections.unbroken.training.plugins.module_utils.image_reference import (
    ImageError,
    Reference,
)

MIB = 1024 * 1024
# A `docker save` tarball is already uncompressed: loading needs about its own size.
ARCHIVE_FACTOR = 1.1


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
