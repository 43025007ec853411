"""Trial keys: what names a trial's results in the store and in MLflow, computed without torch (a grid
is expanded into its trials' keys by `validate` and by the driver)."""
import hashlib
import json


def trial_key(spec):
    """Deterministic 16-hex key of a trial's defining config (JSON, sorted keys)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]
