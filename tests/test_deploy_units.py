"""deploy/: the MLflow server's systemd unit and journald's size cap for the head's host, checked offline.

A parse of both files (always), then `systemd-analyze verify` of the unit where systemd-analyze is installed:
in a temporary root that has a stand-in /usr/bin/docker and docker.service (systemd checks that ExecStart's
program exists and that required units do) and this machine's own systemd units (sysinit.target ...).
"""
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "unlearn-grid-mlflow.service"
JOURNALD = ROOT / "deploy" / "journald-unlearn-grid.conf"
CONTAINER = "unlearn-grid-mlflow"


def read_systemd_file(path):
    """{section: {key: [values]}} as systemd reads a unit or a .conf file: `#`/`;` comments, a trailing `\\`
    continues a line, a key may repeat."""
    sections, current = {}, None
    text = re.sub(r"\\\n[ \t]*", " ", Path(path).read_text())
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{path.name}:{number}: {line!r} outside a section or without '='"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(sections, section, key):
    (value,) = sections[section][key]
    return value


def docker_run():
    """The unit's ExecStart argv."""
    return shlex.split(one(read_systemd_file(UNIT), "Service", "ExecStart"))


def option_values(argv, option):
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == option]


def test_the_unit_restarts_the_server_whatever_ends_it_and_logs_to_the_journal():
    unit = read_systemd_file(UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    assert one(unit, "Service", "Restart") == "always"
    assert int(one(unit, "Service", "RestartSec")) > 0
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"       # never gives up restarting
    assert one(unit, "Service", "StandardOutput") == one(unit, "Service", "StandardError") == "journal"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"   # started at boot too
    assert "docker.service" in one(unit, "Unit", "Requires") and "docker.service" in one(unit, "Unit", "After")
    assert one(unit, "Service", "EnvironmentFile") == "/etc/unlearn-grid/mlflow.env"


def test_the_unit_runs_the_projects_image_on_the_hosts_network_with_the_pgpass_file_read_only():
    unit = read_systemd_file(UNIT)
    argv = docker_run()
    assert argv[:3] == ["/usr/bin/docker", "run", "--rm"]
    assert option_values(argv, "--name") == [CONTAINER] and option_values(argv, "--network") == ["host"]
    # a container left by a crash would hold the name: removed first ('-': none is no failure)
    assert unit["Service"]["ExecStartPre"] == [f"-/usr/bin/docker rm --force {CONTAINER}"]
    assert option_values(argv, "--volume") == ["/etc/unlearn-grid/pgpass:/run/secrets/pgpass:ro"]
    assert "PGPASSFILE=/run/secrets/pgpass" in option_values(argv, "--env")
    # the output reaches the journal once: through the unit, not also into docker's unrotated json logs
    assert option_values(argv, "--log-driver") == ["none"]
    # the image is cluster.yaml's (tests/test_cluster_yaml.py checks the environment file that names it)
    assert argv[argv.index("unlearn-grid") - 1] == "${UNLEARN_GRID_IMAGE}"


def test_journald_caps_the_logs_by_size_and_age():
    journald = read_systemd_file(JOURNALD)
    assert set(journald) == {"Journal"}
    assert one(journald, "Journal", "Storage") == "persistent"      # the log survives a reboot of the head
    size = re.compile(r"^\d+[KMGT]$")
    for key in ("SystemMaxUse", "SystemMaxFileSize", "SystemKeepFree"):
        assert size.match(one(journald, "Journal", key)), key
    assert re.match(r"^\d+(month|week|day|d|h)$", one(journald, "Journal", "MaxRetentionSec"))


def _verify(unit_text, tmp_path):
    """(exit status, output) of `systemd-analyze verify` on a unit with this text, in a temporary root."""
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    docker = root / "usr" / "bin" / "docker"                       # the host's docker, a stand-in
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    (units / "docker.service").write_text("[Unit]\nDescription=docker stand-in\n[Service]\nExecStart=/usr/bin/docker\n")
    system_units = next(Path(p) for p in ("/usr/lib/systemd/system", "/lib/systemd/system")
                        if (Path(p) / "sysinit.target").exists())
    # a copy (links as links): a link to the folder would loop once systemd resolves it inside the root
    shutil.copytree(system_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (units / UNIT.name).write_text(unit_text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, (done.stdout + done.stderr).strip()


def test_systemd_analyze_verifies_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here (the parse checks above ran)")
    if not any((Path(p) / "sysinit.target").exists() for p in ("/usr/lib/systemd/system", "/lib/systemd/system")):
        pytest.skip("this machine has systemd-analyze but no systemd units (sysinit.target) to verify against")
    assert _verify(UNIT.read_text(), tmp_path) == (0, "")
    # and what it reports, so a silent pass means something: a misspelt Restart= value
    _, output = _verify(UNIT.read_text().replace("Restart=always", "Restart=alwys"), tmp_path / "broken")
    assert "Restart" in output or "restart" in output
