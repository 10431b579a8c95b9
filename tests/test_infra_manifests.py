"""infra/ parses and validates: KubeRay manifests, the `ray up` file, the Dockerfile, the launchers' dry runs.

Validation uses the real checkers where they exist offline: kubernetes-validate (strict) for every pod
template, Ray's own `prepare_config` + `validate_config` for the cluster file, the BuildKit parser (the
`dockerfile` package) for the Dockerfile, and the deepspeed and torchrun argument parsers for the
commands the launch scripts print.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
SECRET = "mfm-object-store"


def _pin(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M | re.I)
    assert match, f"constraints.txt pins no {name}"
    return match.group(1)


def _load(rel: str) -> dict:
    return yaml.safe_load((INFRA / rel).read_text())


# ---------------------------------------------------------------------------------------------------------
# KubeRay
# ---------------------------------------------------------------------------------------------------------


def _pod_templates(spec: dict) -> dict[str, dict]:
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec["workerGroupSpecs"]})
    return {name: group["template"] for name, group in groups.items()}


def _gpus(template: dict) -> int:
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in template["spec"]["containers"])


def test_raycluster_fields_kuberay_needs():
    doc = _load("kuberay/raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = doc["spec"]
    assert spec["rayVersion"] == _pin("ray"), "rayVersion must be the Ray the image installs"
    head = spec["headGroupSpec"]
    # KubeRay passes rayStartParams to `ray start` as strings; numbers are rejected by its CRD
    for group in [head, *spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head must not take curation tasks"
    head_container = head["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports == {"gcs-server": 6379, "dashboard": 8265, "client": 10001}

    workers = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in workers}) == len(workers)
    for group in workers:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    kinds = {name: _gpus(t) for name, t in _pod_templates(spec).items()}
    assert kinds["head"] == 0 and kinds["cpu"] == 0 and kinds["gpu"] == 1, kinds


def test_raycluster_pod_templates_are_valid_pods():
    import kubernetes_validate

    spec = _load("kuberay/raycluster.yaml")["spec"]
    images = set()
    for name, template in _pod_templates(spec).items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"mfm-{name}"}, "spec": template["spec"]}
        try:
            kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} pod template: {str(exc).splitlines()[0]} at {list(exc.path)}")
        volumes = {v["name"] for v in template["spec"].get("volumes", [])}
        for container in template["spec"]["containers"]:
            images.add(container["image"])
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= volumes, f"{name}: mounts of undeclared volumes {mounts - volumes}"
            secrets = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert secrets == [SECRET], f"{name}: object-store credentials must come from the Secret {SECRET}"
            assert not any("SECRET" in e["name"] or "KEY" in e["name"] for e in container.get("env", [])), name
    assert len(images) == 1, f"one image for every node, got {images}"


def test_rayjob_runs_mfm_curate_on_the_same_cluster():
    from pipeline.cli import _curate_parser

    job = _load("kuberay/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["rayClusterSpec"] == _load("kuberay/raycluster.yaml")["spec"], "rayjob.yaml drifted from raycluster"
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    assert spec["shutdownAfterJobFinishes"] is True
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["mfm", "curate"], argv
    args = _curate_parser().parse_args(argv[2:])
    assert args.address == "auto" and args.input.startswith("s3://") and args.output.startswith("s3://")
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = [m["mountPath"] for m in head["containers"][0]["volumeMounts"]]
    assert any(args.config.startswith(m + "/") for m in mounts), f"{args.config} is not on a head volume"


def test_curate_config_loads_and_fits_the_gpu_group():
    from pipeline.config import load_config

    cfg = load_config(INFRA / "curate.yaml")
    assert cfg.storage.options == {}, "credentials belong in the environment, not in the config"
    share = sum(s.actors * (s.gpus or 0) for s in (cfg.motion, cfg.depth, cfg.text, cfg.vae) if s.gpus)
    gpu_group = next(g for g in _load("kuberay/raycluster.yaml")["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    start_gpus = gpu_group["replicas"] * _gpus(gpu_group["template"])
    assert 0 < share <= start_gpus + 1e-6, f"actor pools need {share} GPUs, the GPU group starts with {start_gpus}"
    assert share <= _load("ray/cluster.yaml")["available_node_types"]["gpu_worker"]["max_workers"]


# ---------------------------------------------------------------------------------------------------------
# ray up
# ---------------------------------------------------------------------------------------------------------


def test_ray_up_cluster_file_validates():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load("ray/cluster.yaml")
    validate_config(prepare_config(raw))  # what `ray up` runs before it talks to the cloud
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types and {"cpu_worker", "gpu_worker"} <= set(types)
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    head_cmd = " ".join(raw["head_start_ray_commands"])
    assert "--head" in head_cmd and "--port=6379" in head_cmd and "--dashboard-host=0.0.0.0" in head_cmd
    assert "--address=$RAY_HEAD_IP:6379" in " ".join(raw["worker_start_ray_commands"])
    assert raw["docker"]["image"] == _load("kuberay/raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["image"]  # fmt: skip
    for local in raw["file_mounts"].values():
        assert (ROOT / local).exists(), f"file_mounts source {local} is not in the repository"
    text = (INFRA / "ray" / "cluster.yaml").read_text()
    assert "aws_secret_access_key" not in text.lower() and "AWS_SECRET" not in text


# ---------------------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------------------


def test_dockerfile_parses_and_pins():
    import dockerfile

    commands = dockerfile.parse_file(str(INFRA / "docker" / "Dockerfile"))
    names = [c.cmd for c in commands]
    assert set(names[: names.index("FROM")]) <= {"ARG"}, "only ARGs may precede FROM"
    base = next(c.value[0] for c in commands if c.cmd == "ARG" and c.value[0].startswith("BASE_IMAGE="))
    tag = base.split("=", 1)[1].split(":", 1)[1]
    assert tag.startswith(f"{_pin('torch')}-cuda") and tag.endswith("-devel"), f"{tag}: pinned torch, with nvcc"
    runs = [c.value[0] for c in commands if c.cmd == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs and all("-c constraints.txt" in r for r in installs), "every pip install uses the pins"
    assert not any(re.search(r"pip install[^&]*\btorch\b", r) for r in installs), "the base's torch stays"
    ds = next(r for r in installs if "deepspeed" in r)
    assert "--no-build-isolation" in ds, "deepspeed must build against the base's torch"
    copied = {src for c in commands if c.cmd == "COPY" for src in c.value[:-1]}
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {p.rstrip("*") for p in packages["include"]} <= copied, "every package pyproject installs must be copied"
    ignored = (INFRA / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_dockerfile_torch_check_passes_here():
    """The build's own check (a heredoc) runs in this venv, whose torch is the pinned one."""
    import dockerfile

    check = next(c for c in dockerfile.parse_file(str(INFRA / "docker" / "Dockerfile")) if c.heredocs)
    script = check.heredocs[0][2]
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"torch {_pin('torch')}" in done.stdout


# ---------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------


LAUNCH_VARS = ("HOSTFILE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "NNODES", "NPROC_PER_NODE", "LAUNCHER",
               "DS_ARGS", "TORCHRUN_ARGS", "PYTHON", "DRY_RUN")  # fmt: skip


def _launch(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    return subprocess.run(["bash", str(INFRA / script), *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _dry_run(script: str, env: dict[str, str], *args: str) -> list[str]:
    done = _launch(script, env, "--dry-run", *args)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout)


def test_deepspeed_launch_dry_run():
    from deepspeed.launcher.runner import fetch_hostfile, parse_args

    from trainer.configs import PRESETS
    from trainer.train import parse_args as train_args

    example = str(INFRA / "deepspeed" / "hostfile.example")
    assert list(fetch_hostfile(example).items()) == [("node-0", 8), ("node-1", 8)]
    fan_out = _dry_run("deepspeed/launch.sh", {"HOSTFILE": example, "PYTHON": "py"}, "--preset", "2b_360px")
    assert fan_out == ["py", "-m", "deepspeed.launcher.runner", "--hostfile", example, "--master_addr", "node-0",
                       "--master_port", "29500", "--launcher", "pdsh", "--no_local_rank", "--module", "mfm.cli",
                       "train", "--preset", "2b_360px"]  # fmt: skip
    per_node = _dry_run("deepspeed/launch.sh", {"HOSTFILE": example, "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5",
                                                "DS_ARGS": "--include node-1:0,1"}, "--preset", "tiny")  # fmt: skip
    args = parse_args(per_node[3:])  # the launcher's own parser accepts every flag
    assert (args.no_ssh, args.node_rank, args.master_addr, args.include) == (True, 1, "10.0.0.5", "node-1:0,1")
    assert (args.module, args.no_local_rank, args.user_script, args.user_args) == (
        True, True, "mfm.cli", ["train", "--preset", "tiny"])  # fmt: skip
    assert train_args(args.user_args[1:]).preset in PRESETS and "2b_360px" in PRESETS


def test_deepspeed_launch_rejects_a_missing_hostfile(tmp_path):
    done = _launch("deepspeed/launch.sh", {"HOSTFILE": str(tmp_path / "nope")}, "--preset", "tiny")
    assert done.returncode == 2 and "hostfile" in done.stderr and "nope" in done.stderr


def test_torchrun_launch_dry_run():
    from torch.distributed.run import get_args_parser

    cmd = _dry_run("torchrun/launch.sh", {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.5",
                                          "NPROC_PER_NODE": "8", "PYTHON": "py"}, "--preset", "2b_360px")  # fmt: skip
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    args = get_args_parser().parse_args(cmd[3:])
    assert (args.nnodes, args.node_rank, args.nproc_per_node, args.master_addr, args.master_port) == (
        "2", 1, "8", "10.0.0.5", 29500)  # fmt: skip
    assert (args.module, args.training_script, args.training_script_args) == (
        True, "mfm.cli", ["train", "--preset", "2b_360px"])  # fmt: skip
    single = _dry_run("torchrun/launch.sh", {"NPROC_PER_NODE": "2"}, "--preset", "tiny")
    assert "--master-addr" in single and single[single.index("--master-addr") + 1] == "127.0.0.1"
    done = _launch("torchrun/launch.sh", {"NNODES": "2"}, "--dry-run")
    assert done.returncode == 2 and "MASTER_ADDR" in done.stderr
