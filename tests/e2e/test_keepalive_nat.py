# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""SSH keepalive through a stateful NAT with a short idle timeout (real conntrack).

The server's port 22 sshd is configured by the sshd_keepalive role; the client's
ssh_config.d drop-in comes from the same role's client part. A second sshd on the server
(the control) runs with ClientAliveInterval 0, and `-o ServerAliveInterval=0` on the
client's command line switches the client's drop-in off, so each case below has
keepalive exactly where it says.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from conftest import report_dir
from lab import SERVERS, Container, Lab, LabSettings

CLIENT_OFF = ("-o", "ServerAliveInterval=0")


def effective_client(lab: Lab, *options: str) -> dict:
    """`ssh -G` on the client: the options ssh would really use."""
    proc = subprocess.run(
        [*lab.ssh_args(*options, "-G")],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def effective_server(lab: Lab, *options: str) -> dict:
    """`sshd -T` on the server, with the same command-line options an instance runs with."""
    assert lab.server
    return effective_server_on(lab.server, *options)


def effective_server_on(server: Container, *options: str) -> dict:
    out = server.exec(
        "sshd -T -C user=root,host=client,addr=10.251.2.1 " + " ".join(options)
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def written_interval(lab: Lab, server_key: str | None = None) -> int:
    """The ClientAliveInterval the role writes for the lab's interval on that server.

    OpenSSH 9.2-9.4 (Debian 12 has 9.2p1) send a probe only when, after a poll timeout of
    one interval, `now > last + interval` holds in whole seconds: never after exactly one
    interval, so probes go out every second interval (fixed in 9.5, upstream commit
    9d7193a8). The role writes half the interval there, so probes come as often as asked.
    """
    server = lab.servers[server_key] if server_key else lab.server
    assert server
    out = server.exec("sshd -V 2>&1").stdout
    version = tuple(int(x) for x in re.search(r"OpenSSH_(\d+)\.(\d+)", out).groups())
    requested = lab.settings.keepalive_interval_s
    return max(1, requested // 2) if (9, 2) <= version <= (9, 4) else requested


def idle_session(lab: Lab, *options: str, port: int, idle_s: int) -> tuple:
    """Run `echo started; sleep idle_s; echo done` over ssh, bounded in time.

    Returns (stdout, still_running): still_running is True when the client was still
    waiting at the deadline, i.e. it never learned that its session was dead.
    """
    cmd = [*lab.ssh_args(*options, port=port), f"echo started; sleep {idle_s}; echo done"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, _err = proc.communicate(timeout=idle_s + 12)
        return out, False
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, the real ssh process (nsenter execs it)
        out, _err = proc.communicate(timeout=10)
        return out, True


def test_without_keepalive_the_nat_kills_an_idle_session(
    lab: Lab, lab_settings: LabSettings
) -> None:
    assert effective_server(lab, "-o", "ClientAliveInterval=0")["clientaliveinterval"] == "0"
    assert effective_client(lab, *CLIENT_OFF)["serveraliveinterval"] == "0"
    idle = 3 * lab_settings.nat_timeout_s
    out, hung = idle_session(lab, *CLIENT_OFF, port=lab_settings.control_sshd_port, idle_s=idle)
    assert "started" in out, "the session never opened, so nothing was tested"
    assert "done" not in out
    assert hung, "ssh should still be waiting on a session the NAT has silently dropped"


def test_server_keepalive_from_the_role_keeps_the_session(
    lab: Lab, lab_settings: LabSettings
) -> None:
    server = effective_server(lab)
    assert server["clientaliveinterval"] == str(written_interval(lab))
    assert effective_client(lab, *CLIENT_OFF)["serveraliveinterval"] == "0"
    idle = 3 * lab_settings.nat_timeout_s
    out, hung = idle_session(lab, *CLIENT_OFF, port=22, idle_s=idle)
    assert not hung
    assert out.split() == ["started", "done"]


def test_client_keepalive_from_the_role_alone_keeps_the_session(
    lab: Lab, lab_settings: LabSettings
) -> None:
    assert effective_server(lab, "-o", "ClientAliveInterval=0")["clientaliveinterval"] == "0"
    client = effective_client(lab)
    assert client["serveraliveinterval"] == str(lab_settings.keepalive_interval_s)
    idle = 3 * lab_settings.nat_timeout_s
    out, hung = idle_session(lab, port=lab_settings.control_sshd_port, idle_s=idle)
    assert not hung
    assert out.split() == ["started", "done"]


_DEAD_PEER_REPORT: dict = {}


@pytest.mark.parametrize(
    "server_key",
    [pytest.param(SERVERS[0].key, id="debian12"), pytest.param(SERVERS[1].key, id="debian13")],
)
def test_server_detects_a_dead_peer_within_the_bound(
    lab: Lab, lab_settings: LabSettings, server_key: str
) -> None:
    """Cut the path completely and time how long the server keeps the dead session."""
    server = lab.servers[server_key]
    host = next(spec.addr for spec in SERVERS if spec.key == server_key)
    version = server.exec("ssh -V 2>&1").stdout.strip()
    assert effective_server_on(server)["clientaliveinterval"] == str(
        written_interval(lab, server_key)
    )
    cmd = [*lab.ssh_args(*CLIENT_OFF, host=host), 'echo "sshd_pid=$PPID"; exec sleep 600']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bound = lab_settings.dead_peer_bound_s
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sshd_pid="), f"unexpected first line {line!r}"
        session_pid = int(line.split("=", 1)[1])
        # Let the session settle into its keepalive rhythm before the cut.
        time.sleep(lab_settings.keepalive_interval_s + 1)
        watch = f"while kill -0 {session_pid} 2>/dev/null; do sleep 0.05; done; date +%s.%N"
        with lab.blackout():
            cut_at = time.time()
            gone = server.exec(watch, timeout=4 * bound + 30)
        measured = float(gone.stdout.strip()) - cut_at
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
    _DEAD_PEER_REPORT[server_key] = {
        "openssh": version,
        "nat_idle_timeout_s": lab_settings.nat_timeout_s,
        "client_alive_interval_s": lab_settings.keepalive_interval_s,
        "client_alive_interval_written_s": int(effective_server_on(server)["clientaliveinterval"]),
        "client_alive_count_max": lab_settings.keepalive_count_max,
        "bound_s": bound,
        "measured_s": round(measured, 2),
        "within_bound": measured <= bound,
    }
    path = report_dir() / "keepalive_nat.json"
    path.write_text(json.dumps(_DEAD_PEER_REPORT, indent=2) + "\n")
    print(f"dead-peer detection on {version}: measured {measured:.2f} s, bound {bound} s")
    assert measured <= bound


@pytest.fixture(autouse=True)
def _print_runtime(request: pytest.FixtureRequest) -> object:
    started = time.monotonic()
    yield
    print(f"{request.node.name}: {time.monotonic() - started:.1f} s")
