# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Jobs and sessions that outlive the connection: tmux after a killed SSH client, mosh
through a 30 s blackout at the NAT router. Both servers' tools come from session_tools.
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import List

from lab import SERVER_ADDR, Lab, LabSettings

TICKER = "while :; do date +tick-%s; sleep 1; done"
BLACKOUT_S = 30


def ticks(text: str) -> List[int]:
    """The epoch seconds of every `tick-<s>` line in a screen or log."""
    return [int(t) for t in re.findall(r"tick-(\d{10})", text)]


def test_tmux_job_survives_a_killed_ssh_client(lab: Lab) -> None:
    """Attached to tmux over SSH, the client is SIGKILLed; the job runs on, unattended."""
    tmux_job = f"tmux new-session -s survive \"sh -c '{TICKER} | tee -a /tmp/tmux-job.log'\""
    plain_job = f"sh -c '{TICKER} >> /tmp/plain-job.log'"
    procs = [
        subprocess.Popen(
            [*lab.ssh_args("-tt"), job],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for job in (tmux_job, plain_job)
    ]
    try:
        lab.wait_until(
            lambda: (
                lab.server.exec(
                    "test -s /tmp/tmux-job.log && test -s /tmp/plain-job.log && "
                    "tmux list-clients -t survive | grep -q .",
                    check=False,
                ).returncode
                == 0
            ),
            what="both jobs running and a tmux client attached",
            timeout=30,
        )
        for proc in procs:
            proc.kill()  # SIGKILL to the real ssh client: no goodbye to the server
            proc.wait(timeout=10)
        killed_at = int(time.time())
        time.sleep(4)
        # A fresh login finds the tmux session, detached, with new output.
        relogin = subprocess.run(
            [
                *lab.ssh_args(),
                "tmux list-clients -t survive | wc -l; tmux capture-pane -p -t survive; "
                "echo ==plain==; cat /tmp/plain-job.log",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        clients, rest = relogin.stdout.split("\n", 1)
        tmux_part, plain_part = rest.split("==plain==")
        assert clients.strip() == "0", "the killed client should no longer be attached"
        assert max(ticks(tmux_part)) >= killed_at + 2, "the tmux job stopped with the client"
        # The control: the same job without tmux got SIGHUP with the session.
        assert max(ticks(plain_part)) <= killed_at + 1, "the plain job should have died"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        lab.server.exec("tmux kill-session -t survive", check=False)


def _screen(lab: Lab) -> str:
    assert lab.client
    return lab.client.exec("tmux -L mosh capture-pane -p -t m", check=False).stdout


def _server_mosh_pids(lab: Lab) -> str:
    return lab.server.exec("pgrep -d, -x mosh-server", check=False).stdout.strip()


def test_mosh_session_survives_a_blackout_that_kills_ssh(
    lab: Lab, lab_settings: LabSettings
) -> None:
    """A plain `mosh host` (no -p) through the NAT; 30 s with every packet dropped."""
    assert lab.client
    ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
    mosh = f"mosh --ssh='{ssh}' root@{SERVER_ADDR} -- sh -c '{TICKER}'"
    lab.client.exec(f'LANG=en_US.UTF-8 tmux -L mosh new-session -d -s m -x 100 -y 45 "{mosh}"')
    # A TCP SSH session with the roles' keepalive, for contrast during the blackout.
    ssh_proc = subprocess.Popen(
        [*lab.ssh_args(), "sleep 600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lab.wait_until(
            lambda: any(t >= time.time() - 3 for t in ticks(_screen(lab))),
            what="mosh showing live output",
            timeout=40,
        )
        ports = lab.server.exec("ss -Huanp | grep mosh-server").stdout
        port = int(re.search(r":(\d+)\s", ports).group(1))  # type: ignore[union-attr]
        assert lab_settings.mosh_port_start <= port <= lab_settings.mosh_port_end, ports
        server_pids = _server_mosh_pids(lab)
        client_pid = lab.client.exec("pgrep -x mosh-client").stdout.strip()

        with lab.blackout():
            started = int(time.time())
            time.sleep(BLACKOUT_S)
            ended = int(time.time())
            ssh_rc = ssh_proc.poll()

        lab.wait_until(
            lambda: any(t > ended for t in ticks(_screen(lab))),
            what="mosh resuming after the blackout",
            timeout=40,
        )
        screen = _screen(lab)
        assert any(started < t < ended for t in ticks(screen)), screen
        assert _server_mosh_pids(lab) == server_pids, "mosh-server was replaced"
        assert lab.client.exec("pgrep -x mosh-client").stdout.strip() == client_pid
        assert ssh_rc == 255, "the TCP SSH session should have been dropped by keepalive"
    finally:
        if ssh_proc.poll() is None:
            ssh_proc.kill()
        ssh_proc.wait(timeout=10)
        lab.client.exec("tmux -L mosh kill-server", check=False)
