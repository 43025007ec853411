"""The documentation: every shell command it shows runs (or says why it cannot), the site builds, links resolve.

Every ```bash (also sh, shell, console, zsh) block of README.md and docs/**/*.md must have a marker on the
line before it (docs/developing.md, "The commands in these docs"):

    <!-- commands: fast -->      run here, in the fast tier
    <!-- commands: system -->    run here, in the system tier (long: the demo, a search)
    <!-- commands: suite -->     not run: the test suite itself (make test, test-all, test-system, mutants, docs)
    <!-- commands: browser -->   not run: needs Chromium (make ui-check)
    <!-- commands: cluster -->   not run: needs a cluster, a cloud account, a database server or the user's own files
    <!-- commands: gpu -->       not run: needs a CUDA GPU

A run block is one bash script (`set -euo pipefail`: a failing line fails it) in a fresh copy of the
repository (git's tracked and not-ignored files) in a temporary folder, with this interpreter's virtual
environment as `.venv` there and its bin/ first on PATH, the copy first on PYTHONPATH, and `make` running
the Makefile's targets without reinstalling (`make -o .venv/.installed`). Blocks with the same commands run
once (README and the Quickstart both show `make demo`).
"""
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
VENV = Path(sys.executable).parent.parent          # not resolved: a venv's python is often a symlink
SHELLS = {"bash", "sh", "shell", "console", "zsh"}
RUN = {"fast", "system"}
NOT_RUN = {
    "suite": "runs the test suite itself: .ci/run runs `make test-all`; test_the_site_builds_strict builds the site",
    "browser": "needs Chromium, which `make setup` does not install",
    "cluster": "needs a Ray cluster, a cloud account, a database server or the user's own files",
    "gpu": "needs a CUDA GPU",
}
# what a block that is not run may hold (so a marker cannot hide an ordinary command)
ONLY = {"suite": re.compile(r"^(PYTEST_FLAGS=\S+ )?make (test|test-all|test-system|mutants|docs)\b"),
        "browser": re.compile(r"^make ui-check\b")}
MARKER = re.compile(r"^<!--\s*commands:\s*(\S+)\s*-->$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`{]*)")


@dataclass(frozen=True)
class Block:
    path: Path          # relative to ROOT
    line: int           # 1-based line of the opening fence
    language: str
    marker: str | None
    script: str

    @property
    def where(self):
        return f"{self.path}:{self.line}"


def doc_files():
    return [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))


def blocks(path):
    """Every fenced block of `path`, with the marker on the line before it (None without one)."""
    found, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.group(2), opening.group(3).lower()
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])),
                   len(lines))
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous)
        found.append(Block(path.relative_to(ROOT), i + 1, language, marker.group(1) if marker else None,
                           "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return found


def shell_blocks():
    return [b for path in doc_files() for b in blocks(path) if b.language in SHELLS]


def blocks_to_run(tier):
    unique = {}
    for block in shell_blocks():
        if block.marker == tier:
            unique.setdefault(block.script, block)
    return list(unique.values())


def copy_of_repository(into):
    """The repository's files as a clone would have them (tracked, plus untracked files git does not
    ignore), copied into `into`, with this test's virtual environment as its .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=False)
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, into / name)
    else:   # no git (an unpacked archive): everything but what a run or an install leaves behind
        shutil.copytree(ROOT, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "unlearn-grid", "site", "build", "__pycache__", "*.egg-info", ".pytest_cache"))
    (into / ".venv").symlink_to(VENV, target_is_directory=True)
    return into


def run_block(block, folder, timeout):
    """Run `block` as a bash script in a fresh copy of the repository under `folder`; assert it succeeds."""
    work = copy_of_repository(folder / "repo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "UNLEARN_GRID_", "RAY_", "PYTEST_"))}
    env.update(PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")])))
    prelude = 'set -euo pipefail\nmake() { command make -o .venv/.installed VENV=.venv "$@"; }\n'
    try:
        result = subprocess.run(["bash", "-c", prelude + block.script], cwd=work, env=env, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{block.where}: still running after {timeout} s\n{error.stdout or ''}{error.stderr or ''}")
    assert result.returncode == 0, (f"{block.where}: exit code {result.returncode}\n--- script\n{block.script}"
                                    f"--- stdout (end)\n{result.stdout[-6000:]}\n--- stderr (end)\n{result.stderr[-6000:]}")
    return result


def test_every_shell_block_has_a_known_marker():
    problems = []
    for block in shell_blocks():
        if block.marker is None:
            problems.append(f"{block.where}: ```{block.language} block without a marker: put "
                            f"<!-- commands: fast|system|suite|browser|cluster|gpu --> on the line before it")
        elif block.marker not in RUN | set(NOT_RUN):
            problems.append(f"{block.where}: unknown marker {block.marker!r}; known: {sorted(RUN | set(NOT_RUN))}")
        elif block.marker in ONLY:
            for line in block.script.splitlines():
                if line.strip() and not line.startswith("#") and not ONLY[block.marker].match(line):
                    problems.append(f"{block.where}: a {block.marker!r} block holds {line!r}, which is not what "
                                    f"that marker is for ({NOT_RUN[block.marker]})")
    assert not problems, "\n".join(problems)
    assert blocks_to_run("fast") and blocks_to_run("system")


def test_every_marker_stands_before_a_shell_block():
    problems = []
    for path in doc_files():
        lines = path.read_text().splitlines()
        marked = {b.line for b in blocks(path) if b.language in SHELLS and b.marker}
        for number, line in enumerate(lines, 1):
            if MARKER.match(line.strip()):
                following = next((n for n in range(number + 1, len(lines) + 1) if lines[n - 1].strip()), None)
                if following not in marked:
                    problems.append(f"{path.relative_to(ROOT)}:{number}: a commands marker not followed by a shell block")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("block", blocks_to_run("fast"), ids=lambda b: b.where)
def test_fast_commands_run(block, tmp_path):
    run_block(block, tmp_path, timeout=300)


@pytest.mark.system
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("block", blocks_to_run("system"), ids=lambda b: b.where)
def test_system_commands_run(block, tmp_path):
    run_block(block, tmp_path, timeout=3000)


def test_the_site_builds_strict(tmp_path):
    """`make docs`: mkdocs build --strict, which also fails on a page left out of the nav, a link to a missing
    page or anchor, and a docstring the API pages cannot render."""
    missing = [name for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
               if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"not installed: {missing}; `make setup` installs them (the docs extra: pip install -e '.[docs]')")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                             "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = set(re.findall(r"'([^']+\.md)'", str(nav)))
    assert pages == {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    for page in pages:
        assert (tmp_path / "site" / ("" if page == "index.md" else page[:-3]) / "index.html").is_file(), page
    api = (tmp_path / "site" / "api" / "analysis" / "index.html").read_text()
    assert 'id="analysis.attacks.mia_nn"' in api, "the API pages lost the docstrings of analysis.attacks"


# a path named in the prose: at least one "/", ending in a file type the repository has
PATH_IN_TEXT = re.compile(r"(?<![\w/.<>-])((?:\.\./)*[\w.-]+(?:/[\w.-]+)+\.(?:md|py|yaml|yml|cff|toml|tsv|png))(?![\w/])")


@functools.lru_cache(maxsize=1)
def repository_file_names():
    """Names of the repository's own files (not a virtual environment's, a run's output or the built site)."""
    names = set()
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in {".git", ".venv", "unlearn-grid", "site", "build",
                                                             "__pycache__", ".pytest_cache"}]
        names.update(files)
    return names


MARKDOWN_NAME = re.compile(r"(?<![\w/.<>-])([\w-]+\.md)\b")


def test_links_and_paths_stay_inside_the_repository_and_exist():
    """README is read on GitHub and the pages both there and on the site: every relative link, and every
    file path the prose names, must be a file of this repository (nothing outside it, nothing renamed)."""
    problems = []
    for path in doc_files():
        prose = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)    # fenced blocks write files of their own
        links = [t for t in re.findall(r"\]\(([^)\s]+)\)", prose) if not re.match(r"^(https?:|mailto:|#)", t)]
        for name in set(MARKDOWN_NAME.findall(prose)) - {Path(t).name for t in PATH_IN_TEXT.findall(prose)}:
            if name not in repository_file_names():
                problems.append(f"{path.relative_to(ROOT)}: names {name!r}, which is not a file of the repository")
        for target in links + PATH_IN_TEXT.findall(prose):
            name = target.split("#")[0]
            candidates = [(path.parent / name).resolve(), (ROOT / name).resolve()]
            if not all(c.is_relative_to(ROOT) for c in candidates[:1]) and name.startswith(".."):
                problems.append(f"{path.relative_to(ROOT)}: {target!r} leaves the repository")
            elif not any(c.is_relative_to(ROOT) and c.exists() for c in candidates):
                problems.append(f"{path.relative_to(ROOT)}: {target!r}: no such file in the repository")
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    """At most 150 lines, its demo section filled in, and the test commands .ci/run runs."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    start, end = text.index("<!-- demo-table:start -->"), text.index("<!-- demo-table:end -->")
    assert text[start:end].count("\n|") >= 10, "README's demo tables are missing: run `make readme`"
    assert "make test-all" in (ROOT / ".ci" / "run").read_text()
    suite = [b for b in blocks(ROOT / "README.md") if b.marker == "suite"]
    assert suite and "make test-all" in suite[0].script and "make test " in suite[0].script
