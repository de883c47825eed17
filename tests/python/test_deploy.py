"""The deployment files and the Kubernetes executor, checked as far as this machine allows:
the generated Indexed Job and the daemon's manifests validate against the Kubernetes schemas
(kubernetes-validate); the Indexed Job contract is emulated by running each completion index's
own command with JOB_COMPLETION_INDEX set, one index killed and retried; the systemd unit passes
`systemd-analyze verify`. No cluster runs here (deploy/README.md says so)."""

import os
import pathlib
import signal
import subprocess
import time

import kubernetes_validate
import pytest
import yaml
from conftest import small_sweep, sql

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S_VERSION = "1.33"  # backoffLimitPerIndex is GA from 1.33

# Index 1 is killed mid-run: its runs have 32 steps.
SWEEP = small_sweep("k8s", [0], [0, 1, 2], train_examples=256)


def validate_all(text):
    docs = [d for d in yaml.safe_load_all(text) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    return docs


def test_the_daemon_s_kubernetes_manifests_are_valid():
    docs = validate_all((ROOT / "deploy" / "k8s" / "lrid.yaml").read_text())
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "Deployment", "Service"]
    serve = docs[1]["spec"]["template"]["spec"]["containers"][0]["command"]
    # Beyond loopback with a token from a file, never on the command line as a value.
    assert "--token-file" in serve and "--token" not in serve


def test_the_sweep_templates_are_valid():
    # deploy/sweep/: what `lrid sweep submit` writes for the paper's sweep (golden files of
    # daemon/sweep's unit tests).
    config_map, job = validate_all((ROOT / "deploy" / "sweep" / "paper.k8s.yaml").read_text())
    assert 'name = "paper"' in config_map["data"]["sweep.toml"]
    assert job["spec"]["completionMode"] == "Indexed"
    script = (ROOT / "deploy" / "sweep" / "paper.sbatch").read_text()
    assert script.startswith("#!/bin/bash\n")
    out = subprocess.run(["bash", "-n", str(ROOT / "deploy" / "sweep" / "paper.sbatch")])
    assert out.returncode == 0


def test_a_broken_manifest_is_caught_by_the_validator():
    doc = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"completionMode": "Indexed", "completions": "three", "template": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_systemd_unit_verifies(lrid_bin, tmp_path):
    unit = (ROOT / "deploy" / "systemd" / "lrid.service").read_text()
    assert "/usr/local/bin/lrid" in unit
    # The binary where `make install PREFIX=/usr/local` puts it: here, the build's.
    local = tmp_path / "lrid.service"
    local.write_text(unit.replace("/usr/local/bin/lrid", lrid_bin))
    out = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.replace("/usr/local/bin/lrid", str(tmp_path / "missing")))
    out = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True)
    assert out.returncode != 0


def test_the_indexed_job_validates_and_its_indices_run_the_sweep_with_one_retried(
    installed, central, tmp_path
):
    # The central daemon of an installed layout (its built-in rules); the pods run that lrid.
    lrid_bin, server = installed, central
    sweep = tmp_path / "k8s.toml"
    sweep.write_text(SWEEP)
    out = subprocess.run(
        [lrid_bin, "sweep", "submit", str(sweep), "--k8s", "--dry-run", "--tasks", "3",
         "--max-parallel", "2", "--image", "lrid:test", "--server", server,
         "--cpus-per-task", "1", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    config_map, job = validate_all(out.stdout)
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 2)
    assert spec["backoffLimitPerIndex"] >= 1
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["LRID_SERVER"]["value"] == server
    assert env["LRID_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"

    # The pod's file system: the ConfigMap's sweep file and the state volume.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert {v["name"]: v for v in pod["volumes"]}["sweep"]["configMap"]["name"] == config_map["metadata"]["name"]
    sweep_dir = tmp_path / "pod" / "sweep"
    sweep_dir.mkdir(parents=True)
    for key, text in config_map["data"].items():
        (sweep_dir / key).write_text(text)

    def index_command(i):
        state = tmp_path / "pod" / f"state-{i}"
        cmd = [lrid_bin if a == "lrid" else a for a in container["command"]]
        cmd = [a.replace(mounts["sweep"], str(sweep_dir)).replace(mounts["state"], str(state))
               for a in cmd]
        environ = dict(os.environ, JOB_COMPLETION_INDEX=str(i), LRID_SERVER=server)
        environ.pop("SLURM_ARRAY_TASK_ID", None)
        return cmd, environ

    cells = 2 * 3
    # Index 1: its pod is killed (SIGKILL, as on a node failure) while its first run trains…
    cmd, environ = index_command(1)
    pod1 = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if sql(lrid_bin, server, "SELECT run_id FROM runs WHERE status = 'open'"):
            break
        assert pod1.poll() is None, "index 1 ended before it could be killed"
        time.sleep(0.05)
    os.killpg(pod1.pid, signal.SIGKILL)
    pod1.wait()
    interrupted = sql(lrid_bin, server, "SELECT run_id FROM runs WHERE status = 'open'")
    assert len(interrupted) == 1, interrupted
    # …then every index runs (index 1 for the second time: the Job's per-index retry).
    for i in range(3):
        cmd, environ = index_command(i)
        done = subprocess.run(cmd, env=environ, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert f"shard {i}/3" in done.stderr, done.stderr

    runs = sql(lrid_bin, server, "SELECT run_id, status FROM runs ORDER BY run_id")
    closed = [r["run_id"] for r in runs if r["status"] == "closed"]
    cells_closed = [r.split(":a")[0] for r in closed]
    assert len(closed) == cells and len(set(cells_closed)) == cells, runs
    # The killed attempt stays open (its completed points are kept); the retry is a new attempt.
    assert interrupted[0]["run_id"] + ":a2" in closed, runs
