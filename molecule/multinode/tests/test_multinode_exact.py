# SPDX-License-Identifier: GPL-3.0-or-later
# Copyright (c) 2026 unbroken.training contributors
"""The faulted two-node job's state equals an uninterrupted run's, tensor for tensor.

Runs after tests/test_multinode.py's faults (a container killed, the rendezvous host
restarted, a partition past the collective timeout): the job resumed three times from
checkpoints. Its newest checkpoint at step S (node 1's disk) is compared with the one an
uninterrupted twin writes at S: the same image, train.py and arguments, world size 2 as
``torchrun --standalone --nproc-per-node 2`` on the Docker host (2 nodes x 1 process and 1
node x 2 processes are the same world: the sampler's order and every RNG depend on the rank
and the world size only, never on the node layout). Every tensor (model, optimizer,
scheduler, scaler, the sampler's position, the RNG states of both ranks) must be
``torch.equal``, and so must every other value of the payload.
"""

from __future__ import annotations

import subprocess
import tempfile
import textwrap
from pathlib import Path

from test_multinode import JOB, NODES, sh, wait_training_both

IMAGE = str(JOB["image"])
CKPT = str(JOB["checkpoint_dir"])

COMPARE = textwrap.dedent(
    """
    import sys, torch
    from unbroken_ckpt import load_state_file

    def walk(a, b, where, counts):
        assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
        if isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: dtype/shape differ"
            assert torch.equal(a, b), f"{where}: tensors differ"
            counts[0] += 1
        elif isinstance(a, dict):
            assert a.keys() == b.keys(), f"{where}: keys {sorted(a, key=str)} {sorted(b, key=str)}"
            for key in a:
                walk(a[key], b[key], f"{where}[{key!r}]", counts)
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b), f"{where}: lengths differ"
            for index, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{index}]", counts)
        else:
            assert a == b, f"{where}: {a!r} != {b!r}"

    job, twin = (load_state_file(path) for path in sys.argv[1:3])
    counts = [0]
    walk(job, twin, "state", counts)
    print(f"EQUAL step {job['step']}: {counts[0]} tensors")
    """
)


def run_in_image(work: Path, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """A command in the job's image on the Docker host, with the runtime node 1 runs."""
    user = f"{subprocess.check_output(['id', '-u'], text=True).strip()}:0"
    return subprocess.run(
        [
            # No network: torchrun --standalone's store and gloo on loopback, under a
            # host name that resolves there.
            "docker", "run", "--rm", "--user", user, "--network", "none", "--hostname", "localhost",
            "-e", "GLOO_SOCKET_IFNAME=lo",
            "--shm-size", "256m", "-e", "HOME=/tmp", "-e", "OMP_NUM_THREADS=1",
            "-e", "PYTHONPATH=/opt/unbroken/runtime",
            "-v", f"{work}/runtime:/opt/unbroken/runtime:ro", "-v", f"{work}:/work",
            IMAGE, *argv,
        ],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def copy_out(node: str, parent: str, name: str, work: Path) -> bool:
    copied = subprocess.run(
        f"docker exec {node} tar -C {parent} -cf - {name} | tar -C {work} -xf -",
        shell=True, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return copied.returncode == 0


def copy_newest_checkpoint(work: Path) -> int:
    """Node 1's newest complete checkpoint, copied before the job's rotation removes it."""
    for _attempt in range(10):
        steps = sh(NODES[0], f"ls {CKPT} | grep -E '^step-[0-9]+$' | sort", check=False).split()
        for name in reversed(steps):
            if copy_out(NODES[0], CKPT, name, work) and (work / name / "MANIFEST.json").exists():
                return int(name.split("-")[1])
            subprocess.run(["rm", "-rf", str(work / name)], check=False)
    raise AssertionError(f"no checkpoint of {CKPT} could be copied from {NODES[0]}")


def twin_args(step: int) -> list[str]:
    """The job's own arguments, to ``step``, without the pacing sleep (timing, not math)."""
    args = [str(a) for a in JOB["args"]]
    options = dict(zip(args[::2], args[1::2]))
    assert [*options] == args[::2], args  # option-value pairs only
    options["--steps"] = str(step)
    options.pop("--step-sleep", None)
    return [part for pair in options.items() for part in pair]


def test_the_faulted_job_equals_an_uninterrupted_twin_tensor_for_tensor() -> None:
    wait_training_both()
    # The faults before this test really interrupted the run: it resumed from a checkpoint.
    status = sh(NODES[0], f"cat {CKPT}/status.json")
    assert '"resumed_from"' in status, status
    with tempfile.TemporaryDirectory(prefix="ut-mn-exact-") as tmp:
        work = Path(tmp)
        work.chmod(0o777)
        # The runtime as the role installed it (its format modules are links in the checkout).
        copy_out(NODES[0], "/opt/unbroken", "runtime", work)
        step = copy_newest_checkpoint(work)
        assert step > 0
        twin = run_in_image(
            work,
            "torchrun", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
            "/opt/unbroken/runtime/train.py", "--checkpoint-dir", "/work/twin",
            "--layout", "node-local", "--collective-timeout", str(JOB["collective_timeout"]),
            *twin_args(step),
            timeout=900,
        )  # fmt: skip
        assert twin.returncode == 0, twin.stdout[-3000:] + twin.stderr[-3000:]
        name = f"step-{step:06d}"
        assert (work / "twin" / name / "MANIFEST.json").exists(), sorted(
            p.name for p in (work / "twin").iterdir()
        )
        compared = run_in_image(
            work,
            "python3", "-c", COMPARE, f"/work/{name}/state.pt", f"/work/twin/{name}/state.pt",
            timeout=300,
        )  # fmt: skip
        print(compared.stdout, flush=True)
        assert compared.returncode == 0, compared.stdout[-3000:] + compared.stderr[-3000:]
        assert f"EQUAL step {step}:" in compared.stdout
