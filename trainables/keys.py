"""Trial keys: what names a trial's results in the store and in MLflow, computed without torch (a grid
is expanded into its trials' keys by `validate` and by the driver).

Two keys per trial. The trial key (`trial_key`: the hash of the whole spec) names its MLflow run: a grid
evaluated another way is another run. The model key (`model_key`) names what it stores (weights, test
logits, forget-set training logits): a model's identity must not depend on how it is evaluated, so a
Retrain model's key leaves out the `evaluation` block, and the grid that `unlearn-grid best` writes
(evaluation.split: holdout) evaluates the Retrain models the search grid trained instead of training
them again. Originals have no evaluation block (both keys are the same); unlearned models keep their
trial key, as an unlearn trial's spec also names the MIA-NN reference it is scored against.
"""
import hashlib
import json

# stages whose stored model does not depend on the `evaluation` block of their spec
EVALUATION_FREE_STAGES = ("original", "retrain")


def trial_key(spec):
    """Deterministic 16-hex key of a trial's defining config (JSON, sorted keys)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def model_key(spec):
    """The key a trial's stored model and logits live under: trial_key of the spec without `evaluation`
    for originals and Retrain models, the trial key for the other stages."""
    if spec.get("stage") in EVALUATION_FREE_STAGES:
        return trial_key({name: value for name, value in spec.items() if name != "evaluation"})
    return trial_key(spec)
