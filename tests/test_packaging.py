"""The wheel a non-editable install (the cluster image's `pip install .`) gets carries every data file
the code reads at run time: bundled grids, the Tiny-ImageNet class list, the method registry, the
paper's published values. An editable install (`make setup`) reads them from the checkout and would
not notice one missing."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_FILES = ["grid/grids/demo.yaml", "trainables/tinyimagenet_classes.tsv", "trainables/methods/specs.json",
              "analysis/paper_values.csv"]


def test_the_wheel_carries_the_data_files_the_code_reads(tmp_path):
    # built from a copy of the tracked files: setuptools builds in the source tree, and a build/ left in
    # the checkout could carry a file into the wheel that package-data no longer lists
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    for name in DATA_FILES:   # present even before they are committed
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "wheels"), str(source)], check=True, cwd=tmp_path)
    wheel, = (tmp_path / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in DATA_FILES if f not in names] == []
    bundled = {p.relative_to(ROOT).as_posix() for p in (ROOT / "grid" / "grids").glob("*.yaml")}
    assert bundled <= names
