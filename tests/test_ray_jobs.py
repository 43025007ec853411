"""`ray job submit` as documented (docs/scale-out.md, cluster.yaml's header): the command a user types
reaches `unlearn-grid run` on the head with the head's tracking URI, and the driver's exit code is the
job's status.

Offline: bash parses the documented command as the laptop's shell would; Ray's own `ray job submit`
(its click command, with the dashboard client replaced by one that records the submission) turns the
words into the job's entrypoint; the entrypoint runs as Ray's job supervisor runs it
(subprocess.Popen(entrypoint, shell=True), ray/dashboard/modules/job/job_supervisor.py) with HOME holding
a head's ~/.bashrc and a stand-in `unlearn-grid` that records its arguments.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAD_TRACKING_URI = "http://10.0.1.23:5000"
# Ubuntu's ~/.bashrc stops early in a non-interactive shell; cluster.yaml appends its exports after that
BASHRC = f"""case $- in
    *i*) ;;
      *) return;;
esac
export TRACKING_URI={HEAD_TRACKING_URI}
"""
FAKE_DRIVER = """#!/bin/sh
printf '%s\\n' "$@" > "$DRIVER_ARGS"
exit "${DRIVER_EXIT:-0}"
"""


def documented_submit(lines):
    """The `ray job submit` command of a shell script's lines, with its continuation lines."""
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ray job submit"))
    end = start
    while lines[end].rstrip().endswith("\\"):
        end += 1
    return "\n".join(line.strip() for line in lines[start:end + 1])


def from_scale_out_docs():
    text = (ROOT / "docs" / "scale-out.md").read_text()
    block = re.search(r"### The session\n\n<!-- commands: cluster -->\n```bash\n(.*?)```", text, re.S)[1]
    return documented_submit(block.splitlines())


def from_cluster_yaml_header():
    header = [line[1:] for line in (ROOT / "cluster.yaml").read_text().splitlines() if line.startswith("#")]
    return documented_submit(header)


def laptop_words(command):
    """The words bash on the laptop hands to `ray` (quotes removed, variables of single-quoted text kept)."""
    script = 'ray() { printf "%s\\0" ray "$@"; }\n' + command
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, env={"PATH": os.environ["PATH"]})
    return out.stdout.decode().split("\0")[:-1]


def submitted(words, monkeypatch):
    """What Ray's `ray job submit` sends the dashboard for these words: (entrypoint, runtime_env, no_wait)."""
    from click.testing import CliRunner
    from ray.dashboard.modules.job import cli as job_cli
    assert words[:3] == ["ray", "job", "submit"]
    sent = {}

    class RecordingClient:
        def submit_job(self, **kwargs):
            sent.update(kwargs)
            return "raysubmit_test"

        def get_version(self):
            return "1"

    monkeypatch.setattr(job_cli, "_get_sdk_client", lambda *args, **kwargs: RecordingClient())
    result = CliRunner().invoke(job_cli.job_cli_group, words[2:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return sent["entrypoint"], sent["runtime_env"], "--no-wait" in words


def run_like_the_job_supervisor(entrypoint, tmp_path, exit_code=0):
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    home.mkdir(exist_ok=True)
    bin_dir.mkdir(exist_ok=True)
    (home / ".bashrc").write_text(BASHRC)
    driver = bin_dir / "unlearn-grid"
    driver.write_text(FAKE_DRIVER)
    driver.chmod(0o755)
    args_file = tmp_path / "driver-args"
    env = {"HOME": str(home), "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "DRIVER_ARGS": str(args_file),
           "DRIVER_EXIT": str(exit_code)}          # no TRACKING_URI: the environment Ray started with
    process = subprocess.Popen(entrypoint, shell=True, start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    process.communicate(timeout=60)
    return process.returncode, args_file.read_text().splitlines() if args_file.exists() else None


@pytest.mark.parametrize("source", [from_scale_out_docs, from_cluster_yaml_header])
def test_the_documented_submit_runs_the_grid_with_the_heads_tracking_uri(source, tmp_path, monkeypatch):
    from grid import cli
    entrypoint, runtime_env, no_wait = submitted(laptop_words(source()), monkeypatch)
    assert runtime_env == {"working_dir": "."} and no_wait
    code, args = run_like_the_job_supervisor(entrypoint, tmp_path)
    assert code == 0
    parsed = cli.parser().parse_args(args)
    assert parsed.func is cli.cmd_run and parsed.grid == "smoke-cluster" and parsed.address == "auto"
    assert parsed.tracking_uri == HEAD_TRACKING_URI
    assert parsed.storage.startswith("s3://") and parsed.data_root.startswith("s3://")


def test_without_an_interactive_bash_the_driver_would_get_the_variables_name(tmp_path, monkeypatch):
    """Why the docs wrap the command in `bash -ic`: Ray quotes the words it is given."""
    command = ("ray job submit --no-wait -- unlearn-grid run smoke-cluster --address auto "
               "--tracking-uri '$TRACKING_URI' --storage s3://BUCKET/unlearn-grid")
    entrypoint, _, _ = submitted(laptop_words(command), monkeypatch)
    _, args = run_like_the_job_supervisor(entrypoint, tmp_path)
    assert args[args.index("--tracking-uri") + 1] == "$TRACKING_URI"


@pytest.mark.parametrize("exit_code", [1, 2])
def test_the_drivers_exit_code_is_the_jobs_status(exit_code, tmp_path, monkeypatch):
    """Ray's job supervisor marks a job SUCCEEDED on exit code 0 and FAILED otherwise; `unlearn-grid run`
    exits 1 (failed trials, a tracking outage) or 2 (a refused grid); `bash -ic` passes the code on."""
    entrypoint, _, _ = submitted(laptop_words(from_scale_out_docs()), monkeypatch)
    code, _ = run_like_the_job_supervisor(entrypoint, tmp_path, exit_code=exit_code)
    assert code == exit_code


def test_a_refused_grid_exits_non_zero_so_the_job_fails(capsys):
    from grid import cli
    assert cli.main(["run", "no-such-grid"]) == 2
    assert "no-such-grid" in capsys.readouterr().err
