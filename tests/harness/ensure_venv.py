# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Create or update .venv from the requirements files, only when they changed.

requirements-dev.txt holds the tools (Ansible, linters, Molecule, pytest);
requirements-runtime.txt what the training runtime's tests need (PyTorch, NumPy).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
REQUIREMENTS = [ROOT / "requirements-dev.txt", ROOT / "requirements-runtime.txt"]
STAMP = VENV / ".requirements.sha256"


def main() -> int:
    digest = hashlib.sha256(b"".join(r.read_bytes() for r in REQUIREMENTS)).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        print(f"{VENV} is up to date")
        return 0
    if not (VENV / "bin" / "python").exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    pip = [
        str(VENV / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    files = [arg for r in REQUIREMENTS for arg in ("-r", str(r))]
    subprocess.check_call([*pip, *files])
    STAMP.write_text(digest + "\n")
    print(f"{VENV} installed from {', '.join(r.name for r in REQUIREMENTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
