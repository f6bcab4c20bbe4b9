# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Effective state after converge + idempotence, then injected faults and bad input
(each run as ansible-playbook against the molecule inventory). Tests run in file order:
the fault tests come last; the instance is destroyed after verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGES = [
    "libnvidia-container1",
    "libnvidia-container-tools",
    "nvidia-container-toolkit-base",
    "nvidia-container-toolkit",
]
PINNED = "1.17.8-1"
OLDER = "1.17.7-1"
REPO = "/srv/standin-repo/libnvidia-container"
KEYRING = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
DAEMON_JSON = "/etc/docker/daemon.json"
RUNTIME_LOG = "/var/log/standin-nvidia-container-runtime.log"
SCENARIO = Path(__file__).resolve().parents[1]


def fingerprint(host, name: str = "fingerprint") -> str:
    return host.file(f"/srv/standin-repo/{name}").content_string.strip()


def versions(host) -> dict[str, str]:
    out = host.check_output("dpkg-query -W -f '${Package} ${Version}\\n' " + " ".join(PACKAGES))
    return dict(line.split() for line in out.splitlines())


def docker_starts(host) -> int:
    return int(host.check_output("wc -l </var/lib/ut-docker-starts"))


def snapshot(host) -> dict[str, str]:
    """What a refused run must leave untouched."""
    return {
        "dpkg.log": host.check_output("wc -l </var/log/dpkg.log"),
        "versions": json.dumps(versions(host)),
        "keyring": host.file(KEYRING).sha256sum,
        "sources": host.file(SOURCES).sha256sum,
        "daemon.json": host.file(DAEMON_JSON).sha256sum,
        "starts": str(docker_starts(host)),
    }


def playbook(**extra_vars) -> subprocess.CompletedProcess:
    """Run the scenario's converge playbook again with extra vars (they win over all)."""
    cmd = [
        str(Path(sys.executable).with_name("ansible-playbook")),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(SCENARIO / "converge.yml"),
        "-e",
        json.dumps(extra_vars),
    ]
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)


def flat(result: subprocess.CompletedProcess) -> str:
    return " ".join((result.stdout + result.stderr).split())


# --- effective state after converge and the idempotence run --------------------------


def test_repository_is_signed_by_the_key_with_the_pinned_fingerprint(host):
    sources = host.file(SOURCES).content_string
    assert "URIs: http://127.0.0.1:8089/libnvidia-container/stable/deb/amd64" in sources
    assert f"Signed-By: {KEYRING}" in sources
    keys = host.check_output(
        f"h=$(mktemp -d); gpg --homedir $h --with-colons --show-keys {KEYRING} 2>/dev/null;"
        " rm -r $h"
    ).splitlines()
    primaries = [keys[i + 1].split(":")[9] for i, line in enumerate(keys) if line[:4] == "pub:"]
    assert primaries == [fingerprint(host)]
    # apt really trusts it: the signed index was accepted and offers the stand-ins.
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "127.0.0.1:8089/libnvidia-container/stable/deb/amd64" in policy


def test_packages_are_at_the_pinned_version_although_newer_exist_and_held(host):
    assert versions(host) == dict.fromkeys(PACKAGES, PINNED)
    candidate = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "Candidate: 1.18.0-1" in candidate
    assert sorted(host.check_output("apt-mark showhold").split()) == sorted(PACKAGES)
    upgrade = host.check_output("apt-get -s -o Debug::NoLocking=1 upgrade")
    assert "Inst nvidia-container-toolkit" not in upgrade
    assert "Inst libnvidia-container" not in upgrade


def test_daemon_json_has_the_runtime_and_keeps_the_preseeded_setting(host):
    config = json.loads(host.file(DAEMON_JSON).content_string)
    assert config["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert "default-runtime" not in config


def test_docker_was_restarted_once_by_converge_and_not_by_idempotence(host):
    before_role = int(host.file("/var/lib/ut-docker-starts.prepare").content_string)
    assert docker_starts(host) == before_role + 1


def test_docker_lists_the_nvidia_runtime(host):
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert runtimes["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"


def test_a_container_runs_with_the_nvidia_runtime(host):
    calls = (
        len(host.file(RUNTIME_LOG).content_string.splitlines())
        if host.file(RUNTIME_LOG).exists
        else 0
    )
    name = "ut-nct-probe"
    host.run(f"docker rm -f {name}")
    host.check_output(
        f"docker run -d --name {name} --runtime=nvidia ut-standin/tiny:latest sleep 60"
    )
    try:
        inspect = json.loads(host.check_output(f"docker inspect {name}"))[0]
        assert inspect["State"]["Running"] is True
        assert inspect["HostConfig"]["Runtime"] == "nvidia"
        # The pre-seeded daemon.json setting is in force, not only in the file.
        assert inspect["HostConfig"]["LogConfig"]["Config"]["max-size"] == "10m"
        out = host.check_output(f"docker exec {name} sh -c 'echo ran-under-nvidia'")
        assert out == "ran-under-nvidia"
    finally:
        host.run(f"docker rm -f {name}")
    # Docker really called the (stand-in) nvidia-container-runtime.
    assert len(host.file(RUNTIME_LOG).content_string.splitlines()) > calls


# --- faults and bad input: refused, clear message, nothing changed -------------------


def test_every_bad_value_is_named_at_once_before_the_key_is_fetched(host):
    before = snapshot(host)
    result = playbook(
        nvidia_container_toolkit_version="1.17",
        nvidia_container_toolkit_repo_key_fingerprint="ABCD1234",
    )
    assert result.returncode != 0
    text = flat(result)
    assert "nvidia_container_toolkit_version is '1.17'; give the full package version" in text
    assert "must be the full 40-digit fingerprint" in text and "got 'ABCD1234'" in text
    assert "Nothing was installed" in text
    assert "Fetch the repository signing key" not in text
    assert snapshot(host) == before


def test_wrong_fingerprint_stops_before_anything_is_installed(host):
    before = snapshot(host)
    wrong = "0123456789ABCDEF0123456789ABCDEF01234567"
    result = playbook(
        nvidia_container_toolkit_repo_key_fingerprint=wrong,
        nvidia_container_toolkit_version=OLDER,  # would downgrade if it got that far
    )
    assert result.returncode != 0
    text = flat(result)
    assert f"not only the pinned {wrong}" in text
    assert fingerprint(host) in text
    assert "Nothing was installed" in text
    assert snapshot(host) == before


def test_expired_key_stops_before_anything_is_installed(host):
    before = snapshot(host)
    result = playbook(
        nvidia_container_toolkit_repo_key_url="http://127.0.0.1:8089/libnvidia-container/gpgkey-expired",
        nvidia_container_toolkit_repo_key_fingerprint=fingerprint(host, "fingerprint-expired"),
        nvidia_container_toolkit_version=OLDER,
    )
    assert result.returncode != 0
    text = flat(result)
    assert "is expired (expiry 2020-01-02)" in text
    assert "Nothing was installed" in text
    assert snapshot(host) == before


def test_invalid_daemon_json_is_refused_and_left_unchanged(host):
    good = host.file(DAEMON_JSON).content_string
    broken = '{\n  "log-opts": {"max-size": "10m"},\n}\n'
    host.check_output(f"printf '%s' '{broken}' >{DAEMON_JSON}")
    try:
        digest = host.file(DAEMON_JSON).sha256sum
        starts = docker_starts(host)
        result = playbook()
        assert result.returncode != 0
        text = flat(result)
        assert f"{DAEMON_JSON} is not valid JSON (line 3, column 1" in text
        assert "The file was left unchanged" in text
        assert host.file(DAEMON_JSON).sha256sum == digest
        assert docker_starts(host) == starts
    finally:
        host.check_output(f"cat >{DAEMON_JSON} <<'EOF'\n{good}EOF")
    assert json.loads(host.file(DAEMON_JSON).content_string)["runtimes"]["nvidia"]


def test_local_source_with_a_missing_file_is_refused(host):
    before = snapshot(host)
    files = [f"{REPO}/stable/deb/amd64/{name}_{OLDER}_amd64.deb" for name in PACKAGES]
    files[2] = f"/srv/not-there/nvidia-container-toolkit-base_{OLDER}_amd64.deb"
    result = playbook(
        nvidia_container_toolkit_source="local",
        nvidia_container_toolkit_local_packages=files,
        nvidia_container_toolkit_local_packages_on_host=True,
        nvidia_container_toolkit_version=OLDER,
    )
    assert result.returncode != 0
    text = flat(result)
    assert f"These package files do not exist on the host: {files[2]}" in text
    assert snapshot(host) == before


def test_local_source_downgrades_offline_in_dependency_order_and_pin_upgrades_back(host):
    local = "/root/ut-local-debs"
    host.check_output(f"mkdir -p {local} && cp {REPO}/stable/deb/amd64/*_{OLDER}_*.deb {local}/")
    # Air-gap: no repository to resolve dependencies from, only the files.
    host.check_output(f"mv {REPO} {REPO}.offline && rm -f /var/lib/apt/lists/127.0.0.1*")
    starts = docker_starts(host)
    try:
        result = playbook(
            nvidia_container_toolkit_source="local",
            # Reverse order on purpose: the role must order them by dependency.
            nvidia_container_toolkit_local_packages=[
                f"{local}/{name}_{OLDER}_amd64.deb" for name in reversed(PACKAGES)
            ],
            nvidia_container_toolkit_local_packages_on_host=True,
            nvidia_container_toolkit_version=OLDER,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        assert versions(host) == dict.fromkeys(PACKAGES, OLDER)
        assert sorted(host.check_output("apt-mark showhold").split()) == sorted(PACKAGES)
    finally:
        host.check_output(f"mv {REPO}.offline {REPO}")
    # Back to the scenario's pin from the mirror: a deliberate upgrade of held packages.
    result = playbook()
    assert result.returncode == 0, result.stdout[-3000:]
    assert versions(host) == dict.fromkeys(PACKAGES, PINNED)
    assert sorted(host.check_output("apt-mark showhold").split()) == sorted(PACKAGES)
    assert docker_starts(host) == starts  # daemon.json never changed: no restart


def test_docker_is_not_restarted_under_a_running_training_job(host):
    job = "ut-nct-training-job"
    host.run(f"docker rm -f {job}")
    host.check_output(
        f"docker run -d --name {job} --label unbroken.training.job=demo "
        "ut-standin/tiny:latest sleep 600"
    )
    try:
        starts = docker_starts(host)
        result = playbook(nvidia_container_toolkit_docker_default_runtime=True)
        assert result.returncode != 0
        text = flat(result)
        assert f"these training containers are running: {job} (job demo)" in text
        assert "Docker was NOT restarted" in text
        assert docker_starts(host) == starts
        assert host.check_output(f"docker inspect -f '{{{{.State.Running}}}}' {job}") == "true"
    finally:
        host.run(f"docker rm -f {job}")
    # Once the job is gone, the next run notices Docker still runs the old configuration.
    result = playbook(nvidia_container_toolkit_docker_default_runtime=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert docker_starts(host) == starts + 1
    assert host.check_output("docker info --format '{{.DefaultRuntime}}'") == "nvidia"
