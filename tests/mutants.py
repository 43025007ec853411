"""Do the wiring tests catch wiring bugs? Apply each bug below to a copy of the project, one at a time, run the
test that must catch it, and report whether that test failed (the mutant is "killed") or passed (it
"survived": the tests have a blind spot). The copy's tests must pass unmutated first, or a "killed" would
mean nothing.

    .venv/bin/python tests/mutants.py                 # every mutant, ~15-20 min on 2 cores (make mutants)
    .venv/bin/python tests/mutants.py --only lost_nodes_counted_as_failures

Exit code 0 when every mutant is killed. Each mutant replaces one exact piece of text (which must occur
exactly once in its file, so a mutant that no longer applies is reported, not silently skipped).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    text: str
    replacement: str
    tests: tuple        # pytest node ids, at least one of which must fail
    bug: str


WIRING = "tests/test_wiring.py::"
MUTANTS = [
    Mutant("train_accuracies_swapped", "trainables/evaluate.py",
           '"acc_r_train": acc_r_train, "acc_f_train": acc_f_train',
           '"acc_r_train": acc_f_train, "acc_f_train": acc_r_train',
           (WIRING + "test_accuracies_and_svm_mia_of_every_run_recomputed_from_its_stored_model",),
           "a logged metric under another metric's name (Acc_r and Acc_f of the train split)"),
    Mutant("ulira_metrics_swapped", "grid/execution/stages.py",
           '{"ulira_accuracy": result.accuracy, "ulira_auc": result.auc}',
           '{"ulira_accuracy": result.auc, "ulira_auc": result.accuracy}',
           (WIRING + "test_ulira_accuracy_and_auc_recomputed_from_the_stored_forget_logits",),
           "U-LiRA's accuracy logged as its AUC and the reverse"),
    Mutant("ulira_on_test_logits", "trainables/references.py",
           "store.load_logits(storage, key, store.FORGET_TRAIN_LOGITS_FILE)",
           "store.load_logits(storage, key)",
           (WIRING + "test_ulira_accuracy_and_auc_recomputed_from_the_stored_forget_logits",),
           "U-LiRA's φ from the test logits instead of the forget samples' training logits"),
    Mutant("per_class_drop_arguments_swapped", "trainables/trial.py",
           "diagnostics.per_class_drop(original_logits, test_logits,",
           "diagnostics.per_class_drop(test_logits, original_logits,",
           (WIRING + "test_per_class_drop_tag_recomputed_from_the_stored_logits",),
           "the per_class_drop tag computed from its arguments in the wrong order"),
    Mutant("mia_nn_reference_on_the_whole_test_split", "trainables/references.py",
           "reported = data.evaluation_indices(labels, evaluation)",
           "reported = np.arange(len(labels))",
           (WIRING + "test_an_evaluation_on_the_holdout_half_reports_every_metric_on_it",),
           "the MIA-NN reference on the whole test split, not the holdout half the runs report on"),
    Mutant("svm_mia_on_the_whole_test_split", "trainables/evaluate.py",
           'svm_bits = svm_mia_predictions(train_logits, train_y, split_logits, split_y,',
           'svm_bits = svm_mia_predictions(train_logits, train_y, test_logits, test_y,',
           (WIRING + "test_an_evaluation_on_the_holdout_half_reports_every_metric_on_it",
            WIRING + "test_svm_mia_is_scored_on_the_holdout_half_only"),
           "SVM MIA on the whole test split in a holdout grid"),
    Mutant("search_reference_on_the_holdout_half", "trainables/search_trial.py",
           'validation = data.holdout_split(labels, spec["evaluation"]["seed"]).validation',
           'validation = data.holdout_split(labels, spec["evaluation"]["seed"]).holdout',
           ("tests/test_search.py::test_the_cells_retrain_reference_is_recomputed_from_the_validation_half",),
           "the search's Retrain reference on the half of the test split the search must never read"),
    Mutant("trw_tilt_by_class_8", "trainables/methods/trw.py",
           "scores[task.forget_y]", "scores[8]",
           ("tests/test_trw.py::test_trw_targets_tilt_each_forget_sample_by_its_own_classes_similarity",),
           "TRW's per-sample target tilted by class 8's similarity row: right only for the class the other tests forget"),
    Mutant("unlearn_resume_runs_the_method_again", "trainables/trial.py",
           'if "model" in saved:', 'if "training" in saved:',
           ("tests/test_resume.py::test_an_unlearn_trial_that_dies_after_its_method_resumes_without_running_it_again",),
           "a retried unlearn trial ignores its checkpointed model and unlearns again"),
    Mutant("method_resume_keeps_a_fresh_generator", "trainables/methods/task.py",
           '        generator.set_state(self.resume["generator"])\n', "",
           ("tests/test_resume.py::test_an_unlearn_trial_that_dies_mid_method_resumes_the_method_from_its_epoch_checkpoint[ft]",),
           "a method's loop resumed with its data order started over: a result no uninterrupted trial has"),
    Mutant("lost_nodes_counted_as_failures", "grid/execution/retries.py",
           "LIMITS = {NODE_LOST: None,", "LIMITS = {NODE_LOST: 2,",
           ("tests/test_retries.py::test_a_lost_node_is_retried_without_limit",),
           "a trial preempted three times fails for good"),
    Mutant("lease_heartbeat_not_renewed", "grid/execution/leases.py",
           "        while not self._stop.wait(RENEW_S):\n            try:\n                self._beat()",
           "        while not self._stop.wait(RENEW_S):\n            try:\n                pass",
           ("tests/test_leases.py::test_a_live_holder_renews_its_heartbeat_and_keeps_its_keys_past_the_stale_age",),
           "the heartbeat thread runs but never rewrites the heartbeat"),
    Mutant("stale_holders_kept_on_buckets", "grid/execution/leases.py",
           "(now - info.mtime).total_seconds() > STALE_S",
           "(now - info.mtime).total_seconds() > STALE_S and self.local",
           ("tests/test_leases.py::test_keys_of_a_driver_that_is_gone_are_taken_over[object store]",),
           "a bucket's holder with a stale heartbeat is never taken over"),
    Mutant("s3_claims_unconditional", "grid/execution/conditional_s3.py",
           'return self._put(key, body, IfNoneMatch="*")',
           'return self._put(key, body)',
           ("tests/test_leases_on_a_bucket.py::test_conditional_writes_give_every_key_to_exactly_one_driver",),
           "a lease object on s3:// is created without If-None-Match: the last of two creators wins, both think they hold it"),
    Mutant("orphans_by_heartbeat_ignored", "grid/execution/orphans.py",
           "verdicts[driver] = gone(driver)",
           "verdicts[driver] = False",
           ("tests/test_faults.py::test_runs_of_a_driver_on_another_machine_are_orphans_once_its_heartbeat_is_stale_or_missing",),
           "runs of a driver that died on another machine (a replaced head) stay RUNNING forever"),
    Mutant("tables_follow_the_servers_run_order", "grid/reports/report.py",
           "runs, ulira_runs = tables.in_canonical_order(runs), tables.in_canonical_order(ulira_runs)",
           "pass",
           ("tests/test_integration.py::test_tables_do_not_depend_on_the_order_the_server_returns_runs",),
           "a grid restarted after a fault writes other intervals and units CSVs than a clean run of the same trials"),
]


def copy_project(target):
    """The tracked and untracked-but-not-ignored files of the project (no .venv, no stores)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def run_tests(project, tests, log):
    """pytest on `tests` in `project` (its packages first on the path, for Ray's workers and subprocesses
    too); returns (exit code, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return code, time.monotonic() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="mutant names (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the copy and the logs")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
    folder = Path(tempfile.mkdtemp(prefix="ug-mutants-"))
    project = folder / "project"
    copy_project(project)
    results = []
    try:
        tests = sorted({test for mutant in chosen for test in mutant.tests})
        code, seconds = run_tests(project, tests, folder / "unmutated.log")
        print(f"unmutated: {len(tests)} test(s) {'pass' if code == 0 else 'FAIL'} ({seconds:.0f} s)", flush=True)
        if code != 0:
            print((folder / "unmutated.log").read_text()[-3000:])
            return 2
        for mutant in chosen:
            path = project / mutant.file
            original = path.read_text()
            if original.count(mutant.text) != 1:
                results.append((mutant, "does not apply", 0.0))
                print(f"{mutant.name}: DOES NOT APPLY ({mutant.file} has the text {original.count(mutant.text)} times)")
                continue
            path.write_text(original.replace(mutant.text, mutant.replacement))
            try:
                code, seconds = run_tests(project, mutant.tests, folder / f"{mutant.name}.log")
            finally:
                path.write_text(original)
            verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error (pytest exit {code})")
            results.append((mutant, verdict, seconds))
            print(f"{mutant.name}: {verdict} by {', '.join(t.split('::')[-1] for t in mutant.tests)} ({seconds:.0f} s)",
                  flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"copy and logs: {folder}")
    print("\n| mutant | the bug | test that must fail | result |\n|---|---|---|---|")
    for mutant, verdict, _ in results:
        print(f"| {mutant.name} | {mutant.bug} | {', '.join(t.split('::')[-1] for t in mutant.tests)} | {verdict} |")
    return 0 if all(verdict == "killed" for _, verdict, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
