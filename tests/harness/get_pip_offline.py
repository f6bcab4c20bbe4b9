# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Offline replacement for the get-pip.py bootstrap that ansible-test downloads.

ansible-test fetches get-pip.py from a host this machine cannot reach before its
`import` sanity test. This script does the same job with what is here: pip from
the interpreter's own ensurepip, then upgraded to the requested version through
the machine's configured package index.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    return subprocess.call([sys.executable, "-m", "pip", "install", *args])


if __name__ == "__main__":
    sys.exit(main())
