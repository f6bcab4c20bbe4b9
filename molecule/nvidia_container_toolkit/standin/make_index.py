# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""TEST DOUBLE helper: write Packages and Release for a flat apt repository
(what NVIDIA publishes under stable/deb/ARCH), without apt-utils."""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path


def control(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True
    ).stdout.strip()


def stanza(deb: Path) -> str:
    data = deb.read_bytes()
    return "\n".join(
        [
            control(deb),
            f"Filename: ./{deb.name}",
            f"Size: {len(data)}",
            f"MD5sum: {hashlib.md5(data).hexdigest()}",
            f"SHA256: {hashlib.sha256(data).hexdigest()}",
        ]
    )


def main(directory: str, arch: str) -> None:
    root = Path(directory)
    packages = "\n\n".join(stanza(deb) for deb in sorted(root.glob("*.deb"))) + "\n"
    (root / "Packages").write_text(packages)
    (root / "Packages.gz").write_bytes(gzip.compress(packages.encode(), mtime=0))
    lines = [
        "Origin: unbroken.training stand-in",
        "Label: STAND-IN libnvidia-container",
        f"Architectures: {arch}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
    ]
    for algo, name in (("md5", "MD5Sum"), ("sha256", "SHA256")):
        lines.append(f"{name}:")
        for index in ("Packages", "Packages.gz"):
            data = (root / index).read_bytes()
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {index}")
    (root / "Release").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
