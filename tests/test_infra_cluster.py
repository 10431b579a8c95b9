"""Curation at scale on real engines: an S3-compatible server on loopback and a two-node Ray cluster.

- The object store is moto's S3 server (`ThreadedMotoServer`) with request signing enforced: it serves
  only an IAM user made in the test, whose moto-generated secret key we then look for everywhere.
- The local run: `mfm curate` on a local Ray, inputs read from and Lance tables written to s3://, with the
  credentials given as fsspec options and Lance storage_options in the config.
- The cluster run: a head and a worker started as separate raylets (`ray.cluster_utils.Cluster`, as Ray's
  own tests do); the head takes no tasks (num_cpus=0, as in infra/), so every curation task runs on the
  worker. The nodes get the credentials from their environment (as KubeRay pods do from a Secret) and
  `mfm curate --address auto` is submitted through the Ray Jobs API on the head's dashboard. Its tables
  equal the local run's: same clip_ids, spans, decisions and scores.
- The secret key appears in no command output, job log, Ray log, cache file or stored object.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import video_fixtures as vf

# the raylets are forked after lance is imported here; they exec at once, which is safe
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:lance is not fork-safe")]
BUCKET = "mfm-test"
REGION = "us-east-1"
SIZE = (96, 128)
OBJECT_STORE_MEMORY = 200 * 2**20
CLIP_COLUMNS = ["clip_id", "source_uri", "frame_start", "frame_end", "caption", "passed", "reject_reason",
                "blur_score", "motion_score", "motion_method"]  # fmt: skip


@dataclass
class Store:
    endpoint: str
    key_id: str
    secret: str

    def fsspec_options(self) -> dict:
        return {"key": self.key_id, "secret": self.secret,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": REGION}}  # fmt: skip

    def lance_options(self) -> dict[str, str]:
        return {"aws_access_key_id": self.key_id, "aws_secret_access_key": self.secret,
                "endpoint": self.endpoint, "allow_http": "true", "region": REGION}  # fmt: skip

    def env(self) -> dict[str, str]:
        """What a node's environment carries (a KubeRay Secret via envFrom): read by s3fs and Lance alike."""
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true"}  # fmt: skip

    def client(self, secret: str | None = None):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.key_id,
                            aws_secret_access_key=secret or self.secret)  # fmt: skip


@dataclass
class Run:
    output: str
    logs: str  # everything the command printed (the job's log for the cluster run)
    ray_dir: Path  # Ray's temp dir: session logs of every process


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without AWS credentials or a Ray address of the developer's own, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    return {**env, **extra}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    vf.write_moving_pattern(root / "fast.mp4", 30, SIZE, (3.0, 1.0), seed=1)
    (root / "fast.txt").write_text("a texture sliding right")
    vf.write_cuts_video(root / "cuts.mp4", 40, (20,), SIZE, speed=(2.0, 0.0))
    vf.write_image(root / "still.png", SIZE)
    return root


@pytest.fixture(scope="module")
def store(media) -> Store:
    """moto's S3 server on 127.0.0.1 that checks signatures, one IAM user, the media under raw/."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # the next 3 requests may go unsigned (to make the user); every request after them is authenticated
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"3", timeout=10).raise_for_status()
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="bootstrap",
                       aws_secret_access_key="bootstrap")  # fmt: skip
    iam.create_user(UserName="curator")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="curator", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="curator")["AccessKey"]
    s3 = Store(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(media.iterdir()):
        client.upload_file(str(path), BUCKET, f"raw/{path.name}")
    yield s3
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)
    server.stop()


@pytest.fixture(scope="module")
def work() -> Path:
    # short: Ray's unix sockets live under its temp dir, and socket paths are limited to 107 bytes
    root = Path(tempfile.mkdtemp(prefix="mfm-infra-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _write_config(path: Path, cache_dir: Path, storage: str) -> Path:
    path.write_text(
        f"storage: {storage}\n"
        "clip: {shot_detector: hsv, min_frames: 9, max_frames: 17}\n"
        "motion: {threshold: 1.0, analysis_short_side: 96, n_pairs: 4}\n"
        f"run: {{commit_every: 2, cache_dir: {cache_dir}}}\n"
    )
    return path


@pytest.fixture(scope="module")
def local_run(store, work) -> Run:
    """Credentials in the config (fsspec options + Lance storage_options), none in the environment."""
    storage = json.dumps({"options": store.fsspec_options(), "lance": store.lance_options()})
    config = _write_config(work / "local.yaml", work / "local-cache", storage)
    ray_dir = work / "local-ray"
    ray_dir.mkdir()
    output = f"s3://{BUCKET}/local"
    argv = [sys.executable, "-m", "mfm.cli", "curate", "--input", f"s3://{BUCKET}/raw/", "--output", output,
            "--config", str(config), "--set", "run.num_cpus=2"]  # fmt: skip
    done = subprocess.run(argv, env=_clean_env(RAY_TMPDIR=str(ray_dir)), capture_output=True, text=True, timeout=300)
    logs = done.stdout + done.stderr
    assert done.returncode == 0, logs[-4000:]
    return Run(output, logs, ray_dir)


@pytest.fixture(scope="module")
def cluster_run(store, work, local_run) -> Run:
    """Head (dashboard, drivers, no CPUs) + worker (2 CPUs) as separate raylets; the job via the Jobs API."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    config = _write_config(work / "cluster.yaml", work / "cluster-cache", "{options: {}}")
    ray_dir = work / "cluster-ray"
    ray_dir.mkdir()
    with pytest.MonkeyPatch.context() as mp:  # the raylets (and every process they start) inherit this
        for key in [k for k in os.environ if k.startswith(("AWS_", "RAY_ADDRESS"))]:
            mp.delenv(key)
        for key, value in {**store.env(), "RAY_TMPDIR": str(ray_dir)}.items():
            mp.setenv(key, value)
        # the head's dashboard agent defaults to the fixed port 52365, which any other Ray on this machine
        # may hold: then the Jobs API finds no agent. A free port avoids that.
        head = dict(num_cpus=0, object_store_memory=OBJECT_STORE_MEMORY, include_dashboard=True,
                    dashboard_host="127.0.0.1", dashboard_port=0, dashboard_agent_listen_port=_free_port())  # fmt: skip
        cluster = Cluster(initialize_head=True, head_node_args=head)
        worker = cluster.add_node(num_cpus=2, object_store_memory=OBJECT_STORE_MEMORY)
        cluster.wait_for_nodes()
    try:
        dashboard = f"http://{cluster.head_node.address_info['webui_url']}"
        client = JobSubmissionClient(dashboard)
        output = f"s3://{BUCKET}/cluster"
        entrypoint = shlex.join([sys.executable, "-m", "mfm.cli", "curate", "--input", f"s3://{BUCKET}/raw/",
                                 "--output", output, "--config", str(config), "--address", "auto"])  # fmt: skip
        job_id = _submit(client, entrypoint)
        deadline = time.monotonic() + 300
        while not (status := client.get_job_status(job_id)).is_terminal() and time.monotonic() < deadline:
            time.sleep(1.0)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, f"job {job_id}: {status}\n{logs[-4000:]}"
        _assert_tasks_ran_on(dashboard, worker.node_id, cluster.head_node.node_id)
    finally:
        cluster.shutdown()
    return Run(output, logs, ray_dir)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _submit(client, entrypoint: str, timeout_s: float = 90.0) -> str:
    """Submit through the Jobs API; the head's dashboard agent registers a few seconds after the node starts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _assert_tasks_ran_on(dashboard: str, worker_id: str, head_id: str) -> None:
    """Ray Data's tasks ran on the worker node; the head ran only the job's driver side."""
    from ray.util.state import list_tasks

    deadline = time.monotonic() + 30  # task events reach the GCS in periodic batches
    while True:
        tasks = list_tasks(address=dashboard, filters=[("type", "=", "NORMAL_TASK")], limit=10_000, detail=True)
        data_tasks = [t for t in tasks if "MapBatches" in t.name or "FromItems" in t.name]
        if data_tasks or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert data_tasks, f"no Ray Data tasks recorded: {sorted({t.name for t in tasks})}"
    nodes = {t.node_id for t in data_tasks}
    assert nodes == {worker_id}, f"tasks ran on {nodes}; worker {worker_id}, head {head_id}"


def _table(output: str, name: str, store: Store, columns: list[str]) -> list[dict]:
    import lance

    ds = lance.dataset(f"{output}/{name}.lance", storage_options=store.lance_options())
    return sorted(ds.to_table(columns=columns).to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def test_store_rejects_a_wrong_secret(store):
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="Signature|AccessDenied|InvalidAccessKey"):
        store.client(secret="not-the-secret-" + "x" * 25).list_objects_v2(Bucket=BUCKET)


def test_curate_reads_and_writes_s3(store, local_run):
    clips = _table(local_run.output, "clips", store, CLIP_COLUMNS)
    sources = _table(local_run.output, "sources", store, ["uri", "status", "n_clips"])
    assert {s["uri"] for s in sources} == {f"s3://{BUCKET}/raw/{n}" for n in ("fast.mp4", "cuts.mp4", "still.png")}
    assert all(s["status"] == "ok" and s["n_clips"] >= 1 for s in sources), sources
    assert all(c["source_uri"].startswith(f"s3://{BUCKET}/raw/") for c in clips)
    assert sum(c["passed"] for c in clips) >= 3, clips
    fast = [c for c in clips if c["source_uri"].endswith("fast.mp4")]
    assert fast and all(c["caption"] == "a texture sliding right" for c in fast), "sidecar caption read from s3"
    listed = store.client().list_objects_v2(Bucket=BUCKET, Prefix="local/clips.lance/")["KeyCount"]
    assert listed > 0, "the table lives in the bucket"


def test_cluster_job_equals_local_run(store, local_run, cluster_run):
    assert "clips:" in cluster_run.logs, cluster_run.logs[-2000:]
    local = _table(local_run.output, "clips", store, CLIP_COLUMNS)
    remote = _table(cluster_run.output, "clips", store, CLIP_COLUMNS)
    assert len(local) >= 4
    assert [c["clip_id"] for c in remote] == [c["clip_id"] for c in local]
    assert remote == local
    columns = ["source_id", "uri", "status", "n_clips", "n_clips_passed"]
    assert _table(cluster_run.output, "sources", store, columns) == _table(local_run.output, "sources", store, columns)


def test_secret_appears_in_no_output_log_or_object(store, work, local_run, cluster_run):
    secret = store.secret.encode()
    leaks = [f"{name} output" for name, run in (("local", local_run), ("cluster job", cluster_run))
             if store.secret in run.logs]  # fmt: skip
    for root in (local_run.ray_dir, cluster_run.ray_dir, work / "local-cache", work / "cluster-cache"):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                leaks.append(str(path))
    client = store.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            if secret in client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read():
                leaks.append(f"s3://{BUCKET}/{obj['Key']}")
    assert (work / "local.yaml").read_bytes().count(secret) == 2, "the search would find the secret"
    assert not leaks, f"the secret key appears in: {leaks}"
