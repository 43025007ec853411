"""kuberay/: the RayJob validates against KubeRay's own RayJob CRD schema (vendored from a release tag),
and it and the tracking server's manifest keep cluster.yaml's promises.

Offline and fast: jsonschema on the vendored openAPIV3Schema, then plain reads of the manifests.
"""
import copy
import gzip
import json
import re
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "kuberay"
RAYJOB = KUBERAY / "rayjob.yaml"
TRACKING = KUBERAY / "tracking.yaml"
KUBERAY_TAG = "v1.7.0"
SCHEMA = KUBERAY / "schema" / f"rayjob-v1-kuberay-{KUBERAY_TAG}.openapi.json.gz"
# cluster.yaml's image (helper "image" adds `docker: image:` there; this is its placeholder)
IMAGE = "ACCOUNT.dkr.ecr.us-east-1.amazonaws.com/unlearning-grid:0.1.0"
TRIALS_PER_GPU_NODE = 4          # cluster.yaml's GPU nodes: four {cpu: 4, gpu: 0.25} trials each
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL|PGPASS", re.I)
SECRET_LOOKING = re.compile(r"AKIA[0-9A-Z]{16}|^[A-Za-z0-9+/=_-]{32,}$|://[^/@\s:]+:[^/@\s]+@")


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def rayjob():
    (job,) = documents(RAYJOB)
    return job


def strict(schema):
    """The schema as `kubectl apply` enforces it: kubectl validates strictly by default
    (--validate=strict, server-side field validation), so a field the schema does not know is an
    error, not silently pruned. Structural CRD schemas say so by leaving additionalProperties out;
    objects marked x-kubernetes-preserve-unknown-fields (or with additionalProperties) keep theirs."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    return schema


def validator():
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    return jsonschema.Draft7Validator(strict(schema))


def schema_errors(document):
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(document))


def containers(job):
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def all_containers():
    found = containers(rayjob())
    for document in documents(TRACKING):
        if document["kind"] == "Deployment":
            found += document["spec"]["template"]["spec"]["containers"]
    return found


def walk_values(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from walk_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_values(value)
    else:
        yield node


# ---------------------------------------------------------------------------------------------------
# the schema

def test_the_rayjob_validates_against_the_vendored_crd_schema():
    assert schema_errors(rayjob()) == []


@pytest.mark.parametrize("path, value, error", [
    (("spec", "rayClusterSpec", "workerGroupSpecs", 0, "maxReplicas"), "twenty", "is not of type 'integer'"),
    (("spec", "rayClusterSpec", "authOptions", "mode"), "tokens", "is not one of"),
    (("spec", "rayClusterSpec", "headGroupSpec", "rayStartParam"), {"num-cpus": "0"}, "Additional properties"),
    (("spec", "shutdownAfterJobFinishes"), "yes", "is not of type 'boolean'"),
])
def test_a_broken_copy_fails_validation(path, value, error):
    job = rayjob()
    node = job
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = schema_errors(job)
    assert problems and any(error in p for p in problems), problems


def test_every_document_is_a_kind_the_tests_know():
    assert [(d["apiVersion"], d["kind"]) for d in documents(RAYJOB)] == [("ray.io/v1", "RayJob")]
    assert [(d["apiVersion"], d["kind"]) for d in documents(TRACKING)] == [("apps/v1", "Deployment"), ("v1", "Service")]


def test_the_vendored_schema_says_where_it_came_from():
    readme = (KUBERAY / "schema" / "README.md").read_text()
    assert "github.com/ray-project/kuberay" in readme and f"tag: {KUBERAY_TAG}" in readme
    assert "ray-operator/config/crd/bases/ray.io_rayjobs.yaml" in readme and re.search(r"commit [0-9a-f]{40}", readme)
    assert sorted(p.name for p in (KUBERAY / "schema").iterdir()) == sorted(["README.md", SCHEMA.name])   # only that schema


# ---------------------------------------------------------------------------------------------------
# the promises

def test_token_auth_from_the_secret_on_a_ray_that_supports_it():
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "unlearn-grid-ray-token"}
    # KubeRay refuses token mode below Ray 2.52 (validation.go); the cluster runs the Ray this project pins
    assert cluster["rayVersion"] == metadata.version("ray")
    assert tuple(int(p) for p in cluster["rayVersion"].split(".")[:2]) >= (2, 52)


def test_nothing_is_exposed_beyond_the_kubernetes_cluster():
    job = rayjob()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head.get("serviceType") == "ClusterIP" and not head.get("enableIngress")
    services = [d for d in documents(TRACKING) if d["kind"] == "Service"]
    assert services and all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)
    kinds = {d["kind"] for path in (RAYJOB, TRACKING) for d in documents(path)}
    assert not kinds & {"Ingress", "Gateway", "HTTPRoute"}
    text = RAYJOB.read_text() + TRACKING.read_text()
    assert not re.search(r"LoadBalancer|NodePort|hostNetwork|hostPort", text)


def test_credentials_come_from_secrets_and_no_value_looks_like_one():
    for container in all_containers():
        for env in container.get("env", []):
            if SECRET_NAME.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), (container["name"], env)
    for path in (RAYJOB, TRACKING):
        for value in walk_values([d for d in documents(path)]):
            assert not (isinstance(value, str) and SECRET_LOOKING.search(value)), (path.name, value)
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for c in all_containers() for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    assert ("unlearn-grid-mlflow-db", "password") in refs      # the tracking database's password


def test_a_looks_like_a_secret_check_that_can_fail():
    assert SECRET_LOOKING.search("postgresql://mlflow:hunter2hunter2@db:5432/mlflow")
    assert SECRET_LOOKING.search("AKIAABCDEFGHIJKLMNOP")
    assert not SECRET_LOOKING.search("postgresql://mlflow@DB_HOST:5432/mlflow?sslmode=require")


def test_every_container_runs_the_image_of_cluster_yaml():
    docker = (yaml.safe_load((ROOT / "cluster.yaml").read_text()) or {}).get("docker") or {}
    expected = docker.get("image", IMAGE)     # before cluster.yaml names it: the shared placeholder
    assert expected == IMAGE
    assert {c["image"] for c in all_containers()} == {expected}


def test_head_runs_no_trials_and_gpu_workers_fit_four_trials_of_the_paper_shape():
    from grid.plan import config
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (workers,) = cluster["workerGroupSpecs"]
    (container,) = workers["template"]["spec"]["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    ray_cpus = float(workers["rayStartParams"]["num-cpus"])
    for grid in ("smoke-cluster", "paper-cifar10"):
        shape = config.load(grid).grid["resources"]
        assert ray_cpus / shape["cpu"] == 1 / shape["gpu"] == TRIALS_PER_GPU_NODE, grid


def test_the_cluster_is_capped_and_goes_away_with_the_job():
    spec = rayjob()["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] > 0
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    max_workers = yaml.safe_load((ROOT / "cluster.yaml").read_text())["max_workers"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] == max_workers


def test_the_entrypoint_runs_the_smoke_grid_against_the_tracking_service():
    from grid import cli
    from grid.plan import config
    entrypoint = rayjob()["spec"]["entrypoint"]
    # KubeRay pastes the entrypoint into the submitter pod's shell command (common/job.go): a $VAR there
    # would be expanded in the submitter pod, where it is not set
    assert "$" not in entrypoint and "`" not in entrypoint
    words = entrypoint.split()
    assert words[:2] == ["unlearn-grid", "run"]
    args = cli.parser().parse_args(words[1:])
    assert args.grid == "smoke-cluster" and config.load(args.grid).name == "smoke-cluster"
    assert args.address == "auto" and args.storage.startswith("s3://") and args.data_root.startswith("s3://")
    (service,) = [d for d in documents(TRACKING) if d["kind"] == "Service"]
    (port,) = service["spec"]["ports"]
    assert args.tracking_uri == f"http://{service['metadata']['name']}:{port['port']}"


def test_tracking_servers_bind_the_pod_address_or_loopback_never_all_interfaces():
    from grid import cli
    (deployment,) = [d for d in documents(TRACKING) if d["kind"] == "Deployment"]
    hosts = {}
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        assert container["command"] == ["unlearn-grid", "server"]
        args = cli.parser().parse_args(["server", *container["args"]])
        assert args.backend_store_uri.startswith("postgresql://mlflow@") and "sslmode=require" in args.backend_store_uri
        hosts[container["name"]] = (args.host, args.port)
        env = {e["name"]: e for e in container.get("env", [])}
        if args.host == "$(POD_IP)":
            assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            # MLflow's default allowed hosts leave the Service's DNS name out: every trial would get a 403
            (service,) = [d for d in documents(TRACKING) if d["kind"] == "Service"]
            assert f"{service['metadata']['name']}:{args.port}" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"]
    assert hosts == {"mlflow": ("$(POD_IP)", 5000), "mlflow-ui": ("127.0.0.1", 5001)}


def test_the_smoke_grid_is_small_and_has_the_paper_grids_shape_on_cluster_yaml(capsys):
    """The runbook's first grid: the same trial shape as the paper grids (so it fills the nodes the same
    way), few trials, few epochs; `validate --cluster` prints its estimate."""
    from grid import cli
    from grid.plan import config, shapes
    smoke, paper = config.load("smoke-cluster"), config.load("paper-cifar10")
    assert smoke.grid["resources"] == paper.grid["resources"]
    assert len(smoke.original) + len(smoke.retrain) + len(smoke.unlearn) <= 10
    assert smoke.grid["train"]["epochs"] <= 2
    assert shapes.warnings(smoke.grid["resources"], shapes.load(ROOT / "cluster.yaml")) == []
    assert cli.main(["validate", "smoke-cluster", "--cluster", str(ROOT / "cluster.yaml")]) == 0
    out = capsys.readouterr().out
    assert "1 original, 2 retrain, 6 unlearn trials" in out and "cost estimate" in out
