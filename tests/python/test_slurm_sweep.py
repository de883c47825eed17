"""`lrid sweep submit --slurm` on a real one-node Slurm cluster (Debian's slurmctld, slurmd and
munge, started by tests/slurm/cluster.sh): a small CPU sweep as a 4-task array throttled to 2,
recording into a central daemon of an installed lrid; one array task cancelled with scancel;
the resubmission runs only the missing cells. If the cluster cannot start, the test fails."""

import json
import os
import pathlib
import subprocess
import time

import pytest
from conftest import small_sweep, sql

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"

SWEEP = small_sweep("slurm", [0, 1], [0, 1])


@pytest.fixture()
def slurm(tmp_path):
    """A running one-node cluster: the environment its commands need (SLURM_CONF)."""
    cluster = tmp_path / "cluster"
    out = subprocess.run([str(CLUSTER), "start", str(cluster)], capture_output=True, text=True)
    assert out.returncode == 0, f"the Slurm cluster did not start:\n{out.stdout}\n{out.stderr}"
    env = dict(os.environ, SLURM_CONF=str(cluster / "slurm.conf"))
    yield env
    subprocess.run([str(CLUSTER), "stop", str(cluster)], check=False)


def wait_for_job(job, env, timeout=600):
    """Until no task of `job` is pending or running in the queue."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True, text=True, env=env
        )
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(0.5)
    pytest.fail(f"job {job} still queued after {timeout} s")


def shard_entries(state):
    entries = []
    for f in sorted(state.glob("journal-shard-*.jsonl")):
        entries += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return entries


def test_a_sweep_runs_as_a_throttled_slurm_array_and_a_resubmission_runs_only_what_is_missing(
    slurm, installed, central, tmp_path
):
    sweep = tmp_path / "slurm.toml"
    sweep.write_text(SWEEP)
    state = tmp_path / "state"
    submit = [
        installed, "sweep", "submit", str(sweep), "--slurm", "--tasks", "4",
        "--max-parallel", "2", "--server", central, "--state-dir", str(state),
    ]
    # The script first (dry run): 4 tasks, throttled to 2, requeued on preemption.
    dry = subprocess.run(submit + ["--dry-run"], capture_output=True, text=True, env=slurm)
    assert dry.returncode == 0, dry.stderr
    assert "#SBATCH --array=0-3%2\n" in dry.stdout
    assert "#SBATCH --requeue\n" in dry.stdout
    assert not state.exists(), "a dry run writes nothing"

    out = subprocess.run(submit, capture_output=True, text=True, env=slurm)
    assert out.returncode == 0, out.stdout + out.stderr
    job = out.stdout.split()[3].rstrip(":")
    assert job.isdigit(), out.stdout
    # Task 3 waits behind the throttle: cancel it (if it had started, it is killed mid-run).
    subprocess.run(["scancel", f"{job}_3"], check=True, env=slurm)
    wait_for_job(job, slurm)

    cells = 2 * 2 * 2
    runs = sql(installed, central, "SELECT run_id, status FROM runs ORDER BY run_id")
    closed = {r["run_id"] for r in runs if r["status"] == "closed"}
    first = shard_entries(state)
    assert {e["shard"] for e in first} == {"0/4", "1/4", "2/4"}, first
    assert len(closed) == 6, runs
    # Every task wrote its own log under the state folder.
    logs = sorted((state / "slurm").glob("lrid-slurm-*.log"))
    assert len(logs) >= 3, logs

    status = subprocess.run(
        [installed, "sweep", "status", str(sweep), "--server", central, "--state-dir", str(state)],
        capture_output=True, text=True,
    )
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines()[1:]}
    assert rows["3"][:2] == ["2", "0"], status.stdout  # shard 3: 2 cells, none done
    assert rows["all"][:2] == [str(cells), "6"], status.stdout

    # Resubmitted: only array task 3 is submitted, and only its cells run.
    again = subprocess.run(submit, capture_output=True, text=True, env=slurm)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "only the unfinished: [3]" in again.stdout, again.stdout
    job2 = again.stdout.split()[3].rstrip(":")
    script = sorted(state.glob("submit-*.sbatch"))[-1].read_text()
    assert "#SBATCH --array=3%2\n" in script
    wait_for_job(job2, slurm)
    second = shard_entries(state)[len(first):]
    assert second and {e["shard"] for e in second} == {"3/4"}, second
    assert all(e["outcome"] == "completed" for e in second), second

    runs = sql(installed, central, "SELECT run_id, status FROM runs ORDER BY run_id")
    closed = [r["run_id"] for r in runs if r["status"] == "closed"]
    cells_closed = [r.split(":a")[0] for r in closed]
    assert len(cells_closed) == cells and len(set(cells_closed)) == cells, runs
    points = sql(
        installed, central,
        "SELECT count(*) AS n FROM observables o JOIN runs r ON o.run_id = r.run_id WHERE r.status = 'closed'",
    )
    assert points[0]["n"] == cells * 3 * 4  # 3 points × 4 layers per run

    # Everything complete: a third submission submits nothing.
    done = subprocess.run(submit, capture_output=True, text=True, env=slurm)
    assert done.returncode == 0
    assert "nothing to submit" in done.stderr, done.stderr
