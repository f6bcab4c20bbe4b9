# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""A client -> stateful NAT router -> server topology built from real kernel pieces.

The client and the server are systemd test containers. They are converged by the
collection's roles while still on Docker's default bridge (apt needs the mirror), then
taken off it, so that their only link is a veth pair into a network namespace that this
module creates: the router. The router masquerades and runs a stateful filter with a
short conntrack idle timeout, like a home or cloud NAT. Every piece is registered on a
cleanup stack as soon as it exists, so a failure half-way still tears everything down.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
# Overridable to debug the lab with another playbook; the suite uses the collection's roles.
PLAYBOOK = Path(
    os.environ.get(
        "UNBROKEN_E2E_LAB_PLAYBOOK", str(Path(__file__).resolve().parent / "playbooks" / "lab.yml")
    )
)
IMAGE = os.environ.get("UNBROKEN_E2E_IMAGE", "unbroken-test/debian12-systemd:latest")

# Addresses used only on the veths inside the namespaces created here.
CLIENT_NET = "10.251.1"
CLIENT_ADDR = f"{CLIENT_NET}.2"
ROUTER_CLIENT_ADDR = f"{CLIENT_NET}.1"
IMAGE_DEBIAN13 = os.environ.get("UNBROKEN_E2E_IMAGE_2", "unbroken-test/debian13-systemd:latest")


@dataclass(frozen=True)
class ServerSpec:
    """One SSH server behind the router: its short name, image and subnet."""

    key: str
    image: str
    net: str

    @property
    def addr(self) -> str:
        return f"{self.net}.2"

    @property
    def gateway(self) -> str:
        return f"{self.net}.1"


# The main server (Debian 12) runs every test; the Debian 13 one is there to compare
# dead-peer detection across OpenSSH releases (9.2p1 vs 10.0p2).
SERVERS = (
    ServerSpec("srv", IMAGE, "10.251.2"),
    ServerSpec("srv13", IMAGE_DEBIAN13, "10.251.3"),
)
SERVER_ADDR = SERVERS[0].addr


@dataclass(frozen=True)
class LabSettings:
    """Timeouts of the NAT and the keepalive values the roles are converged with."""

    nat_timeout_s: int = 10
    keepalive_interval_s: int = 3
    keepalive_count_max: int = 2
    control_sshd_port: int = 2222
    mosh_port_start: int = 60100
    mosh_port_end: int = 60110

    @property
    def dead_peer_bound_s(self) -> int:
        """interval x count + one interval, the detection bound the issue states."""
        return self.keepalive_interval_s * self.keepalive_count_max + self.keepalive_interval_s


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input_text: Optional[str] = None,
    env: Optional[dict] = None,
) -> subprocess.CompletedProcess:
    """Run a command, capture its text output, and fail loudly with that output."""
    proc = subprocess.run(
        list(args),
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(args)}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def report_path(name: str) -> Path:
    """A file under $UNBROKEN_REPORT_DIR, else tests/output (gitignored)."""
    folder = Path(os.environ.get("UNBROKEN_REPORT_DIR", str(REPO_ROOT / "tests" / "output")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def host_prerequisites() -> List[str]:
    """Names of host tools the lab needs that are missing."""
    tools = ["docker", "ip", "nsenter", "iptables-restore", "ansible-playbook"]
    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@dataclass
class Container:
    """A systemd test container addressed by its name."""

    name: str

    @property
    def pid(self) -> int:
        out = run(["docker", "inspect", "-f", "{{.State.Pid}}", self.name]).stdout
        return int(out.strip())

    def exec(
        self, script: str, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        """Run a shell script inside the container (all its namespaces, via dockerd)."""
        return run(["docker", "exec", self.name, "sh", "-c", script], check=check, timeout=timeout)

    def nsenter_args(self) -> List[str]:
        """Prefix that runs a program in the container's mount and network namespaces.

        Without the pid namespace nsenter execs the program itself, so the Popen PID is
        the real process: tests can kill the SSH client with SIGKILL by that PID.
        """
        return [
            "nsenter",
            f"--target={self.pid}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--",
            "env",
            "-i",
            "HOME=/root",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM=xterm",
        ]


@dataclass
class Lab:
    """The whole topology plus its cleanup stack."""

    settings: LabSettings
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    cleanups: List[Callable[[], None]] = field(default_factory=list)
    client: Optional[Container] = None
    servers: Dict[str, Container] = field(default_factory=dict)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ut-e2e3-")))

    @property
    def server(self) -> Container:
        """The main (Debian 12) server."""
        return self.servers[SERVERS[0].key]

    @property
    def router_ns(self) -> str:
        return f"ut-e2e3-{self.suffix}-rtr"

    # -- cleanup --------------------------------------------------------------
    def defer(self, action: Callable[[], None]) -> None:
        self.cleanups.append(action)

    def close(self) -> None:
        """Undo everything in reverse order; report, but do not stop on, failures."""
        errors = []
        while self.cleanups:
            action = self.cleanups.pop()
            try:
                action()
            except Exception as exc:  # keep tearing down the rest
                errors.append(repr(exc))
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise RuntimeError("lab teardown had errors: " + "; ".join(errors))

    # -- containers -----------------------------------------------------------
    def start_container(self, role: str, image: str = IMAGE) -> Container:
        name = f"ut-e2e3-{self.suffix}-{role}"
        self.defer(lambda: run(["docker", "rm", "-f", "-v", name], check=False))
        run(
            [
                "docker", "run", "-d", "--name", name, "--hostname", role,
                "--cap-add", "SYS_ADMIN",
                "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                image, "/lib/systemd/systemd",
            ]
        )  # fmt: skip
        return Container(name)

    @staticmethod
    def wait_for_systemd(container: Container, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = container.exec("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{container.name}: systemd did not come up (state {state!r})")

    def converge(self) -> None:
        """Apply tests/e2e/playbooks/lab.yml (the collection's roles) to both containers."""
        assert self.client
        conn = "ansible_connection=community.docker.docker"
        lines = ["[server]"] + [f"{c.name} {conn}" for c in self.servers.values()]
        lines += ["[client]", f"{self.client.name} {conn}"]
        inventory = self.workdir / "inventory.ini"
        inventory.write_text("\n".join(lines) + "\n")
        s = self.settings
        extra = {
            "lab_keepalive_interval": s.keepalive_interval_s,
            "lab_keepalive_count_max": s.keepalive_count_max,
            "lab_nat_timeout": s.nat_timeout_s,
            "lab_mosh_port_start": s.mosh_port_start,
            "lab_mosh_port_end": s.mosh_port_end,
        }
        env = dict(os.environ)
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(REPO_ROOT / ".cache" / "collections"))
        env["ANSIBLE_PYTHON_INTERPRETER"] = "auto_silent"
        env["ANSIBLE_NOCOLOR"] = "1"
        log = report_path("e2e_converge.log")
        with log.open("w") as out:
            proc = subprocess.run(
                [
                    "ansible-playbook", "-i", str(inventory), str(PLAYBOOK),
                    "-e", json.dumps(extra),
                ],
                stdout=out, stderr=subprocess.STDOUT, timeout=900, env=env, check=False,
            )  # fmt: skip
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-40:])
            raise RuntimeError(f"converging the lab failed (full log {log}):\n{tail}")

    def exchange_keys(self) -> None:
        """Let root on the client log in to root on the server with a fresh key."""
        assert self.client
        self.client.exec(
            "test -f /root/.ssh/id_ed25519 || "
            "ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519"
        )
        pub = self.client.exec("cat /root/.ssh/id_ed25519.pub").stdout
        for server in self.servers.values():
            run(
                ["docker", "exec", "-i", server.name, "sh", "-c",
                 "install -d -m 700 /root/.ssh && cat >> /root/.ssh/authorized_keys"],
                input_text=pub,
            )  # fmt: skip

    def start_control_sshd(self) -> None:
        """A second sshd on the server with keepalive explicitly off (the control case).

        Command-line -o options come before the config file, and sshd keeps the first
        value it reads, so this instance runs with ClientAliveInterval 0 whatever the
        drop-ins say.
        """
        port = self.settings.control_sshd_port
        self.server.exec(
            "systemd-run --unit=ut-sshd-control --property=KillMode=process "
            f"/usr/sbin/sshd -D -p {port} -o ClientAliveInterval=0 "
            "-o PidFile=/run/sshd-control.pid"
        )
        self.wait_until(
            lambda: (
                self.server.exec(f"ss -Hltn 'sport = :{port}'", check=False).stdout.strip() != ""
            ),
            what=f"control sshd listening on {port}",
        )

    # -- network --------------------------------------------------------------
    def _veth_into(self, container: Container, tag: str, addr: str, gateway: str) -> str:
        """A veth pair: one end as eth0 in the container, the other in the router."""
        router_end = f"u3{self.suffix}{tag}r"
        peer_end = f"u3{self.suffix}{tag}p"
        run(["ip", "link", "add", router_end, "type", "veth", "peer", "name", peer_end])
        # Deleting either end deletes the pair; the router end lives as long as the
        # namespace, so removing the namespace (cleanup) removes both ends too.
        self.defer(lambda: run(["ip", "link", "del", router_end], check=False))
        run(["ip", "link", "set", router_end, "netns", self.router_ns])
        run(["ip", "link", "set", peer_end, "netns", str(container.pid)])
        inside = ["nsenter", f"--target={container.pid}", "--net", "--", "ip"]
        run([*inside, "link", "set", peer_end, "name", "eth0"])
        run([*inside, "addr", "add", f"{addr}/24", "dev", "eth0"])
        run([*inside, "link", "set", "eth0", "up"])
        run([*inside, "route", "add", "default", "via", gateway])
        return router_end

    def build_router(self) -> None:
        assert self.client
        for c in (self.client, *self.servers.values()):
            run(["docker", "network", "disconnect", "bridge", c.name])
        ns = self.router_ns
        run(["ip", "netns", "add", ns])
        self.defer(lambda: run(["ip", "netns", "del", ns], check=False))
        rip = ["ip", "-n", ns]
        run([*rip, "link", "set", "lo", "up"])
        rc = self._veth_into(self.client, "c", CLIENT_ADDR, ROUTER_CLIENT_ADDR)
        run([*rip, "addr", "add", f"{ROUTER_CLIENT_ADDR}/24", "dev", rc])
        run([*rip, "link", "set", rc, "up"])
        for i, spec in enumerate(SERVERS):
            rs = self._veth_into(self.servers[spec.key], f"s{i}", spec.addr, spec.gateway)
            run([*rip, "addr", "add", f"{spec.gateway}/24", "dev", rs])
            run([*rip, "link", "set", rs, "up"])
        # Tighten conntrack inside the router namespace only: an established TCP flow idle
        # for nat_timeout_s is forgotten, and without loose pickup a mid-stream packet
        # cannot re-create it, so the stateful filter drops it like a real NAT box does.
        self.netns(
            "sysctl", "-q", "-w", "net.ipv4.ip_forward=1",
            f"net.netfilter.nf_conntrack_tcp_timeout_established={self.settings.nat_timeout_s}",
            "net.netfilter.nf_conntrack_tcp_loose=0",
        )  # fmt: skip
        rules = (
            "*nat\n"
            f"-A POSTROUTING -s {CLIENT_NET}.0/24 ! -o {rc} -j MASQUERADE\n"
            "COMMIT\n"
            "*filter\n"
            ":FORWARD DROP [0:0]\n"
            "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
            f"-A FORWARD -i {rc} -p tcp --syn -m conntrack --ctstate NEW -j ACCEPT\n"
            f"-A FORWARD -i {rc} -p udp -m conntrack --ctstate NEW -j ACCEPT\n"
            "-A FORWARD -j DROP\n"
            "COMMIT\n"
        )
        run(["ip", "netns", "exec", ns, "iptables-restore"], input_text=rules)
        for spec in SERVERS:
            self.wait_until(
                lambda addr=spec.addr: (
                    self.client is not None
                    and self.client.exec(
                        f"ssh-keyscan -T 2 {addr} >/dev/null 2>&1", check=False
                    ).returncode
                    == 0
                ),
                what=f"sshd on {spec.addr} reachable from the client through the router",
            )

    def netns(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the router namespace."""
        return run(["ip", "netns", "exec", self.router_ns, *args], check=check)

    @contextlib.contextmanager
    def blackout(self, *match: str) -> Iterator[None]:
        """Drop forwarded traffic at the router (all, or what `match` selects) for a while."""
        rule = ["FORWARD", *match, "-j", "DROP"]
        self.netns("iptables", "-I", *rule[:1], "1", *rule[1:])
        try:
            yield
        finally:
            self.netns("iptables", "-D", *rule)

    # -- helpers --------------------------------------------------------------
    @staticmethod
    def wait_until(
        predicate: Callable[[], bool], *, what: str, timeout: float = 60, step: float = 0.5
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(step)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")

    def ssh_args(self, *options: str, port: int = 22, host: str = SERVER_ADDR) -> List[str]:
        """An ssh command line run on the client, in its namespaces, as a direct child."""
        assert self.client
        return [
            *self.client.nsenter_args(),
            "ssh", "-p", str(port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", "UserKnownHostsFile=/root/.ssh/known_hosts",
            *options,
            f"root@{host}",
        ]  # fmt: skip


def build_lab(settings: LabSettings) -> Lab:
    """Create, converge and wire the whole lab; on any failure, tear down and re-raise."""
    lab = Lab(settings)
    try:
        for spec in SERVERS:
            lab.servers[spec.key] = lab.start_container(spec.key, spec.image)
        lab.client = lab.start_container("cli")
        for c in (*lab.servers.values(), lab.client):
            lab.wait_for_systemd(c)
        lab.converge()
        lab.exchange_keys()
        lab.start_control_sshd()
        lab.build_router()
    except BaseException:
        lab.close()
        raise
    return lab
