# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image references as Docker parses them: repository, tag, digest.

The one implementation of the reference grammar: the docker_image_digest module and the
``unbroken.training.image_*`` tests (role validation) both use it.
Standard library only: this runs on managed hosts (Python >= 3.8).
"""

from __future__ import annotations

import re
from typing import Optional

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


class ImageError(Exception):
    """A failure with a message meant for the user."""


def repository_problem(repository: str) -> Optional[str]:
    """Why ``repository`` is not an image repository, or None when it is one."""
    if not REPOSITORY_RE.match(repository):
        return (
            f"repository {repository!r} is not a valid image repository (lower-case "
            "path components, optional registry host[:port] first, no tag or digest)"
        )
    first, _sep, rest = repository.partition("/")
    path = rest if rest and _is_host(first) else repository
    if not PATH_RE.match(path):
        return (
            f"repository {repository!r} is not a valid image repository: path components "
            "must be lower case (only a registry host may contain upper case, '.' or ':')"
        )
    return None


def is_tag(value: str) -> bool:
    return bool(TAG_RE.match(value))


def is_digest(value: str) -> bool:
    """A content digest as Docker prints it: sha256 and 64 lower-case hex digits."""
    return bool(DIGEST_RE.match(value))


def _is_host(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost"


class Reference:
    """A repository split into registry, API host and path, as Docker resolves it."""

    def __init__(self, repository: str) -> None:
        problem = repository_problem(repository)
        if problem:
            raise ImageError(problem)
        first, _sep, rest = repository.partition("/")
        if rest and _is_host(first):
            self.registry, self.path = first, rest
        else:
            self.registry, self.path = DOCKER_HUB, repository
        if self.is_docker_hub and "/" not in self.path:
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
        """The key of this registry in a Docker client configuration's ``auths``."""
        return DOCKER_HUB_AUTH_KEY if self.is_docker_hub else self.registry

    @property
    def familiar(self) -> str:
        """The name `docker image ls` and RepoDigests use for this repository."""
        if self.is_docker_hub:
            return self.path[len("library/") :] if self.path.startswith("library/") else self.path
        return f"{self.registry}/{self.path}"
