# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""Fault injection against the trainer role's demo job.

Everything is observed from the outside, the way an operator would: the job's status
file and checkpoint directory, ``systemctl show``, the journal and the
``training_status`` module.  Per fault the test measures the steps lost (last step the
killed process reported minus the step it resumed from) and the time from the fault to
training again (the new process reports a step beyond the one it resumed from); both go
to tests/output/trainer_faults.json and are printed at the end.

Each test arranges what it starts from (fixtures ``deployed``, ``training`` and
``broken_job``; test_05c crashes the job itself when its last start was not a crash), so
any test runs alone or in any order, e.g. after ``molecule converge -s trainer``:
``PYTEST_ADDOPTS='-k test_07' molecule verify -s trainer``. The file order is the cheapest
one: each test leaves the job training, and the arrangements then cost nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

INSTANCE = "ut-trainer-1"
JOB = "demo"
UNIT = f"unbroken-job-{JOB}.service"
CONTAINER = f"unbroken-job-{JOB}"
SCENARIO = Path(__file__).resolve().parents[1]
REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO.parents[1]))
JOBS = yaml.safe_load((SCENARIO / "vars" / "jobs.yml").read_text())
DEMO = JOBS["trainer_demo_job"]
INTERVAL = int(DEMO["args"][DEMO["args"].index("--checkpoint-interval") + 1])
HANG_TIMEOUT = DEMO["hang_timeout"]
WATCHDOG_INTERVAL = JOBS["trainer_watchdog_interval"]
CKPT_DIR = DEMO["checkpoint_dir"]
BROKEN_UNIT = "unbroken-job-broken.service"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def sh(command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell command inside the instance (as root, like an operator's shell)."""
    result = subprocess.run(
        ["docker", "exec", INSTANCE, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} failed ({result.returncode}): {result.stderr}")
    return result


def status() -> dict[str, Any] | None:
    result = sh(f"cat {CKPT_DIR}/status.json", check=False)
    try:
        return json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:  # never torn (atomic rename), but be safe
        return None


def unit(*props: str, name: str = UNIT) -> dict[str, str]:
    out = sh(f"systemctl show {name} --property={','.join(props)}").stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def checkpoints(directory: str = CKPT_DIR) -> list[int]:
    """Steps of committed checkpoints (those with a manifest), oldest first."""
    out = sh(f"ls -d {directory}/step-*/MANIFEST.json 2>/dev/null || true").stdout
    return sorted(int(Path(p).parent.name.split("-")[1]) for p in out.split())


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def wait_resumed(after: float, timeout: float = 180) -> tuple[dict[str, Any], float]:
    """Wait for a process started after ``after`` that has trained past its resume step."""

    def probe() -> dict[str, Any] | None:
        doc = status()
        if not doc or doc["started_at"] <= after or doc["state"] != "training":
            return None
        resumed = (doc.get("resumed_from") or {}).get("step", 0)
        return doc if doc["step"] > resumed else None

    doc = wait_for("the job to train again", probe, timeout)
    return doc, time.time()


def record(
    measurements: dict[str, Any],
    fault: str,
    step_at_fault: int,
    resumed: dict[str, Any],
    t_fault: float,
    t_up: float,
    **extra: Any,
) -> dict[str, Any]:
    resumed_step = (resumed.get("resumed_from") or {}).get("step")
    entry = {
        "step_at_fault": step_at_fault,
        "resumed_from_step": resumed_step,
        "steps_lost": None if resumed_step is None else step_at_fault - resumed_step,
        "checkpoint_interval": INTERVAL,
        "seconds_to_training_again": round(t_up - t_fault, 1),
        **extra,
    }
    measurements[fault] = entry
    return entry


def journal_since(epoch: float, unit_name: str = UNIT) -> str:
    return sh(
        f"journalctl -u {unit_name} --since=@{int(epoch) - 1} --no-pager -o cat", check=False
    ).stdout


def ansible_playbook(
    playbook: str, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a scenario playbook, or (absolute path) one of the collection's playbooks."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    # One stream: molecule's ansible.cfg sends failures to stderr (display_failed_stderr).
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", inventory, str(SCENARIO / playbook), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", **(env or {})},
    )


def runs_record() -> dict[str, Any]:
    """The helper's run record: runs, restarts since the last deliberate start, causes.

    Read with docker exec, not testinfra's host fixture: a test that takes that
    (parametrized) fixture is run in a group with the others, out of file order.
    """
    return json.loads(sh(f"cat /var/lib/unbroken/trainer/{JOB}/runs.json").stdout)


def converge() -> None:
    run = ansible_playbook("converge.yml")
    assert run.returncode == 0, run.stdout[-3000:]


@pytest.fixture
def deployed() -> None:
    """The demo job deployed and started (converged again when a test removed it)."""
    if unit("LoadState")["LoadState"] != "loaded":
        converge()
    elif unit("ActiveState")["ActiveState"] in ("inactive", "failed"):
        sh(f"systemctl reset-failed {UNIT}; systemctl start {UNIT}")


@pytest.fixture
def training(deployed: None) -> dict[str, Any]:
    """The demo job training now (a fresh heartbeat) with two committed checkpoints, the
    state every fault starts from; returns its status."""

    def probe() -> dict[str, Any] | None:
        doc = status()
        fresh = doc and doc["state"] == "training" and doc["updated_at"] > time.time() - 15
        return doc if fresh and len(checkpoints()) >= 2 else None

    return wait_for("the job training with two committed checkpoints", probe, timeout=300)


@pytest.fixture
def broken_job() -> None:
    """The always-failing job deployed next to demo (broken.yml fails by design)."""
    if unit("LoadState", name=BROKEN_UNIT)["LoadState"] != "loaded":
        ansible_playbook("broken.yml")
        assert unit("LoadState", name=BROKEN_UNIT)["LoadState"] == "loaded"


@pytest.fixture(scope="module")
def measurements():
    """What the fault tests measured, written and printed once they are done."""
    results: dict[str, Any] = {}
    yield results
    out = REPO / "tests" / "output" / "trainer_faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\ntrainer fault measurements ({out}):")
    print(f"{'fault':<24}{'step':>8}{'resumed':>9}{'lost':>6}{'interval':>9}{'s to train':>11}")
    for fault, m in results.items():
        if "steps_lost" in m:
            print(
                f"{fault:<24}{m['step_at_fault']:>8}{m['resumed_from_step']!s:>9}"
                f"{m['steps_lost']!s:>6}{m['checkpoint_interval']:>9}"
                f"{m['seconds_to_training_again']:>11}"
            )
    print(json.dumps(results, indent=2, sort_keys=True))


def test_01_trains_and_writes_checkpoints(deployed):
    """Fault-free baseline: the deployed job trains and commits >= 2 checkpoints."""
    steps = wait_for("two committed checkpoints", lambda: len(checkpoints()) >= 2 and checkpoints())
    assert all(s % INTERVAL == 0 and s > 0 for s in steps)
    doc = status()
    assert doc["state"] == "training" and doc["step"] >= steps[-1]
    assert doc["loss"] is not None and doc["samples_per_second"]


def test_01b_prometheus_textfile_shows_the_jobs_current_step(training):
    """#21.9: the watchdog's textfile on the host parses and follows the job's step."""
    textfile = JOBS.get(
        "trainer_prometheus_textfile", "/var/lib/prometheus/node-exporter/unbroken_training.prom"
    )
    wait_for("a committed checkpoint", checkpoints)
    doc = wait_for(
        "the job training", lambda: (status() or {}).get("state") == "training" and status()
    )
    before = doc["step"]  # the textfile must come from a later status (checkpoint included)

    def exported() -> dict[str, float] | None:
        result = sh(f"cat {textfile}", check=False)
        samples = {}
        for line in result.stdout.splitlines() if result.returncode == 0 else []:
            if not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                samples[series] = float(value)
        step = samples.get(f'unbroken_training_job_step{{job="{JOB}"}}')
        return samples if step is not None and step > before else None

    samples = wait_for("a textfile written after the step", exported, timeout=4 * WATCHDOG_INTERVAL)
    assert samples[f'unbroken_training_job_step{{job="{JOB}"}}'] <= status()["step"]
    assert samples[f'unbroken_training_job_state{{job="{JOB}",state="training"}}'] == 1
    assert samples[f'unbroken_training_job_loss{{job="{JOB}"}}'] >= 0
    assert samples[f'unbroken_training_job_last_checkpoint_age_seconds{{job="{JOB}"}}'] >= 0


def test_02_container_runs_as_declared(training):
    """Effective container settings: init, non-root user, read-only runtime and data, label."""
    info = json.loads(sh(f"docker inspect {CONTAINER}").stdout)[0]
    assert info["HostConfig"]["Init"] is True
    assert info["Config"]["User"] == "1000:1000"
    assert info["Config"]["Labels"]["unbroken.training.job"] == JOB
    assert info["HostConfig"]["Privileged"] is False
    mounts = {m["Destination"]: m["RW"] for m in info["Mounts"]}
    assert mounts == {"/opt/unbroken/runtime": False, "/checkpoints": True, "/data": False}
    denied = sh(f"docker exec {CONTAINER} touch /data/x /opt/unbroken/runtime/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert sh(f"stat -c '%u:%g %a' {CKPT_DIR}").stdout.split() == ["1000:1000", "750"]
    # The trainer is not PID 1 (docker's init is) and it runs as the job's user.
    assert sh(f"docker exec {CONTAINER} cat /proc/1/comm").stdout.strip() == "docker-init"


def identity() -> dict[str, Any]:
    """What a restart of the job would change: systemd's main process, the container, the
    trainer process."""
    container = sh(f"docker inspect -f '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {CONTAINER}")
    return {
        **unit("ExecMainStartTimestampMonotonic", "NRestarts"),
        "container": container.stdout.split(),
        "trainer_started": status()["started_at"],
    }


def test_03_converging_again_does_not_restart_the_job(training):
    """Fault 9: a converge of the converged host (Molecule's idempotence run is one)
    leaves the job's process, container and trainer as they were."""
    before = identity()
    converge()
    assert identity() == before


INVALID = {
    "unknown_gpu_spec": "is not understood",
    "gpu_list_with_a_bad_id": "is not understood",
    "relative_checkpoint_dir": "absolute, normalised `checkpoint_dir`",
    "name_not_a_unit_name": "is not usable",
    "duplicate_names": "trainer_jobs has duplicate names (demo)",
    "hang_timeout_below_two_watchdog_checks": "at least twice trainer_watchdog_interval",
    "image_not_on_host": "image unbroken-test/not-here:1 is not on this host",
    "nftables_chain_with_a_second_command": (
        "trainer_nftables_chain is",
        "inet filter input; flush ruleset",
        "becomes part of nft commands",
    ),
    "two_bad_values": ("is not understood", "image unbroken-test/not-here:1 is not on this host"),
}


def test_04_invalid_definitions_are_refused_before_anything_changes(training):
    """Bad input (GPU spec, relative path, unit name, duplicates, timings, image) is refused;
    a job with two bad values has both named in one refusal."""
    snapshot = "sha256sum /etc/unbroken/trainer/jobs/* /etc/systemd/system/unbroken-job-*"
    before = (sh(snapshot).stdout, unit("ExecMainPID", "NRestarts"))
    run = ansible_playbook("invalid.yml")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "ACCEPTED" not in run.stdout
    refusals = {}
    for chunk in run.stdout.split("REFUSED ")[1:]:
        case, _sep, rest = chunk.partition(":")
        refusals[case] = rest.split("\n", 1)[0]
    assert sorted(refusals) == sorted(INVALID)
    for case, messages in INVALID.items():
        for message in (messages,) if isinstance(messages, str) else messages:
            assert message in refusals[case], (case, message, refusals[case][:2000])
    assert (sh(snapshot).stdout, unit("ExecMainPID", "NRestarts")) == before


def test_04b_check_mode_on_the_converged_host_reports_no_change(deployed):
    """check mode reads what the role decides on (systemd version, images, installed files)
    and, on the converged host, finds nothing to change."""
    run = ansible_playbook("check_mode.yml", "--check", "--diff")
    assert run.returncode == 0, run.stdout[-3000:]
    recap = re.search(r"ut-trainer-1\s*:.*\bchanged=0\b.*\bfailed=0\b", run.stdout)
    assert recap, run.stdout[-3000:]


def test_05_sigkill_of_the_container_restarts_and_resumes(training, measurements):
    """Fault 2: docker kill -s KILL; systemd restarts the job, it resumes from the newest."""
    restarts = int(unit("NRestarts")["NRestarts"])
    t_fault = time.time()
    sh(f"docker kill --signal KILL {CONTAINER}")
    step_at_fault = status()["step"]  # the dead process's last heartbeat (written every step)
    newest = checkpoints()[-1]
    doc, t_up = wait_resumed(t_fault)
    assert doc["resumed_from"]["step"] == newest > 0
    assert int(unit("NRestarts")["NRestarts"]) == restarts + 1
    entry = record(measurements, "sigkill", step_at_fault, doc, t_fault, t_up)
    assert 0 <= entry["steps_lost"] <= INTERVAL


def test_05b_operator_restarts_leave_the_crash_loop_budget_to_crashes(training, measurements):
    """Issue 17 item 6: job_restart.yml plus `systemctl restart`s, restart_limit_burst
    deliberate starts in all, then one SIGKILL: the job resumes. It used to stay failed
    ("crash-loop limit reached"): systemd counted the operator's starts too, and the
    restart after the kill was start number burst + 1 within restart_limit_interval (an
    hour here, so the proof does not depend on how fast a busy machine restarts)."""
    burst, window = DEMO["restart_limit_burst"], DEMO["restart_limit_interval"]
    runs_before = runs_record()["runs"]
    t_first = time.time()
    run = ansible_playbook(
        str(REPO / "playbooks" / "job_restart.yml"),
        "-e",
        "unbroken_hosts=all",
        "-e",
        f"unbroken_jobs={JOB}",
    )
    assert run.returncode == 0, run.stdout[-3000:]
    # The wait is one polling module run: no alarming retry lines for a normal wait.
    assert "FAILED - RETRYING" not in run.stdout and "demo trains (step" in run.stdout
    wait_resumed(t_first)
    sh(
        f"for i in $(seq {burst - 1}); do systemctl restart {UNIT} || exit 1; done",
        timeout=120 * burst,
    )
    wait_for(
        "the container of the last restart",
        lambda: (
            sh(
                f"docker inspect -f '{{{{.State.Running}}}}' {CONTAINER}", check=False
            ).stdout.strip()
            == "true"
        ),
        timeout=60,
    )
    newest = checkpoints()[-1]
    t_fault = time.time()
    sh(f"docker kill --signal KILL {CONTAINER}")
    assert t_fault - t_first < window  # all of this job's starts fall in one window
    doc, t_up = wait_resumed(t_fault)
    assert doc["resumed_from"]["step"] == newest
    assert unit("ActiveState", "NRestarts") == {"ActiveState": "active", "NRestarts": "1"}
    job = runs_record()
    assert job["restarts"] == 1 and job["runs"] == runs_before + burst + 1
    assert job["last_start"]["cause"] == "crash"
    assert "exit status 137 (SIGKILL in the container)" in job["last_start"]["detail"]
    journal = journal_since(t_fault)
    assert f"run {job['runs']} of job {JOB} starts (cause: crash)" in journal
    measurements["operator_restarts_then_crash"] = {
        "operator_starts": burst,
        "restart_limit_burst": burst,
        "restart_limit_interval": window,
        "seconds_from_first_restart_to_crash": round(t_fault - t_first, 1),
        "resumed_from_step": doc["resumed_from"]["step"],
        "seconds_to_training_again": round(t_up - t_fault, 1),
    }


def test_05c_status_table_stays_one_table_under_the_yaml_callback(training):
    """Issue 17 item 9: the header and rows are not folded at 80 columns by the YAML output."""
    if runs_record()["last_start"]["cause"] != "crash":  # the row's note below needs one
        t_fault = time.time()
        sh(f"docker kill --signal KILL {CONTAINER}")
        wait_resumed(t_fault)
    run = ansible_playbook(
        str(REPO / "playbooks" / "status.yml"),
        "-e",
        "unbroken_hosts=all",
        env={"ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml"},
    )
    assert run.returncode == 0, run.stdout[-3000:]
    lines = run.stdout.splitlines()
    header = [line for line in lines if line.split()[:2] == ["HOST", "JOB"] and "RESTARTS" in line]
    assert len(header) == 1 and header[0].split()[-3:] == ["RESTARTS", "RUNS", "NOTE"], lines
    row = [line for line in lines if INSTANCE in line and f" {JOB} " in line]
    assert len(row) == 1 and "training" in row[0], lines
    assert "restarted after a crash" in run.stdout
    # The default (JSON) output gets one list item per line instead.
    run = ansible_playbook(str(REPO / "playbooks" / "status.yml"), "-e", "unbroken_hosts=all")
    assert run.returncode == 0, run.stdout[-3000:]
    assert re.search(r'"HOST +JOB +STATE', run.stdout), run.stdout[-2000:]
    assert re.search(rf'"{INSTANCE} +{JOB} +training', run.stdout), run.stdout[-2000:]


def test_06_systemctl_stop_checkpoints_at_the_current_step(training, measurements):
    """Fault 3: systemctl stop; final checkpoint at the current step, clean exit within grace."""
    t_fault = time.time()
    sh(f"systemctl stop {UNIT}", timeout=DEMO["stop_grace"] + 60)
    stopped_in = time.time() - t_fault
    props = unit("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # Exit status 0: the trainer finished its checkpoint inside its budget (docker's
    # SIGKILL would have given 137, systemd's timeout the result 'timeout').  ExecMainCode
    # 1 (CLD_EXITED): docker run exited with that code, rather than being killed by the
    # SIGTERM systemd sends to what is left once ExecStop= returns (code 2, status 15).
    assert props == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",
        "ExecMainStatus": "0",
    }
    doc = status()
    assert doc["state"] == "stopped" and doc["exit_code"] == 0
    assert checkpoints()[-1] == doc["step"]
    assert f"received SIGTERM at step {doc['step']}" in journal_since(t_fault)
    t_start = time.time()
    sh(f"systemctl start {UNIT}")
    resumed, t_up = wait_resumed(t_start)
    assert resumed["resumed_from"]["step"] == doc["step"]
    entry = record(
        measurements,
        "systemctl_stop",
        doc["step"],
        resumed,
        t_start,
        t_up,
        seconds_to_stop=round(stopped_in, 1),
        timeout_stop_sec=DEMO["stop_grace"] + 30,
    )
    assert entry["steps_lost"] == 0


def test_07_corrupt_newest_checkpoint_falls_back_to_the_previous(training, measurements):
    """Fault 5: a bit-flipped newest checkpoint is skipped; resume from the previous one."""
    sh(f"systemctl stop {UNIT}", timeout=DEMO["stop_grace"] + 60)
    step_at_fault = status()["step"]
    steps = checkpoints()
    newest, previous = steps[-1], steps[-2]
    state = f"{CKPT_DIR}/step-{newest:06d}/state.pt"
    size = int(sh(f"stat -c %s {state}").stdout)
    # Same size, one byte changed in the middle: only the content hash can tell.
    sh(
        f"python3 -c \"f=open('{state}','r+b'); f.seek({size // 2}); b=f.read(1); "
        f'f.seek({size // 2}); f.write(bytes([b[0] ^ 0xFF])); f.close()"'
    )
    t_fault = time.time()
    sh(f"systemctl start {UNIT}")
    doc, t_up = wait_resumed(t_fault)
    assert doc["resumed_from"]["step"] == previous
    assert [s[0] for s in doc["resumed_from"]["skipped"]] == [f"step-{newest:06d}"]
    journal = journal_since(t_fault)
    assert f"checkpoint step-{newest:06d} is invalid" in journal
    assert f"falling back to step-{previous:06d}" in journal
    entry = record(measurements, "corrupt_newest", step_at_fault, doc, t_fault, t_up)
    assert 0 < entry["steps_lost"] <= INTERVAL


def test_08_frozen_trainer_is_restarted_by_the_watchdog(host, training, measurements):
    """Fault 6: SIGSTOP the trainer; the hang watchdog kills it and it resumes."""
    kills = json.loads(sh(f"cat /var/lib/unbroken/trainer/{JOB}/watchdog.json").stdout).get(
        "kills", 0
    )
    pid = sh("pgrep -f '^python3 /opt/unbroken/runtime/train.py'").stdout.split()[0]
    t_fault = time.time()
    sh(f"kill -STOP {pid}")
    step_at_fault = status()["step"]
    young = host.ansible("unbroken.training.training_status", f"name={JOB}", check=False)
    if time.time() - t_fault < HANG_TIMEOUT - 5:  # not yet: the heartbeat is still young
        assert young["jobs"][0]["hung"] is False
    doc, t_up = wait_resumed(t_fault, timeout=HANG_TIMEOUT + 4 * WATCHDOG_INTERVAL + 120)
    record_ = json.loads(sh(f"cat /var/lib/unbroken/trainer/{JOB}/watchdog.json").stdout)
    assert record_["kills"] == kills + 1
    detected_after = record_["last_kill_at"] - t_fault
    assert HANG_TIMEOUT - 1 <= detected_after <= HANG_TIMEOUT + 2 * WATCHDOG_INTERVAL + 10
    watchdog_log = sh(
        f"journalctl -u unbroken-trainer-watchdog.service --since=@{int(t_fault)} -o cat"
    ).stdout
    assert f"job {JOB}: no heartbeat for" in watchdog_log
    # Issue 17 item 9: the kill is in the job's own journal too, and the next start says why.
    assert f"hang watchdog: job {JOB}: no heartbeat for" in journal_since(t_fault)
    assert runs_record()["last_start"]["cause"] == "hang"
    entry = record(
        measurements,
        "sigstop_hang",
        step_at_fault,
        doc,
        t_fault,
        t_up,
        seconds_to_watchdog_kill=round(detected_after, 1),
        hang_timeout=HANG_TIMEOUT,
        watchdog_interval=WATCHDOG_INTERVAL,
    )
    assert 0 <= entry["steps_lost"] <= INTERVAL


def test_09_killing_the_ssh_session_that_started_the_job_does_not_stop_it(training, measurements):
    """Fault 8: start the job over SSH, kill that SSH session (both ends), training goes on."""
    sh(f"systemctl stop {UNIT}", timeout=DEMO["stop_grace"] + 60)
    t_start = time.time()
    ssh = "ssh -o BatchMode=yes -o StrictHostKeyChecking=no root@localhost " + shlex.quote(
        f"systemctl start {UNIT}; echo started; exec sleep 3600"
    )
    client = sh(f"setsid {ssh} >/tmp/ssh-session.out 2>&1 & echo $!").stdout.strip()
    wait_for(
        "the ssh session to start the job",
        lambda: "started" in sh("cat /tmp/ssh-session.out").stdout,
        timeout=60,
    )
    doc, _resumed_at = wait_resumed(t_start)
    session = sh("pgrep -f '^sshd: root'").stdout.split()
    assert session, "no sshd session process found"
    before = unit("ExecMainPID", "NRestarts")
    t_fault = time.time()
    sh(f"kill -KILL {' '.join(session)} {client}")
    wait_for(
        "the ssh session to be gone",
        lambda: sh("pgrep -f '^sshd: root' || true").stdout.strip() == "",
        timeout=30,
    )
    wait_for(
        "three more training steps",
        lambda: (status() or {}).get("step", 0) >= doc["step"] + 3 and status(),
        timeout=60,
    )
    after = unit("ActiveState", "ExecMainPID", "NRestarts")
    assert after == {"ActiveState": "active", **before}
    assert status()["started_at"] == doc["started_at"]
    measurements["ssh_session_killed"] = {
        "job_kept_running": True,
        "steps_after_kill": status()["step"] - doc["step"],
        "seconds_observed": round(time.time() - t_fault, 1),
    }


def test_10_restarting_the_whole_instance_brings_the_job_back(training, measurements):
    """Fault 4: hard power cycle of the instance (docker stop -t 1 + start); no SSH, no Ansible."""
    restarts = runs_record()["restarts"]
    t_fault = time.time()
    subprocess.run(["docker", "stop", "-t", "1", INSTANCE], check=True, capture_output=True)
    raw = subprocess.run(
        ["docker", "cp", f"{INSTANCE}:{CKPT_DIR}/status.json", "-"], check=True, capture_output=True
    ).stdout
    step_at_fault = _status_from_tar(raw)["step"]
    subprocess.run(["docker", "start", INSTANCE], check=True, capture_output=True)
    doc, t_up = wait_resumed(t_fault, timeout=240)
    assert doc["resumed_from"]["step"] > 0
    entry = record(measurements, "instance_restart", step_at_fault, doc, t_fault, t_up)
    assert 0 <= entry["steps_lost"] <= INTERVAL
    # systemd's NRestarts starts again at 0 after a boot; the job's restart count does not.
    job = runs_record()
    assert job["last_start"]["cause"] == "reboot" and job["restarts"] == restarts + 1


def _status_from_tar(raw: bytes) -> dict[str, Any]:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(raw)) as archive:
        member = archive.extractfile("status.json")
        assert member is not None
        return json.loads(member.read())


def test_11_crash_looping_job_fails_with_a_reason(host, training, measurements):
    """Fault 7: a job whose command always fails stops after the crash-loop limit."""
    run = ansible_playbook("broken.yml")
    assert run.returncode != 0, run.stdout[-3000:]
    # The deployment itself fails and says why: crash loop, exit code, the job's own words.
    assert "job broken is not training after its (re)start" in run.stdout
    assert (
        "crash-loop limit reached (3 automatic restarts within 30s); last exit code 3" in run.stdout
    )
    assert "simulated failure: cannot open the data set" in run.stdout
    assert "FAILED - RETRYING" not in run.stdout  # the wait is one module run, no retry loop

    def failed() -> dict[str, Any] | None:
        report_ = host.ansible("unbroken.training.training_status", "name=broken", check=False)
        job = report_["jobs"][0]
        return job if job["active_state"] == "failed" and job["failure_reason"] else None

    job = wait_for("the broken job to fail with a reason", failed, timeout=120, every=2)
    # systemd 252 keeps the last run's result (exit-code) after a crash loop of automatic
    # restarts; a refused manual start would say start-limit-hit.
    assert job["result"] in ("exit-code", "start-limit-hit") and job["failure"]["crash_loop"]
    assert job["exit_code"] == 3
    assert "crash-loop limit reached (3 automatic restarts within 30s)" in job["failure_reason"]
    assert any(
        "simulated failure: cannot open the data set" in line
        for line in job["failure"]["last_log_lines"]
    )
    # The healthy job next to it was not touched by that deployment.
    assert unit("ActiveState")["ActiveState"] == "active"
    measurements["crash_loop"] = {
        "result": job["result"],
        "exit_code": job["exit_code"],
        "restarts": job["restarts"],
        "reason": job["failure_reason"],
    }


def test_12_absent_jobs_stop_gracefully_and_keep_their_checkpoints(training, broken_job):
    """state: absent stops the job with a final checkpoint and removes its unit, not its data."""
    t_fault = time.time()
    run = ansible_playbook("broken.yml", "-e", "broken_state=absent", "-e", "demo_state=absent")
    assert run.returncode == 0, run.stdout[-3000:]
    doc = status()
    assert doc["state"] == "stopped" and checkpoints()[-1] == doc["step"]
    assert f"received SIGTERM at step {doc['step']}" in journal_since(t_fault)
    for name in (JOB, "broken"):
        assert (
            sh(f"test -e /etc/systemd/system/unbroken-job-{name}.service", check=False).returncode
            == 1
        )
        assert unit("LoadState", name=f"unbroken-job-{name}.service")["LoadState"] == "not-found"
    assert sh("docker ps -aq --filter label=unbroken.training.job").stdout.strip() == ""
    assert checkpoints() and sh("test -d /srv/checkpoints/broken", check=False).returncode == 0
