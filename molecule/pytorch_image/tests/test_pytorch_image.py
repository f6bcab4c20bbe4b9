# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Effective state after converge, then faults and bad input tried against the real registry.

Tests run in file order: the state checks first, the runs that change the engine last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import testinfra.utils.ansible_runner
import yaml

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("docker_hosts")

SCENARIO = Path(__file__).resolve().parent.parent
UT_DIR = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ut"
IMAGES = yaml.safe_load((UT_DIR / "images.yml").read_text())
REGISTRY = "ut-pytorch-image-registry:5000"
REPO = f"{REGISTRY}/test/pytorch-cpu"
BASE = f"{REPO}@{IMAGES['ut_digest_2_13_0_cpu']}"
V2 = f"{REPO}@{IMAGES['ut_digest_v2']}"
V3 = f"{REPO}@{IMAGES['ut_digest_v3']}"
PROGRESS = f"{REPO}@{IMAGES['ut_digest_progress']}"
GOOD_PASSWORD = "ut-Registry-Secret-4711"
WRONG_PASSWORD = "ut-Wrong-Secret-9081"
DEV = "pytorch-dev"


def image_id(host, reference: str) -> str | None:
    result = host.run("docker image inspect --format '{{.Id}}' %s", reference)
    return result.stdout.strip() if result.rc == 0 else None


def play(extra: dict, *flags: str) -> subprocess.CompletedProcess:
    """Run the role through negative.yml against the instance with extra vars (typed JSON)."""
    command = [
        "ansible-playbook",
        *(flags or ("-v",)),
        "-i",
        INVENTORY,
        str(SCENARIO / "negative.yml"),
        "-e",
        json.dumps(extra),
    ]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        command, check=False, capture_output=True, text=True, env=env, timeout=600
    )


def output(run: subprocess.CompletedProcess) -> str:
    return run.stdout + run.stderr


def changed_count(run: subprocess.CompletedProcess) -> int:
    match = re.search(r"ut-pytorch-image-docker\s*:.*changed=(\d+)", run.stdout)
    assert match, output(run)
    return int(match.group(1))


# --- effective state after converge and idempotence ------------------------------------


def test_pulled_once_by_digest_and_not_again_by_the_second_converge(host):
    """Events since the engine started: converge pulled the digest once, idempotence never."""
    events = host.check_output(
        'docker events --since 0 --until "$(date +%s)" --filter type=image '
        "--filter event=pull --format '{{.Actor.ID}}'"
    )
    pulls = [line for line in events.splitlines() if line.strip()]
    assert pulls == [BASE], pulls


def test_image_is_pinned_by_digest_and_tagged(host):
    inspected = json.loads(host.check_output("docker image inspect %s", BASE))[0]
    assert BASE in inspected["RepoDigests"]
    assert f"{REPO}:2.13.0-cpu" in inspected["RepoTags"]
    assert inspected["Id"] == IMAGES["ut_id_2_13_0_cpu"]


def test_torch_imports_in_the_pulled_image(host):
    out = host.check_output(
        "docker run --rm %s python3 -c 'import torch; print(torch.__version__)'", BASE
    )
    assert out.strip().startswith("2.")


def test_registry_ca_is_where_docker_looks(host):
    ca = host.file(f"/etc/docker/certs.d/{REGISTRY}/ca.crt")
    assert ca.exists
    assert ca.content_string.strip() == (UT_DIR / "ca.crt").read_text().strip()


def test_credentials_were_not_stored_on_the_host(host):
    config = host.file("/root/.docker/config.json")
    assert not config.exists or REGISTRY not in config.content_string
    assert host.run("grep -rl %s /root /etc/docker /var/tmp", GOOD_PASSWORD).rc == 1


def test_dev_container_runs_under_systemd(host):
    assert host.service(f"{DEV}.service").is_running
    assert host.service(f"{DEV}.service").is_enabled
    running = host.check_output("docker inspect --format '{{.State.Running}}' %s", DEV)
    assert running.strip() == "true"


def test_ssh_into_the_dev_container_on_port_2222(host):
    out = host.check_output(
        "ssh -p 2222 -i /root/.ssh/id_ed25519 -o BatchMode=yes -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null dev@127.0.0.1 "
        "'id -un; tmux -V; python3 -c \"import torch; print(torch.__version__)\"'"
    )
    user, tmux, torch = out.splitlines()[:3]
    assert user == "dev"
    assert tmux.startswith("tmux ")
    assert torch.startswith("2.")


def test_dev_sshd_applies_the_sshd_keepalive_role_values(host):
    """converge sets 45/4 on the sshd_keepalive role; sshd -T in the container must agree.

    The stand-in image is Debian 12, whose OpenSSH 9.2 probes every second interval: the
    image gets 22, so a probe still goes out every 45 s (as the role does on hosts).
    """
    version = host.run("docker exec %s /usr/sbin/sshd -V", DEV).stderr
    assert version.startswith("OpenSSH_9.2"), version
    effective = host.check_output("docker exec %s /usr/sbin/sshd -T", DEV).splitlines()
    assert "clientaliveinterval 22" in effective
    assert "clientalivecountmax 4" in effective
    assert "tcpkeepalive yes" in effective
    assert "passwordauthentication no" in effective
    assert "permitrootlogin no" in effective
    dropin = host.check_output(
        "docker exec %s cat /etc/ssh/sshd_config.d/00-unbroken-keepalive.conf", DEV
    )
    assert "Requested interval 45 s, but OpenSSH_9.2" in dropin
    labels = json.loads(
        host.check_output("docker inspect --format '{{json .Config.Labels}}' %s", DEV)
    )
    assert labels["training.unbroken.openssh-version"].startswith("OpenSSH_9.2")


def test_check_mode_reports_no_change(host):
    run = play(
        {"pytorch_image_digest": IMAGES["ut_digest_2_13_0_cpu"], "pytorch_image_tag": "2.13.0-cpu"},
        "--check",
    )
    assert run.returncode == 0, output(run)
    assert changed_count(run) == 0


def test_registry_mirrors_are_merged_and_docker_reloaded_not_restarted(host):
    host.check_output("""echo '{"log-level": "info"}' > /etc/docker/daemon.json""")
    pid = host.check_output("systemctl show --property MainPID --value docker")
    run = play(
        {
            "pytorch_image_digest": IMAGES["ut_digest_2_13_0_cpu"],
            "pytorch_image_tag": "2.13.0-cpu",
            "pytorch_image_registry_mirrors": ["https://mirror.ut.invalid"],
        }
    )
    assert run.returncode == 0, output(run)
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config == {"log-level": "info", "registry-mirrors": ["https://mirror.ut.invalid"]}
    mirrors = host.check_output("docker info --format '{{.RegistryConfig.Mirrors}}'")
    assert "https://mirror.ut.invalid/" in mirrors
    assert host.check_output("systemctl show --property MainPID --value docker") == pid
    assert host.service(f"{DEV}.service").is_running


# --- faults and bad input --------------------------------------------------------------


def test_wrong_digest_fails_clearly_and_pulls_nothing(host):
    wrong = "sha256:" + hashlib.sha256(b"no such image").hexdigest()
    run = play({"pytorch_image_digest": wrong, "pytorch_image_tag": "wrong"})
    assert run.returncode != 0
    assert f"has no manifest {wrong}" in output(run)
    assert image_id(host, f"{REPO}@{wrong}") is None
    assert image_id(host, f"{REPO}:wrong") is None


def test_malformed_digest_is_refused_before_anything_changes(host):
    run = play({"pytorch_image_digest": "sha256:abc", "pytorch_image_tag": "v2"})
    assert run.returncode != 0
    assert "exactly 64 lower-case hexadecimal digits" in output(run)
    assert "Refuse a malformed digest" in output(run)


def test_every_bad_value_is_named_at_once_before_anything_changes():
    """A malformed tag and digest and a retry count out of range: one refusal names all
    three, and nothing changes."""
    run = play(
        {
            "pytorch_image_digest": "sha256:abc",
            "pytorch_image_tag": "-v2",
            "pytorch_image_pull_retries": 99,
        }
    )
    assert run.returncode != 0
    assert 'pytorch_image_tag="-v2" is not a Docker tag' in output(run)
    assert "exactly 64 lower-case hexadecimal digits" in output(run)
    assert "pytorch_image_pull_retries=99 out of range" in output(run)
    assert "Nothing was changed." in output(run)
    assert changed_count(run) == 0


def test_wrong_password_fails_clearly_and_is_never_printed(host):
    run = play(
        {
            "pytorch_image_digest": IMAGES["ut_digest_v2"],
            "pytorch_image_tag": "v2",
            "pytorch_image_registry_password": WRONG_PASSWORD,
        },
        "-vvv",
    )
    text = output(run)
    assert run.returncode != 0
    assert "rejected the credentials of user 'ut-trainer'" in text
    assert WRONG_PASSWORD not in text
    assert image_id(host, V2) is None


def test_insufficient_disk_fails_before_pulling(host):
    run = play(
        {
            "pytorch_image_digest": IMAGES["ut_digest_v2"],
            "pytorch_image_tag": "v2",
            "pytorch_image_required_space_mb": 100000000,
        }
    )
    assert run.returncode != 0
    assert "not enough free disk space" in output(run)
    assert "100000000 MiB required" in output(run)
    assert image_id(host, V2) is None
    assert GOOD_PASSWORD not in output(run)


# --- progress of a long pull -----------------------------------------------------------


@pytest.fixture
def slow_registry():
    """The registry sends at 16 Mbit/s (tbf in its network namespace), so a pull takes time."""
    pid = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Pid}}", "ut-pytorch-image-registry"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tc = ["nsenter", "--target", pid, "--net", "tc", "qdisc"]
    shape = ["dev", "eth0", "root", "tbf", "rate", "16mbit", "burst", "64kb", "latency", "1s"]
    subprocess.run([*tc, "add", *shape], check=True)
    try:
        yield
    finally:
        subprocess.run([*tc, "del", "dev", "eth0", "root"], check=False)


def test_pull_prints_size_and_progress_while_it_runs_but_never_the_password(host, slow_registry):
    """24 MiB of new layers at 2 MB/s: polled each second, the log shows layers completing."""
    run = play(
        {
            "pytorch_image_digest": IMAGES["ut_digest_progress"],
            "pytorch_image_tag": "progress",
            "pytorch_image_pull_poll_s": 1,
        },
        "-vvv",
    )
    text = output(run)
    assert run.returncode == 0, text
    assert image_id(host, PROGRESS) == IMAGES["ut_id_progress"]
    announced = re.search(
        rf"pulling {re.escape(PROGRESS)}: [0-9.]+ [MG]iB compressed, (\d+) layers", text
    )
    assert announced, text
    total = int(announced.group(1))
    done = {
        int(k)
        for k in re.findall(
            rf"pulling {re.escape(PROGRESS)}: (\d+)/{total} layers, [0-9.]+ [MG]iB of", text
        )
    }
    # Seen between the first and the last layer: printed while the pull ran, not after it.
    assert any(0 < k < total for k in done), (done, text)
    assert GOOD_PASSWORD not in text
    assert not host.file("/var/tmp/unbroken-pytorch-image-pull.json").exists


# --- offline: docker save tarballs -----------------------------------------------------


def tiny_archive(path: Path, marker: str) -> str:
    """A minimal `docker save` tarball (one layer, one file); returns its image ID."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = marker.encode()
        info = tarfile.TarInfo("marker.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/marker.txt"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": marker}],
        }
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{config_hex}.json", "RepoTags": None, "Layers": ["layer/layer.tar"]}]
    ).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in (
            (f"{config_hex}.json", config),
            ("layer/layer.tar", layer_bytes),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return "sha256:" + config_hex


OFFLINE = {
    "pytorch_image_source": "archive",
    "pytorch_image_repository": "ut/offline",
    "pytorch_image_registry_ca_cert": "",
    "pytorch_image_registry_username": "",
    "pytorch_image_registry_password": "",
}


def test_offline_load_from_the_controller_verifies_the_image_id(host, tmp_path):
    archive = tmp_path / "offline.tar"
    expected = tiny_archive(archive, "offline-controller")
    args = {
        **OFFLINE,
        "pytorch_image_archive_path": str(archive),
        "pytorch_image_archive_on_controller": True,
        "pytorch_image_id": expected,
        "pytorch_image_tag": "controller",
    }
    run = play(args)
    assert run.returncode == 0, output(run)
    assert image_id(host, "ut/offline:controller") == expected
    assert not host.file(f"/var/tmp/unbroken-pytorch-image/{archive.name}").exists
    again = play(args)
    assert again.returncode == 0, output(again)
    assert changed_count(again) == 0


def test_offline_tarball_missing_or_too_big_is_refused_before_it_is_copied(host, tmp_path):
    common = {**OFFLINE, "pytorch_image_archive_on_controller": True, "pytorch_image_tag": "big"}
    absent_id = "sha256:" + hashlib.sha256(b"no such image").hexdigest()
    absent = tmp_path / "absent.tar"
    run = play({**common, "pytorch_image_archive_path": str(absent), "pytorch_image_id": absent_id})
    assert run.returncode != 0
    assert f"{absent} is not a file on the controller" in output(run)
    # 2 MiB of tarball against a staging directory on a 1 MiB file system.
    archive = tmp_path / "big.tar"
    expected = tiny_archive(archive, "too-big")
    with archive.open("ab") as handle:
        handle.write(bytes(2 << 20))
    small = "/var/tmp/ut-small"
    host.check_output(f"mkdir -p {small} && mount -t tmpfs -o size=1m tmpfs {small}")
    try:
        staging = {"pytorch_image_archive_staging_dir": f"{small}/stage"}
        run = play(
            {
                **common,
                **staging,
                "pytorch_image_archive_path": str(archive),
                "pytorch_image_id": expected,
            }
        )
        assert run.returncode != 0
        out = " ".join(output(run).split())
        assert f"The tarball needs 2.0 MiB in {small}/stage, which has 1.0 MiB free" in out, out[
            -3000:
        ]
        assert "Nothing was copied." in out
        assert not host.file(f"{small}/stage").exists
        assert image_id(host, expected) is None
    finally:
        host.run(f"umount {small}")


def test_offline_load_on_the_host_refuses_an_unexpected_image(host, tmp_path):
    archive = tmp_path / "host.tar"
    actual = tiny_archive(archive, "offline-host")
    host_path = "/var/tmp/ut-offline-host.tar"
    subprocess.run(["docker", "cp", str(archive), f"{host.backend.host}:{host_path}"], check=True)
    expected = "sha256:" + hashlib.sha256(b"another image").hexdigest()
    common = {**OFFLINE, "pytorch_image_archive_path": host_path, "pytorch_image_tag": "host"}
    run = play({**common, "pytorch_image_id": expected})
    assert run.returncode != 0
    assert f"holds image {actual}, not the expected {expected}" in output(run)
    assert image_id(host, actual) is None
    run = play({**common, "pytorch_image_id": actual})
    assert run.returncode == 0, output(run)
    assert image_id(host, "ut/offline:host") == actual
    host.run("rm -f %s", host_path)


# --- pruning (changes the engine: last) ------------------------------------------------


@pytest.fixture
def container_on_v2(host):
    host.check_output("docker run -d --name ut-keep-v2 %s sleep infinity", V2)
    yield
    host.run("docker rm --force ut-keep-v2")


def test_second_version_pulls_next_to_the_first(host):
    run = play({"pytorch_image_digest": IMAGES["ut_digest_v2"], "pytorch_image_tag": "v2"})
    assert run.returncode == 0, output(run)
    assert image_id(host, V2) == IMAGES["ut_id_v2"]


def test_pruning_with_keep_zero(host, container_on_v2):
    run = play(
        {
            "pytorch_image_digest": IMAGES["ut_digest_v3"],
            "pytorch_image_tag": "v3",
            "pytorch_image_keep_older": 0,
        }
    )
    assert run.returncode == 0, output(run)
    assert image_id(host, V3) == IMAGES["ut_id_v3"]
    # In use by a running container: kept.
    assert image_id(host, V2) == IMAGES["ut_id_v2"]
    # Not in use: its references are gone (its layers stay while the dev image needs them).
    assert image_id(host, BASE) is None
    assert image_id(host, f"{REPO}:2.13.0-cpu") is None
    # The dev container, built on the pruned image, still runs.
    running = host.check_output("docker inspect --format '{{.State.Running}}' %s", DEV)
    assert running.strip() == "true"
