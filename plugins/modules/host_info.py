#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_info
short_description: Read what a role needs to know about a host in one module run, as structured data
version_added: 0.1.0
description:
  - Reads, in one round trip, the facts the collection's roles decide on before they change
    anything, and returns them as data that C(when:) conditions use directly
    (no shell output parsed back by Jinja).
  - Each part is read only when asked for, so a role pays for what it uses. Nothing is
    changed on the host; O(commands) (which runs programs) is skipped in check mode.
  - Installed packages with their versions (dpkg, else rpm); the apt index's presence and
    age, as apt's C(cache_valid_time) reads it; the locales C(locale -a) lists; checksum,
    mode and owner of files; which firewall is active; the state of systemd units; the
    live process of a PID file; which Docker images the engine holds; and the exit status
    and output of programs a role runs to prove its effective state.
author:
  - unbroken.training contributors (@unbroken-training)
options:
  packages:
    description: Package names whose installed state and version to report in RV(packages).
    type: list
    elements: str
    default: []
  apt_index:
    description: Report RV(apt_index) (the package lists' presence and age) on hosts with apt.
    type: bool
    default: false
  locales:
    description: Report the locales C(locale -a) lists, in RV(locales).
    type: bool
    default: false
  files:
    description: Paths whose existence, type, mode, owner, group and SHA-1 to report in RV(files).
    type: list
    elements: path
    default: []
  free_space:
    description:
      - Paths whose file system's free space to report in RV(free_space); a path that does not
        exist yet is measured at its nearest existing parent (where it would be created).
    type: list
    elements: path
    default: []
  firewall:
    description: Report which host firewalls are active, in RV(firewall).
    type: bool
    default: false
  units:
    description: systemd units whose state (C(systemctl is-active)) to report in RV(units).
    type: list
    elements: str
    default: []
  systemd:
    description:
      - Report the version of the host's systemd in RV(systemd) (from C(systemctl --version),
        which reads only, so also in check mode).
    type: bool
    default: false
  pid_files:
    description:
      - PID files to read, in order; RV(pid) is the first PID among them whose process is
        alive (a daemon that no systemd unit runs writes one).
    type: list
    elements: path
    default: []
  network:
    description:
      - Report the host's network interfaces and their addresses, the interface of its default
        route, the TCP ports it listens on and the kernel's ephemeral port range in RV(network)
        (read from C(/sys/class/net), C(/proc/net) and C(/proc/sys/net)).
    type: bool
    default: false
  images:
    description:
      - Docker image references (or IDs) whose presence and image ID to report in
        RV(images), read with C(docker image inspect). Reads only, so also in check mode.
    type: list
    elements: str
    default: []
  docker_binary:
    description: The Docker client that reads O(images).
    type: str
    default: docker
  commands:
    description:
      - Programs to run (without a shell), each reported under its O(commands[].name) in
        RV(commands). Meant for a role's verification, which proves effective state by
        running the programs it configured.
      - Not run in check mode, where nothing was installed to run.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The key of the result in RV(commands).
        type: str
        required: true
      argv:
        description: The program and its arguments.
        type: list
        elements: str
        required: true
      environment:
        description: Variables to set for the program (an empty value sets it empty).
        type: dict
        default: {}
attributes:
  check_mode:
    description: Reads only; O(commands) is skipped in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to diff.
    support: none
notes:
  - Standard library only, like every module of the collection.
"""

EXAMPLES = r"""
- name: Read the packages, locales, managed files and active firewall (one module run)
  unbroken.training.host_info:
    packages: [tmux, mosh, locales]
    apt_index: true
    locales: true
    files: [/etc/tmux.conf]
    firewall: true
  register: host

- name: Install what is missing
  ansible.builtin.package:
    name: >-
      {{ host.packages | dict2items | rejectattr('value.installed')
         | map(attribute='key') | list }}
    update_cache: "{{ host.apt_index.present is false or host.apt_index.age_seconds > 3600 }}"
  when: host.packages.values() | rejectattr('installed') | list | length > 0

- name: Run tmux with the system configuration, to verify it
  unbroken.training.host_info:
    commands:
      - name: tmux
        argv: [tmux, -L, verify, new-session, -d, ;, show-options, -gv, history-limit,
               ;, kill-server]
  register: verify
"""

RETURN = r"""
packages:
  description: One entry per O(packages) name.
  returned: always
  type: dict
  sample: {"tmux": {"installed": true, "version": "3.3a-3"},
           "mosh": {"installed": false, "version": null}}
apt_index:
  description:
    - C(present), whether any package list exists; C(age_seconds), the age of apt's
      update-success stamp, else of the lists directory (what C(cache_valid_time) compares).
    - null on hosts without apt, or when O(apt_index) is false.
  returned: always
  type: dict
  sample: {"present": true, "age_seconds": 812}
locales:
  description: The names C(locale -a) prints (empty when O(locales) is false or it fails).
  returned: always
  type: list
  elements: str
  sample: [C, C.utf8, POSIX, en_US.utf8]
files:
  description:
    - One entry per O(files) path. C(exists); for an existing path C(type) (C(file),
      C(directory), C(link) or C(other)), C(mode) (four octal digits), C(owner), C(group),
      and for a regular file C(checksum) (SHA-1, as M(ansible.builtin.copy) reports it).
  returned: always
  type: dict
  sample: {"/etc/tmux.conf": {"exists": true, "type": "file", "mode": "0644", "owner": "root",
           "group": "root", "checksum": "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed"}}
free_space:
  description:
    - One entry per O(free_space) path. C(available_bytes), what an unprivileged writer may
      still use there (C(statvfs)'s C(f_bavail)); C(measured_at), the existing directory
      measured.
  returned: always
  type: dict
  sample: {"/var/tmp/unbroken-pytorch-image": {"available_bytes": 51539607552,
           "measured_at": "/var/tmp"}}
firewall:
  description:
    - C(active), the active firewalls in the order ufw, firewalld, iptables (the
      netfilter-persistent service), nftables (the nftables service); empty when none is
      active or O(firewall) is false.
  returned: always
  type: dict
  sample: {"active": ["iptables"]}
units:
  description:
    - One entry per O(units) name, its C(ActiveState) (C(active), C(inactive), C(failed),
      ...); empty when the host has no running systemd or O(units) is empty.
  returned: always
  type: dict
  sample: {"ssh": "active", "ssh.socket": "inactive"}
pid:
  description: The first live PID read from O(pid_files), else null.
  returned: always
  type: int
  sample: 812
network:
  description:
    - C(interfaces), the names under C(/sys/class/net), sorted; C(default_interface), the
      interface of the IPv4 default route, or an empty string; C(listening_tcp), the TCP ports
      in state LISTEN (IPv4 and IPv6), sorted; C(addresses), per interface that has any, its
      IPv4 address and its global IPv6 addresses; C(local_port_range), the first and last
      port of C(net.ipv4.ip_local_port_range), where a socket bound to port 0 listens (gloo's
      and NCCL's connections). Empty values when O(network) is false.
  returned: always
  type: dict
  sample: {"interfaces": ["eth0", "ib0", "lo"], "default_interface": "eth0",
           "listening_tcp": [22, 29400], "addresses": {"eth0": ["10.0.1.11"], "lo": ["127.0.0.1"]},
           "local_port_range": [32768, 60999]}
images:
  description:
    - One entry per O(images) reference. C(present); C(id), the local image ID, or null;
      C(error), why the image cannot be read (docker's message, for example
      C(No such image)), or null.
  returned: always
  type: dict
  sample: {"nvcr.io/nvidia/pytorch:24.05-py3": {"present": true, "error": null,
           "id": "sha256:0b1fe7bc6d2e0a2a5d1b5ea1f4ff3e5c4cb6fa2bb5bc9f0e5f1b1d7c9a1e2f3a"}}
systemd:
  description:
    - C(version), the systemd version as a number, or null with C(error) saying why (no
      C(systemctl), or what it printed instead of a version); empty when O(systemd) is false.
  returned: always
  type: dict
  sample: {"version": 252, "error": null}
commands:
  description:
    - One entry per O(commands) name with C(rc), C(stdout) and C(stderr); C(rc) is null and
      C(skipped) true in check mode, and C(rc) is 127 when the program is not found.
  returned: always
  type: dict
  sample: {"tmux": {"rc": 0, "stdout": "250000\n", "stderr": "", "skipped": false}}
"""

import fcntl
import glob
import grp
import hashlib
import ipaddress
import os
import pwd
import re
import socket
import stat
import struct
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import AnsibleModule

APT_LISTS = "/var/lib/apt/lists"
APT_STAMP = "/var/lib/apt/periodic/update-success-stamp"
# The preference order when several are active (one is opened, the first).
FIREWALL_UNITS = (
    ("firewalld", "firewalld"),
    ("iptables", "netfilter-persistent"),
    ("nftables", "nftables"),
)


def read_packages(module: AnsibleModule, names: List[str]) -> Dict[str, Dict[str, Any]]:
    """Installed state and version of each name, with one dpkg-query (or rpm) run for all."""
    found: Dict[str, Dict[str, Any]] = {n: {"installed": False, "version": None} for n in names}
    if not names:
        return found
    dpkg = module.get_bin_path("dpkg-query")
    if dpkg:
        # Exit 1 when a name is unknown; the known ones are still printed.
        _rc, out, _err = module.run_command(
            [dpkg, "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Version}\n", *names]
        )
        for line in out.splitlines():
            parts = line.split("\t")
            # Status-Abbrev "ii " installed; "rc " removed with its configuration left.
            if len(parts) == 3 and parts[0] in found and parts[1][1:2] == "i":
                found[parts[0]] = {"installed": True, "version": parts[2]}
        return found
    rpm = module.get_bin_path("rpm")
    if rpm:
        _rc, out, _err = module.run_command(
            [rpm, "-q", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n", *names]
        )
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0] in found:
                found[parts[0]] = {"installed": True, "version": parts[1]}
    return found


def read_apt_index(module: AnsibleModule, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """The package lists' presence and age, as apt's cache_valid_time reads them."""
    if not module.get_bin_path("apt-get"):
        return None
    present = bool(glob.glob(os.path.join(APT_LISTS, "*_Packages*")))
    # An image build that emptied the lists leaves the directory new: the stamp wins.
    stamp = APT_STAMP if os.path.exists(APT_STAMP) else APT_LISTS
    try:
        age: Optional[int] = int((time.time() if now is None else now) - os.stat(stamp).st_mtime)
    except OSError:
        age = None
    return {"present": present, "age_seconds": age}


def read_locales(module: AnsibleModule) -> List[str]:
    locale = module.get_bin_path("locale")
    if not locale:
        return []
    rc, out, _err = module.run_command([locale, "-a"])
    return out.split() if rc == 0 else []


def _name(lookup: Any, ident: int) -> str:
    try:
        return str(lookup(ident)[0])
    except KeyError:
        return str(ident)


def read_file(path: str) -> Dict[str, Any]:
    try:
        st = os.lstat(path)
    except OSError:
        return {"exists": False}
    kind = (
        "link" if stat.S_ISLNK(st.st_mode)
        else "file" if stat.S_ISREG(st.st_mode)
        else "directory" if stat.S_ISDIR(st.st_mode)
        else "other"
    )  # fmt: skip
    info: Dict[str, Any] = {
        "exists": True,
        "type": kind,
        "mode": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
    }
    if kind == "file":
        digest = hashlib.sha1()  # the checksum copy and file_content report
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 16), b""):
                    digest.update(block)
            info["checksum"] = digest.hexdigest()
        except OSError:
            info["checksum"] = None
    return info


def read_free_space(path: str) -> Dict[str, Any]:
    """Free bytes where ``path`` is, or would be created."""
    measured = os.path.abspath(path)
    while not os.path.exists(measured) and measured != os.path.dirname(measured):
        measured = os.path.dirname(measured)
    st = os.statvfs(measured)
    return {"available_bytes": st.f_bavail * st.f_frsize, "measured_at": measured}


def read_firewall(module: AnsibleModule) -> Dict[str, List[str]]:
    active: List[str] = []
    ufw = module.get_bin_path("ufw")
    if ufw:
        rc, out, _err = module.run_command([ufw, "status"])
        if rc == 0 and any(line.strip() == "Status: active" for line in out.splitlines()):
            active.append("ufw")
    systemctl = module.get_bin_path("systemctl")
    if systemctl:
        # One line per unit, in order, whatever its state (the exit status says "all active").
        _rc, out, _err = module.run_command(
            [systemctl, "is-active", *(unit for _name, unit in FIREWALL_UNITS)]
        )
        states = out.split()
        if len(states) == len(FIREWALL_UNITS):
            active += [
                name for (name, _unit), state in zip(FIREWALL_UNITS, states) if state == "active"
            ]
    return {"active": active}


def read_units(module: AnsibleModule, units: List[str]) -> Dict[str, str]:
    """Each unit's ActiveState, or {} where systemctl is missing or systemd is not running."""
    systemctl = module.get_bin_path("systemctl") if units else None
    if not systemctl:
        return {}
    # One line per unit, in order, whatever its state (the exit status says "all active").
    _rc, out, _err = module.run_command([systemctl, "is-active", *units])
    states = out.split()
    return dict(zip(units, states)) if len(states) == len(units) else {}


def read_pid(paths: List[str]) -> Optional[int]:
    """The first PID in ``paths`` whose process exists (a stale file's PID is skipped)."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if not text.isdigit() or int(text) < 1:
            continue
        try:
            os.kill(int(text), 0)
        except PermissionError:  # alive, owned by another user
            return int(text)
        except OSError:
            continue
        return int(text)
    return None


def read_network() -> Dict[str, Any]:
    """Interfaces, the default route's interface and the listening TCP ports, from /sys
    and /proc (no ip or ss binary needed, the same in check mode)."""
    try:
        interfaces = sorted(os.listdir("/sys/class/net"))
    except OSError:
        interfaces = []
    default = ""
    for fields in _proc_rows("/proc/net/route"):
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            default = fields[0]
            break
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for fields in _proc_rows(table):
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return {
        "interfaces": interfaces,
        "default_interface": default,
        "listening_tcp": sorted(ports),
        "addresses": read_addresses(interfaces),
        "local_port_range": read_local_port_range(),
    }


SIOCGIFADDR = 0x8915  # linux/sockios.h: an interface's (primary) IPv4 address


def read_addresses(interfaces: List[str]) -> Dict[str, List[str]]:
    """Each interface's IPv4 address (ioctl) and global IPv6 addresses (/proc/net/if_inet6)."""
    found: Dict[str, List[str]] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in interfaces:
            try:
                request = struct.pack("256s", name.encode()[:15])
                reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:  # no IPv4 address (or the interface went away)
                continue
            found.setdefault(name, []).append(socket.inet_ntoa(reply[20:24]))
    # address, index, prefix length, scope (00 = global), flags, name
    for fields in _proc_rows("/proc/net/if_inet6", header=False):
        if len(fields) == 6 and fields[3] == "00":
            address = str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))
            found.setdefault(fields[5], []).append(address)
    return found


def read_local_port_range() -> List[int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as handle:
            return [int(value) for value in handle.read().split()[:2]]
    except (OSError, ValueError):
        return []


def _proc_rows(path: str, header: bool = True) -> List[List[str]]:
    """The rows of a /proc/net table, split on white space, without its header (if any)."""
    try:
        with open(path, encoding="ascii") as handle:
            return [line.split() for line in handle.read().splitlines()[int(header) :]]
    except OSError:
        return []


def read_images(module: AnsibleModule, docker: str, refs: List[str]) -> Dict[str, Dict[str, Any]]:
    """Each reference's local image ID: one inspect per reference, because one inspect of
    several prints nothing that ties a missing image to its reference."""
    images: Dict[str, Dict[str, Any]] = {}
    for ref in dict.fromkeys(refs):
        try:
            rc, out, err = module.run_command(
                [docker, "image", "inspect", "--format", "{{.Id}}", ref],
                handle_exceptions=False,
            )
        except OSError as exc:  # no docker client: the engine's images cannot be known
            rc, out, err = 127, "", f"{docker}: {exc.strerror}"
        image_id = out.strip() if rc == 0 else ""
        images[ref] = {
            "present": bool(image_id),
            "id": image_id or None,
            "error": None if image_id else (err.strip() or f"{docker} exited with {rc}"),
        }
    return images


def read_systemd(module: AnsibleModule) -> Dict[str, Any]:
    """systemd's version from ``systemctl --version`` (its first line: ``systemd 252 (...)``)."""
    binary = module.get_bin_path("systemctl")
    if not binary:
        return {"version": None, "error": "systemctl is not installed (no systemctl in PATH)"}
    rc, out, err = module.run_command([binary, "--version"], environ_update={"LC_ALL": "C"})
    match = re.match(r"systemd ([0-9]+)\b", out)
    if match:
        return {"version": int(match.group(1)), "error": None}
    said = (err or out).strip().splitlines()
    return {"version": None, "error": f"systemctl --version exited {rc}: {said[0] if said else ''}"}


def run_commands(
    module: AnsibleModule, commands: List[Dict[str, Any]]
) -> Dict[str, Dict[str, Any]]:
    results: Dict[str, Dict[str, Any]] = {}
    for command in commands:
        if module.check_mode:
            results[command["name"]] = {"rc": None, "stdout": "", "stderr": "", "skipped": True}
            continue
        env = {
            str(k): "" if v is None else str(v) for k, v in (command["environment"] or {}).items()
        }
        try:
            rc, out, err = module.run_command(
                command["argv"], environ_update=env, handle_exceptions=False
            )
        except OSError as exc:  # the program is missing or not executable, as a shell says
            rc, out, err = 127, "", f"{command['argv'][0]}: {exc.strerror}"
        results[command["name"]] = {"rc": rc, "stdout": out, "stderr": err, "skipped": False}
    return results


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "packages": {"type": "list", "elements": "str", "default": []},
            "apt_index": {"type": "bool", "default": False},
            "locales": {"type": "bool", "default": False},
            "files": {"type": "list", "elements": "path", "default": []},
            "free_space": {"type": "list", "elements": "path", "default": []},
            "firewall": {"type": "bool", "default": False},
            "units": {"type": "list", "elements": "str", "default": []},
            "systemd": {"type": "bool", "default": False},
            "pid_files": {"type": "list", "elements": "path", "default": []},
            "network": {"type": "bool", "default": False},
            "images": {"type": "list", "elements": "str", "default": []},
            "docker_binary": {"type": "str", "default": "docker"},
            "commands": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "name": {"type": "str", "required": True},
                    "argv": {"type": "list", "elements": "str", "required": True},
                    "environment": {"type": "dict", "default": {}},
                },
            },
        },
        supports_check_mode=True,
    )
    params = module.params
    names = [c["name"] for c in params["commands"]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        module.fail_json(
            msg=f"commands: each name must be unique; repeated: {', '.join(duplicates)}"
        )
    module.exit_json(
        changed=False,
        packages=read_packages(module, params["packages"]),
        apt_index=read_apt_index(module) if params["apt_index"] else None,
        locales=read_locales(module) if params["locales"] else [],
        files={path: read_file(path) for path in params["files"]},
        free_space={path: read_free_space(path) for path in params["free_space"]},
        firewall=read_firewall(module) if params["firewall"] else {"active": []},
        units=read_units(module, params["units"]),
        systemd=read_systemd(module) if params["systemd"] else {},
        pid=read_pid(params["pid_files"]),
        network=(
            read_network()
            if params["network"]
            else {
                "interfaces": [],
                "default_interface": "",
                "listening_tcp": [],
                "addresses": {},
                "local_port_range": [],
            }
        ),
        images=read_images(module, params["docker_binary"], params["images"]),
        commands=run_commands(module, params["commands"]),
    )


if __name__ == "__main__":
    main()
