"""Malformed grid files, as users write them (and as an attacker might): every one is exit code 2 from
`unlearn-grid run` and `validate`, one line per problem naming its field, no traceback, nothing written
(the alias bomb and the deep nesting end too: a hang would run into the suite's per-test timeout; how
fast they end is bench/fail_fast.py's to measure). Each case is (what is wrong, YAML text, the field a
problem must name)."""
import pytest

from grid import cli

GOOD = """name: g
datasets: digits
archs: small_cnn
forget_classes: [8]
methods: {ft: {}}
"""


def with_line(line):
    """GOOD with one top-level line replaced or added (the field before ':' decides)."""
    field = line.split(":", 1)[0]
    kept = [l for l in GOOD.splitlines() if not l.startswith(field + ":")]
    return "\n".join(kept + [line]) + "\n"


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)) + GOOD

CASES = [
    ("seed beyond 2^64", with_line("seeds: [18446744073709551617]"), "seeds"),
    ("negative seed", with_line("seeds: [-1]"), "seeds"),
    ("seed as text", with_line("seeds: [one]"), "seeds"),
    ("infinite lr", with_line("train: {lr: .inf}"), "train.lr"),
    ("NaN lr", with_line("train: {lr: .nan}"), "train.lr"),
    ("lr overflowing to inf", with_line("train: {lr: 1e400}"), "train.lr"),
    ("huge epochs", with_line("train: {epochs: 100000000000000000000}"), "train.epochs"),
    ("method lr infinite", with_line("methods: {trw: {lr: .inf}}"), "methods.trw.lr"),
    ("method lam NaN", with_line("methods: {trw: {lam: .nan}}"), "methods.trw.lam"),
    ("method epochs huge", with_line("methods: {ft: {epochs: 99999999999999}}"), "methods.ft.epochs"),
    ("1.5 GPUs", with_line("resources: {gpu: 1.5}"), "resources.gpu"),
    ("infinite CPUs", with_line("resources: {cpu: .inf}"), "resources.cpu"),
    ("GPU as text", with_line("resources: {gpu: one}"), "resources.gpu"),
    ("checkpoint_minutes NaN", with_line("checkpoint_minutes: .nan"), "checkpoint_minutes"),
    ("evaluation seed huge", with_line("evaluation: {seed: 99999999999999999999}"), "evaluation.seed"),
    ("datasets as a mapping", with_line("datasets: {digits: 1}"), "datasets"),
    ("archs as a mapping", with_line("archs: {small_cnn: 1}"), "archs"),
    ("methods as a list", with_line("methods: [ft, trw]"), "methods"),
    ("method params as a list", with_line("methods: {ft: [1, 2]}"), "methods.ft"),
    ("forget class as a mapping", with_line("forget_classes: [{a: 1}]"), "forget_classes"),
    ("forget classes nested twice", with_line("forget_classes: [[[8]]]"), "forget_classes"),
    ("non-string top-level key", GOOD + "1: 2\n", "1"),
    ("name as a number", with_line("name: 3"), "name"),
    ("name as a list", with_line("name: [a, b]"), "name"),
    ("train as a list", with_line("train: [1, 2]"), "train"),
    ("resources as text", with_line("resources: lots"), "resources"),
    ("a python tag", with_line("name: !!python/object/apply:os.system [echo hi]"), "(file)"),
    ("a set tag", with_line("seeds: !!set {1, 2}"), "seeds"),
    ("an unhashable key", GOOD + "? [a, b]\n: 1\n", "(file)"),
    ("not a mapping", "- just\n- a list\n", "(file)"),
    ("empty file", "", "(file)"),
    ("tabs and broken YAML", "name: g\n\tdatasets: [digits\n", "(file)"),
    ("binary junk", "\x00\x01\x02", "(file)"),
    ("an alias bomb", BILLION_LAUGHS, "(file)"),
    ("deep nesting", "name: " + "[" * 5000 + "]" * 5000 + "\n", "(file)"),
    ("search budget as text", with_line("search: {budget: {samples: lots}, methods: {ft: {lr: {loguniform: [0.001, 0.1]}}}}"),
     "search.budget.samples"),
    ("search space infinite", with_line("search: {methods: {ft: {lr: {loguniform: [0.001, .inf]}}}}"), "search.methods.ft.lr"),
]


@pytest.mark.parametrize("what, text, field", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_malformed_grid_is_exit_2_naming_the_field_with_nothing_written(what, text, field, command, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_bytes(text.encode("utf-8", "surrogateescape"))
    code = cli.main([command, str(grid), "--tracking-uri", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}",
                     "--storage", str(tmp_path / "storage")])
    err = capsys.readouterr().err
    assert code == 2, f"{what}: exit {code}\n{err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert any(line.startswith(f"  - {field}:") for line in lines), f"{what}: no problem names {field!r}:\n{err}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"], f"{what}: wrote something"


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GOOD + "# " + "x" * 1_100_000 + "\n")
    assert cli.main(["validate", str(grid)]) == 2
    assert "at most" in capsys.readouterr().err
