"""Model storage by trial key: `{storage}/models/{key}/` holds model.pt and test_logits.npz.

Storage is a folder (a shared file system on a cluster) or an object-store URI (`s3://bucket/prefix`,
`gs://…`, query options such as `?endpoint_override=…` included), reached through pyarrow.fs — the
layer Ray Tune uses for its `storage_path` — so with a bucket the workers need no shared mount.
Local files are written to a temporary name and renamed, so a reader never sees a half-written
file; an object store's PUT is whole by itself.
"""
import functools
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.fs
import torch

MODEL_FILE = "model.pt"
LOGITS_FILE = "test_logits.npz"
FORGET_TRAIN_LOGITS_FILE = "forget_train_logits.npz"   # retrain/unlearn: what U-LiRA attacks


def trial_key(spec):
    """Deterministic 16-hex key of a trial's defining config (JSON, sorted keys)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def is_uri(storage):
    return "://" in str(storage)


def resolve(storage):
    """An absolute folder (trials run in Ray's own working directories) or the URI unchanged."""
    return str(storage) if is_uri(storage) else str(Path(storage).resolve())


def join(storage, *parts):
    """`storage`/parts, keeping a URI's ?query at the end (s3://b/p?endpoint_override=… stays valid)."""
    if not is_uri(storage):
        return str(Path(storage, *parts))
    base, _, query = str(storage).partition("?")
    return "/".join([base.rstrip("/"), *parts]) + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=16)
def _filesystem(storage):
    """(pyarrow filesystem, base path inside it); one client per storage and process."""
    if is_uri(storage):
        return pyarrow.fs.FileSystem.from_uri(storage)
    return pyarrow.fs.LocalFileSystem(), resolve(storage)


def model_dir(storage, key):
    """The local folder of a key (storage must be a folder; tests and tools inspect files there)."""
    return Path(storage) / "models" / key


def local_file(storage, key, name):
    """The stored file's path on this machine, or None when storage is an object store."""
    return None if is_uri(storage) else model_dir(resolve(storage), key) / name


def _path(storage, key, name):
    filesystem, base = _filesystem(storage)
    return filesystem, f"{base.rstrip('/')}/models/{key}/{name}"


def write(storage, key, name, payload):
    """Store `payload` (bytes) as {storage}/models/{key}/{name}."""
    filesystem, path = _path(storage, key, name)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    local = isinstance(filesystem, pyarrow.fs.LocalFileSystem)
    target = f"{path}.{os.getpid()}.tmp" if local else path
    with filesystem.open_output_stream(target) as stream:
        stream.write(payload)
    if local:
        filesystem.move(target, path)
    return payload


def read(storage, key, name):
    filesystem, path = _path(storage, key, name)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no stored {name} for key {key} at {path} in storage {storage}; "
                                "was its stage run with this --storage?") from None


def _encode_model(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _encode_logits(logits, labels):
    buffer = io.BytesIO()
    np.savez(buffer, logits=np.asarray(logits, dtype=np.float32), labels=np.asarray(labels))
    return buffer.getvalue()


def save_model(storage, key, model):
    """Store the model's state dict; returns the bytes written (the trial logs them to MLflow too)."""
    return write(storage, key, MODEL_FILE, _encode_model(model))


def load_model_state(storage, key):
    return torch.load(io.BytesIO(read(storage, key, MODEL_FILE)), map_location="cpu", weights_only=True)


def save_logits(storage, key, logits, labels, name=LOGITS_FILE):
    return write(storage, key, name, _encode_logits(logits, labels))


def load_logits(storage, key, name=LOGITS_FILE):
    with np.load(io.BytesIO(read(storage, key, name))) as f:
        return f["logits"], f["labels"]


def has_model(storage, key):
    filesystem, model_path = _path(storage, key, MODEL_FILE)
    infos = filesystem.get_file_info([model_path, _path(storage, key, LOGITS_FILE)[1]])
    return all(info.type == pyarrow.fs.FileType.File for info in infos)
