"""Model storage by trial key: `{storage}/models/{key}/` holds model.pt and test_logits.npz.

Storage is a plain directory (a shared filesystem on a cluster). Files are written to a temporary
name and renamed, so a reader never sees a half-written file.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

MODEL_FILE = "model.pt"
LOGITS_FILE = "test_logits.npz"
FORGET_TRAIN_LOGITS_FILE = "forget_train_logits.npz"   # retrain/unlearn: what U-LiRA attacks


def trial_key(spec):
    """Deterministic 16-hex key of a trial's defining config (JSON, sorted keys)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def model_dir(storage, key):
    return Path(storage) / "models" / key


def _atomic(path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_model(storage, key, model):
    return _atomic(model_dir(storage, key) / MODEL_FILE, lambda p: torch.save(model.state_dict(), p))


def load_model_state(storage, key):
    path = model_dir(storage, key) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no stored model for key {key} at {path}; was its stage run with this --storage?")
    return torch.load(path, map_location="cpu", weights_only=True)


def save_logits(storage, key, logits, labels, name=LOGITS_FILE):
    def write(p):
        with open(p, "wb") as f:
            np.savez(f, logits=np.asarray(logits, dtype=np.float32), labels=np.asarray(labels))
    return _atomic(model_dir(storage, key) / name, write)


def load_logits(storage, key, name=LOGITS_FILE):
    with np.load(model_dir(storage, key) / name) as f:
        return f["logits"], f["labels"]


def has_model(storage, key):
    return (model_dir(storage, key) / MODEL_FILE).exists() and (model_dir(storage, key) / LOGITS_FILE).exists()
