# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The gpg listing parser, fed what a real gpg prints for keys it made for the test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.unbroken.training.plugins.filter.gpg import gpg_primary_keys
from ansible_collections.unbroken.training.plugins.module_utils.gpg_colons import primary_keys

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="needs gpg")


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> str:
    home.mkdir(mode=0o700, exist_ok=True)
    run = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", *args],
        input=stdin, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return run.stdout.decode()


def _new_key(home: Path, uid: str, expire: str, *faked: str) -> str:
    """A signing key with a subkey; returns the primary key's fingerprint."""
    _gpg(home, *faked, "--quick-gen-key", uid, "ed25519", "sign", expire)
    listing = _gpg(home, "--with-colons", "--list-keys", uid)
    fingerprint = next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr"))
    _gpg(home, *faked, "--quick-add-key", fingerprint, "cv25519", "encr", expire)
    return fingerprint


def _show(home: Path, armored: bytes) -> str:
    return _gpg(home, "--with-colons", "--fixed-list-mode", "--show-keys", stdin=armored)


def test_primary_keys_of_a_key_file_with_subkeys(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    first = _new_key(home, "UT one <one@example.invalid>", "2031-01-01")
    second = _new_key(home, "UT two <two@example.invalid>", "never")
    keys = primary_keys(_show(tmp_path / "reader", _gpg(home, "--armor", "--export").encode()))
    assert [k["fingerprint"] for k in keys] == [first, second]  # the subkeys are left out
    assert keys[0]["expires"] == 1925035200  # 2031-01-01T12:00:00Z: gpg expires keys at noon
    assert keys[1]["expires"] == 0
    assert all(k["validity"] not in ("e", "r") for k in keys)


def test_an_expired_key_says_so(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    faked = ("--faked-system-time", "20200101T000000")
    fingerprint = _new_key(home, "UT old <old@example.invalid>", "2020-01-02", *faked)
    keys = primary_keys(_show(tmp_path / "reader", _gpg(home, "--armor", "--export").encode()))
    assert keys == [{"fingerprint": fingerprint, "validity": "e", "expires": 1577966400}]


def test_nothing_or_not_a_listing_has_no_keys() -> None:
    assert primary_keys("") == []
    assert primary_keys("gpg: no valid OpenPGP data found.\n") == []
    with pytest.raises(AnsibleFilterError, match="expects the text"):
        gpg_primary_keys(None)
