# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Unit tests for unbroken.training.host_info: real files, directories and programs in a
temporary directory; only the package manager and systemctl answers are stand-ins, taken
from what dpkg-query, rpm, ufw and systemctl print."""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.unbroken.training.plugins.modules import host_info
from module_runner import run_module

# dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n' tmux mosh screen nosuch
DPKG_OUT = "tmux\tii \t3.3a-3\nmosh\trc \t1.4.0-1\nscreen\tii \t4.9.0-4\n"
RPM_OUT = "tmux\t3.2a-5.el9\npackage mosh is not installed\n"


def fake_host(monkeypatch: pytest.MonkeyPatch, bins: dict[str, str]) -> list[list[str]]:
    """Answer get_bin_path for ``bins`` only, and run_command for them with canned output;
    any other program runs for real. Returns the commands run through the stand-ins."""
    calls: list[list[str]] = []
    real_run = AnsibleModule.run_command

    def get_bin_path(self: AnsibleModule, name: str, *_: Any, **__: Any) -> str | None:
        return f"/stand-in/{name}" if name in bins else None

    def run_command(self: AnsibleModule, args: Any, *a: Any, **kw: Any) -> tuple[int, str, str]:
        if isinstance(args, list) and str(args[0]).startswith("/stand-in/"):
            calls.append(list(args))
            return 0, bins[str(args[0]).rsplit("/", 1)[1]], ""
        return real_run(self, args, *a, **kw)

    monkeypatch.setattr(AnsibleModule, "get_bin_path", get_bin_path)
    monkeypatch.setattr(AnsibleModule, "run_command", run_command)
    return calls


def test_packages_from_one_dpkg_query_run_with_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_host(monkeypatch, {"dpkg-query": DPKG_OUT})
    result = run_module(host_info, {"packages": ["tmux", "mosh", "screen", "nosuch"]})
    assert result["changed"] is False
    assert result["packages"] == {
        "tmux": {"installed": True, "version": "3.3a-3"},
        # Removed, its configuration left ("rc"): not installed.
        "mosh": {"installed": False, "version": None},
        "screen": {"installed": True, "version": "4.9.0-4"},
        "nosuch": {"installed": False, "version": None},
    }
    assert len(calls) == 1 and calls[0][-4:] == ["tmux", "mosh", "screen", "nosuch"]


def test_packages_from_rpm_where_there_is_no_dpkg(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, {"rpm": RPM_OUT})
    result = run_module(host_info, {"packages": ["tmux", "mosh"]})
    assert result["packages"] == {
        "tmux": {"installed": True, "version": "3.2a-5.el9"},
        "mosh": {"installed": False, "version": None},
    }


def test_apt_index_missing_lists_and_the_age_of_the_success_stamp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_host(monkeypatch, {"apt-get": ""})
    lists, stamp = tmp_path / "lists", tmp_path / "update-success-stamp"
    lists.mkdir()
    monkeypatch.setattr(host_info, "APT_LISTS", str(lists))
    monkeypatch.setattr(host_info, "APT_STAMP", str(stamp))
    assert run_module(host_info, {"apt_index": True})["apt_index"]["present"] is False

    (lists / "deb.example_dists_bookworm_main_binary-amd64_Packages").write_text("")
    stamp.write_text("")
    two_hours_ago = time.time() - 7200
    os.utime(stamp, (two_hours_ago, two_hours_ago))
    index = run_module(host_info, {"apt_index": True})["apt_index"]
    assert index["present"] is True
    assert 7190 <= index["age_seconds"] <= 7300
    # Without the stamp, the lists directory's time (new: just written) is what apt reads.
    stamp.unlink()
    assert run_module(host_info, {"apt_index": True})["apt_index"]["age_seconds"] < 100


def test_no_apt_index_on_a_host_without_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, {"rpm": ""})
    assert run_module(host_info, {"apt_index": True})["apt_index"] is None


def test_files_report_mode_owner_and_the_checksum_copy_reports(tmp_path: Path) -> None:
    wrapper = tmp_path / "mosh-server"
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/mosh-server "$@"\n')
    wrapper.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(wrapper)
    files = run_module(
        host_info, {"files": [str(wrapper), str(tmp_path / "absent"), str(link), str(tmp_path)]}
    )["files"]
    me = files[str(wrapper)]
    assert me["exists"] is True and me["type"] == "file" and me["mode"] == "0755"
    assert me["checksum"] == hashlib.sha1(wrapper.read_bytes()).hexdigest()
    assert me["owner"] == pwd.getpwuid(os.getuid()).pw_name
    assert files[str(tmp_path / "absent")] == {"exists": False}
    assert files[str(link)]["type"] == "link" and "checksum" not in files[str(link)]
    assert files[str(tmp_path)]["type"] == "directory"
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755  # read only, nothing changed


@pytest.mark.parametrize(
    ("ufw", "units", "active"),
    [
        ("Status: inactive\n", "inactive\ninactive\ninactive\n", []),
        ("Status: active\n\nTo Action From\n", "inactive\nactive\ninactive\n", ["ufw", "iptables"]),
        (None, "active\nunknown\nactive\n", ["firewalld", "nftables"]),
    ],
)
def test_active_firewalls_in_order_of_preference(
    monkeypatch: pytest.MonkeyPatch, ufw: str | None, units: str, active: list[str]
) -> None:
    bins = {"systemctl": units, **({"ufw": ufw} if ufw is not None else {})}
    calls = fake_host(monkeypatch, bins)
    assert run_module(host_info, {"firewall": True})["firewall"] == {"active": active}
    assert [
        "/stand-in/systemctl",
        "is-active",
        "firewalld",
        "netfilter-persistent",
        "nftables",
    ] in calls


def test_nothing_is_read_that_was_not_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_host(monkeypatch, {"dpkg-query": DPKG_OUT, "systemctl": "", "locale": "C\n"})
    result = run_module(host_info, {})
    assert calls == []
    assert result["packages"] == {} and result["apt_index"] is None and result["locales"] == []
    assert (
        result["firewall"] == {"active": []} and result["commands"] == {} and result["files"] == {}
    )
    assert result["units"] == {} and result["pid"] is None and result["images"] == {}


def test_commands_report_exit_status_output_and_environment(tmp_path: Path) -> None:
    script = tmp_path / "probe"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "print(repr(os.environ.get('LANG')), repr(os.environ.get('LC_ALL')))\n"
        "print('broken', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    script.chmod(0o755)
    result = run_module(
        host_info,
        {
            "commands": [
                {
                    "name": "probe",
                    "argv": [str(script)],
                    "environment": {"LANG": "C", "LC_ALL": ""},
                },
                {"name": "missing", "argv": [str(tmp_path / "no-such-program")]},
            ]
        },
    )
    probe = result["commands"]["probe"]
    assert probe == {"rc": 3, "stdout": "'C' ''\n", "stderr": "broken\n", "skipped": False}
    missing = result["commands"]["missing"]
    assert missing["rc"] == 127 and "No such file or directory" in missing["stderr"]


def test_commands_are_not_run_in_check_mode(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run_module(
        host_info,
        {"commands": [{"name": "touch", "argv": ["touch", str(marker)]}]},
        check_mode=True,
    )
    assert result["commands"]["touch"] == {"rc": None, "stdout": "", "stderr": "", "skipped": True}
    assert not marker.exists()


def test_repeated_command_names_are_refused() -> None:
    commands = [{"name": "a", "argv": ["true"]}, {"name": "a", "argv": ["false"]}]
    result = run_module(host_info, {"commands": commands}, fails=True)
    assert "repeated: a" in result["msg"]


def test_units_report_each_active_state_from_one_systemctl_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # systemctl is-active ssh ssh.socket, sshd running from its service
    calls = fake_host(monkeypatch, {"systemctl": "active\ninactive\n"})
    assert run_module(host_info, {"units": ["ssh", "ssh.socket"]})["units"] == {
        "ssh": "active",
        "ssh.socket": "inactive",
    }
    assert calls == [["/stand-in/systemctl", "is-active", "ssh", "ssh.socket"]]


def test_units_are_empty_without_a_running_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    # "System has not been booted with systemd" goes to stderr: nothing on stdout.
    fake_host(monkeypatch, {"systemctl": ""})
    assert run_module(host_info, {"units": ["ssh", "ssh.socket"]})["units"] == {}
    fake_host(monkeypatch, {})
    assert run_module(host_info, {"units": ["ssh"]})["units"] == {}


def test_free_space_is_measured_where_a_missing_path_would_be_created(tmp_path: Path) -> None:
    missing = tmp_path / "not" / "yet"
    result = run_module(host_info, {"free_space": [str(tmp_path), str(missing)]})["free_space"]
    st = os.statvfs(tmp_path)
    for path in (tmp_path, missing):
        entry = result[str(path)]
        assert entry["measured_at"] == str(tmp_path)
        # Other writers may change it between the two reads: same order of magnitude.
        assert abs(entry["available_bytes"] - st.f_bavail * st.f_frsize) < 64 << 20


@pytest.mark.parametrize("check_mode", [False, True])
def test_systemd_version_is_a_number_also_in_check_mode(
    monkeypatch: pytest.MonkeyPatch, check_mode: bool
) -> None:
    # systemctl --version on Debian 12 (first two lines)
    calls = fake_host(monkeypatch, {"systemctl": "systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT\n"})
    result = run_module(host_info, {"systemd": True}, check_mode=check_mode)
    assert result["systemd"] == {"version": 252, "error": None}
    assert calls == [["/stand-in/systemctl", "--version"]]
    assert run_module(host_info, {})["systemd"] == {}  # not asked for: not run
    assert len(calls) == 1


def test_systemd_version_says_why_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_host(monkeypatch, {"systemctl": "Failed to connect to bus\n"})
    missing = run_module(host_info, {"systemd": True})["systemd"]
    assert missing["version"] is None and "Failed to connect to bus" in missing["error"]
    fake_host(monkeypatch, {})
    absent = run_module(host_info, {"systemd": True})["systemd"]
    assert absent == {"version": None, "error": "systemctl is not installed (no systemctl in PATH)"}


def test_pid_is_the_first_live_process_of_the_pid_files(tmp_path: Path) -> None:
    missing, garbage, stale, live = (tmp_path / n for n in ("missing", "garbage", "stale", "live"))
    garbage.write_text("sshd\n")
    # A PID above the kernel's maximum (pid_max is at most 2**22) is never a live process.
    stale.write_text(f"{2**22 + 1}\n")
    live.write_text(f"{os.getpid()}\n")
    paths = [str(p) for p in (missing, garbage, stale, live)]
    assert run_module(host_info, {"pid_files": paths})["pid"] == os.getpid()
    assert run_module(host_info, {"pid_files": paths[:3]})["pid"] is None


def stand_in_docker(tmp_path: Path) -> Path:
    """A docker client stand-in that holds one image, answering as docker image inspect does."""
    script = tmp_path / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "assert sys.argv[1:4] == ['image', 'inspect', '--format'], sys.argv\n"
        "if sys.argv[4:] == ['{{.Id}}', 'pytorch:cpu']:\n"
        "    print('sha256:' + 'a' * 64)\n"
        "else:\n"
        "    print('Error response from daemon: No such image: ' + sys.argv[-1], file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("check", [False, True])
def test_images_report_the_id_or_why_each_one_is_missing(tmp_path: Path, check: bool) -> None:
    """Read in check mode too (inspect changes nothing); a repeated reference is read once."""
    docker = stand_in_docker(tmp_path)
    result = run_module(
        host_info,
        {"images": ["pytorch:cpu", "not-here:1", "pytorch:cpu"], "docker_binary": str(docker)},
        check_mode=check,
    )
    assert result["images"] == {
        "pytorch:cpu": {"present": True, "id": "sha256:" + "a" * 64, "error": None},
        "not-here:1": {
            "present": False,
            "id": None,
            "error": "Error response from daemon: No such image: not-here:1",
        },
    }


def test_images_without_a_docker_client_are_missing_with_the_reason(tmp_path: Path) -> None:
    docker = str(tmp_path / "no-docker")
    result = run_module(host_info, {"images": ["pytorch:cpu"], "docker_binary": docker})
    image = result["images"]["pytorch:cpu"]
    assert image["present"] is False and image["id"] is None
    assert image["error"].startswith(f"{docker}: ") and "No such file" in image["error"]


def test_network_lists_interfaces_and_a_port_this_test_listens_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        network = run_module(host_info, {"network": True}, check_mode=True)["network"]
    assert "lo" in network["interfaces"]
    assert port in network["listening_tcp"]
    assert network["default_interface"] in ["", *network["interfaces"]]
    # The firewall opening of a multi-node job is built from these two.
    assert "127.0.0.1" in network["addresses"]["lo"]
    assert set(network["addresses"]) <= set(network["interfaces"])
    low, high = network["local_port_range"]
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
        assert [low, high] == [int(x) for x in handle.read().split()]
    assert 1024 <= low <= high <= 65535
    closed = run_module(host_info, {"network": True})["network"]
    assert port not in closed["listening_tcp"]
    off = run_module(host_info, {})["network"]
    assert off == {
        "interfaces": [],
        "default_interface": "",
        "listening_tcp": [],
        "addresses": {},
        "local_port_range": [],
    }
