# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Read the primary keys of ``gpg --with-colons --fixed-list-mode --show-keys`` output.

The format is GnuPG's doc/DETAILS: one record per line, fields separated by ``:``. A
``pub`` record (field 2 validity, field 7 expiry as seconds since the epoch, empty for
never) is followed by its ``fpr`` record (field 10 the fingerprint); ``sub`` records and
their ``fpr`` belong to subkeys, which never sign a repository here.
"""

from __future__ import annotations

from typing import Any, Dict, List


def primary_keys(text: str) -> List[Dict[str, Any]]:
    """Each primary key: fingerprint (upper case), validity letter, expires (0 = never)."""
    keys: List[Dict[str, Any]] = []
    pending = None
    for line in text.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            pending = {
                "validity": fields[1] if len(fields) > 1 else "",
                "expires": int(fields[6]) if len(fields) > 6 and fields[6].isdigit() else 0,
            }
        elif fields[0] == "fpr" and pending is not None and len(fields) > 9:
            keys.append({"fingerprint": fields[9].upper(), **pending})
            pending = None
        elif fields[0] == "sub":
            pending = None
    return keys
