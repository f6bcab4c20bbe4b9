# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docker command-line client: inspect, tag, load, remove, and pull with progress.

Pulls go through `docker pull`, so the engine's mirrors, certs.d and proxy settings and the
client's credential helpers apply as they do for a person at the shell. Explicit
credentials reach it through a temporary client configuration, never the command line.
Standard library only: this runs on managed hosts (Python >= 3.8).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ansible_collections.unbroken.training.plugins.module_utils.image_reference import (
    ImageError,
    Reference,
)
from ansible_collections.unbroken.training.plugins.module_utils.image_registry import (
    Credentials,
    Layer,
)

Runner = Callable[..., Tuple[int, str, str]]
# Runs a command, handing each stdout line to the callback; returns (rc, stderr).
Streamer = Callable[[List[str], Callable[[str], None]], Tuple[int, str]]

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
# Layer states `docker pull` prints (without a terminal) once a layer is on disk.
LAYER_DONE = ("Download complete", "Pull complete", "Already exists")
LAYER_SEEN = ("Pulling fs layer", "Waiting", "Verifying Checksum", "Extracting", *LAYER_DONE)


def stream_command(args: List[str], on_line: Callable[[str], None]) -> Tuple[int, str]:
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL
        ) as process:
            for raw in process.stdout or ():
                on_line(raw.decode("utf-8", "replace").rstrip("\n"))
            rc = process.wait()
        errors.seek(0)
        return rc, errors.read().decode("utf-8", "replace")


class Docker:
    def __init__(self, run: Runner, binary: str, stream: Optional[Streamer] = None) -> None:
        self._run = run
        self._stream = stream or stream_command
        self.binary = binary

    def call(self, *args: str, **kwargs: Any) -> Tuple[int, str, str]:
        return self._run([self.binary, *args], **kwargs)

    def stream(self, args: Sequence[str], on_line: Callable[[str], None]) -> Tuple[int, str]:
        return self._stream([self.binary, *args], on_line)

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


class PullProgress:
    """Layers and bytes done, from `docker pull`'s lines and the manifest's layer sizes.

    Without a terminal the client prints a line per layer state, not byte counters, so
    bytes advance a whole layer at a time (sizes from the registry manifest, when known).
    """

    def __init__(
        self,
        target: str,
        layers: Sequence[Layer],
        report: Callable[[Dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        # `docker pull` names a layer by the first 12 hex digits of its digest.
        self.sizes = {layer.digest.split(":")[-1][:12]: layer.size for layer in layers}
        self.bytes_total = sum(layer.size for layer in layers)
        self.seen: Dict[str, str] = {}
        self.report = report
        self.clock = clock
        self.started = clock()
        self.attempt = 0

    def feed(self, line: str) -> None:
        short, sep, state = line.partition(": ")
        if not sep or len(short) != 12 or state.strip() not in LAYER_SEEN:
            return
        state = state.strip()
        if self.seen.get(short) == state or (self.seen.get(short) in LAYER_DONE):
            return
        self.seen[short] = state
        self.report(self.snapshot())

    def snapshot(self, phase: str = "pulling") -> Dict[str, Any]:
        done = [short for short, state in self.seen.items() if state in LAYER_DONE]
        return {
            "target": self.target,
            "phase": phase,
            "attempt": self.attempt,
            "layers_done": len(done),
            "layers_total": max(len(self.sizes), len(self.seen)),
            "bytes_done": sum(self.sizes.get(short, 0) for short in done),
            "bytes_total": self.bytes_total,
            "elapsed_s": round(self.clock() - self.started, 1),
        }


def is_transient(message: str) -> bool:
    lowered = message.lower()
    return not any(marker in lowered for marker in PERMANENT_PULL_ERRORS)


def write_client_config(directory: str, ref: Reference, credentials: Credentials) -> None:
    auth = base64.b64encode(("{}:{}".format(*credentials)).encode("utf-8")).decode("ascii")
    path = os.path.join(directory, "config.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"auths": {ref.auth_key: {"auth": auth}}}, handle)


def pull(
    docker: Docker,
    ref: Reference,
    target: str,
    credentials: Optional[Credentials],
    retries: int,
    backoff: Tuple[float, float],
    sleep: Callable[[float], None],
    progress: Optional[PullProgress] = None,
) -> int:
    """Pull `target`; return the number of attempts. Retries transient failures only."""
    config_dir = tempfile.mkdtemp(prefix="docker_image_digest.") if credentials else None
    on_line = progress.feed if progress else _ignore
    try:
        args: List[str] = []
        if config_dir and credentials:
            write_client_config(config_dir, ref, credentials)
            args = ["--config", config_dir]
        delay, cap = backoff
        attempt = 0
        while True:
            attempt += 1
            if progress:
                progress.attempt = attempt
                progress.report(progress.snapshot())
            rc, err = docker.stream([*args, "pull", target], on_line)
            if rc == 0:
                return attempt
            message = err.strip() or f"docker pull exited with status {rc}"
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


def _ignore(_line: str) -> None:
    """Lines of a pull nobody watches."""


def write_progress(path: str, state: Dict[str, Any]) -> None:
    """Replace `path` atomically, so a reader never sees half a document."""
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=".progress.", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
