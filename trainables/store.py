"""Model storage by trial key: `{storage}/models/{key}/` holds model.pt and test_logits.npz.

Storage is a folder (a shared file system on a cluster) or an object-store URI (`s3://bucket/prefix`,
`gs://…`, query options such as `?endpoint_override=…` included), reached through pyarrow.fs — the
layer Ray Tune uses for its `storage_path` — so with a bucket the workers need no shared mount.
Local files are written to a temporary name and renamed, so a reader never sees a half-written
file; an object store's PUT is whole by itself.

Integrity: every stored file has a sidecar `{name}.sha256` (`sha256sum` format, so `sha256sum -c`
checks it by hand in the key's folder) holding the SHA-256 of its bytes. `write` deletes an old
sidecar, writes the file, then writes the sidecar, so a crash in between leaves a file WITHOUT a hash,
which counts as incomplete. A per-file sidecar rather than one manifest per key: a trial writes its
files one at a time and a manifest would be a read-modify-write that two attempts could race on.
`read` checks the bytes against the sidecar and raises StoreIntegrityError on a mismatch or a missing
hash; `has_model` counts a model only with model.pt, test_logits.npz and both sidecars present (file
info only, nothing read). Files written before hashes existed have no sidecar; they cannot be told
apart from a write that died before its hash, so they count as missing too: their originals/Retrain
models are trained once more on the next run. `discard_corrupt` (the driver, before the unlearn
stage) reads and hashes the stored files of the models it is about to use and deletes a key whose
files fail, so the next stage trains it again instead of anything using a corrupt file.
"""
import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pyarrow.fs

MODEL_FILE = "model.pt"
LOGITS_FILE = "test_logits.npz"
FORGET_TRAIN_LOGITS_FILE = "forget_train_logits.npz"   # retrain/unlearn: what U-LiRA attacks
HASH_SUFFIX = ".sha256"    # {name}.sha256 beside each stored file: its SHA-256, written after it
# a trial's MLflow run points at the files it stored (trainables/trial.py stored_tags) with the tags
# stored.{name} (file_uri, no credentials) and stored.{name}.sha256; no copy is logged as an artifact
RUN_TAG = "stored."
STORED_FILES = (MODEL_FILE, LOGITS_FILE, FORGET_TRAIN_LOGITS_FILE)


class StoreIntegrityError(OSError):
    """A stored file whose bytes do not match the SHA-256 written with it, or that has no hash (its
    write did not finish, or it predates hashes). An OSError, like gzip's BadGzipFile: bad stored bytes."""


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


def _path(storage, key, name, section="models"):
    """(filesystem, path) of {storage}/{section}/{key}/{name}; section "models" holds results,
    "checkpoints" the checkpoints of trials in flight (trainables/checkpoints.py)."""
    filesystem, base = _filesystem(storage)
    return filesystem, f"{base.rstrip('/')}/{section}/{key}/{name}"


def _put(filesystem, path, payload):
    local = isinstance(filesystem, pyarrow.fs.LocalFileSystem)
    target = f"{path}.{os.getpid()}.tmp" if local else path
    with filesystem.open_output_stream(target) as stream:
        stream.write(payload)
    if local:
        filesystem.move(target, path)


def digest(payload):
    """The SHA-256 (hex) that write() records beside `payload`."""
    return hashlib.sha256(payload).hexdigest()


def write(storage, key, name, payload, section="models"):
    """Store `payload` (bytes) as {storage}/{section}/{key}/{name}, then its SHA-256 as {name}.sha256."""
    filesystem, path = _path(storage, key, name, section)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    if filesystem.get_file_info(path + HASH_SUFFIX).type == pyarrow.fs.FileType.File:
        filesystem.delete_file(path + HASH_SUFFIX)   # a rewrite that dies midway leaves no stale hash behind
    _put(filesystem, path, payload)
    _put(filesystem, path + HASH_SUFFIX, f"{digest(payload)}  {name}\n".encode())
    return payload


def _where(storage, key, section="models"):
    """The key's folder as a user can find it: a local path, or scheme://bucket/… without credentials."""
    filesystem, path = _path(storage, key, "", section)
    return path.rstrip("/") if not is_uri(storage) else f"{str(storage).split('://', 1)[0]}://{path.rstrip('/')}"


def _integrity_error(storage, key, name, problem, section="models"):
    folder = _where(storage, key, section)
    return StoreIntegrityError(
        f"stored {name} for key {key} ({folder}/{name}) {problem}; not using it. Delete {folder} and rerun "
        "the grid: an original or Retrain model whose files are missing is trained again (an unlearn "
        "trial's files only once its MLflow run is deleted too)")


def read(storage, key, name, section="models"):
    """The bytes of {storage}/{section}/{key}/{name}, checked against their SHA-256 (StoreIntegrityError
    when they differ or there is no hash; FileNotFoundError when there is no file)."""
    filesystem, path = _path(storage, key, name, section)
    try:
        with filesystem.open_input_stream(path) as stream:
            payload = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no stored {name} for key {key} at {path} in storage {storage}; "
                                "was its stage run with this --storage?") from None
    try:
        with filesystem.open_input_stream(path + HASH_SUFFIX) as stream:
            expected = stream.read().decode(errors="replace").split(maxsplit=1)[:1]
    except FileNotFoundError:
        raise _integrity_error(storage, key, name, f"has no {name}{HASH_SUFFIX}: its write did not finish "
                               "(or it was stored before hashes were)", section) from None
    actual = digest(payload)
    if expected != [actual]:
        raise _integrity_error(storage, key, name, f"is corrupt: {len(payload)} bytes with SHA-256 {actual[:12]}…, "
                               f"not the {(expected or ['(empty)'])[0][:12]}… written with it", section)
    return payload


def recorded_hash(storage, key, name, section="models"):
    """The SHA-256 written with a stored file (its sidecar), without reading the file itself: what names
    the file's bytes in something derived from them (trainables/references.py). StoreIntegrityError when
    the file has no hash (its write did not finish), FileNotFoundError when there is no file."""
    filesystem, path = _path(storage, key, name, section)
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        raise FileNotFoundError(f"no stored {name} for key {key} at {path} in storage {storage}; "
                                "was its stage run with this --storage?")
    try:
        with filesystem.open_input_stream(path + HASH_SUFFIX) as stream:
            recorded = stream.read().decode(errors="replace").split(maxsplit=1)[:1]
    except FileNotFoundError:
        recorded = []
    if not recorded:
        raise _integrity_error(storage, key, name, f"has no {name}{HASH_SUFFIX}: its write did not finish "
                               "(or it was stored before hashes were)", section)
    return recorded[0]


def file_uri(storage, key, name, section="models"):
    """Where a stored file is, for a reader anywhere: an absolute path on a folder storage, else
    scheme://bucket/…/{key}/{name} with the storage's query options (endpoint_override…) kept."""
    return join(resolve(storage), section, key, name)


def read_uri(uri, sha256):
    """The bytes of the stored file at `uri` (a file_uri, secrets dropped or not: pyarrow then uses the
    environment's credentials), checked against `sha256` (StoreIntegrityError when they differ,
    FileNotFoundError when there is no file)."""
    filesystem, path = _filesystem(uri)
    try:
        with filesystem.open_input_stream(path) as stream:
            payload = stream.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no stored file at {path} (the run points at it, was its storage deleted?)") from None
    actual = digest(payload)
    if actual != sha256:
        raise StoreIntegrityError(f"stored file {path} is corrupt: {len(payload)} bytes with SHA-256 {actual[:12]}…, "
                                  f"not the {sha256[:12]}… its run recorded; not using it")
    return payload


def _encode_model(model):
    import torch   # here, not at the top: the driver reads the store (what is pending) without torch
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _encode_logits(logits, labels):
    buffer = io.BytesIO()
    np.savez(buffer, logits=np.asarray(logits, dtype=np.float32), labels=np.asarray(labels))
    return buffer.getvalue()


def save_model(storage, key, model):
    """Store the model's state dict; returns the bytes written (their hash goes into the trial's run)."""
    return write(storage, key, MODEL_FILE, _encode_model(model))


def load_model_state(storage, key):
    import torch
    return torch.load(io.BytesIO(read(storage, key, MODEL_FILE)), map_location="cpu", weights_only=True)


def save_logits(storage, key, logits, labels, name=LOGITS_FILE):
    return write(storage, key, name, _encode_logits(logits, labels))


def load_logits(storage, key, name=LOGITS_FILE):
    with np.load(io.BytesIO(read(storage, key, name))) as f:
        return f["logits"], f["labels"]


def has_model(storage, key):
    """model.pt, test_logits.npz and both their hashes are stored (file info only: nothing is read)."""
    filesystem, _ = _path(storage, key, MODEL_FILE)
    paths = [_path(storage, key, name)[1] + suffix for name in (MODEL_FILE, LOGITS_FILE) for suffix in ("", HASH_SUFFIX)]
    return all(info.type == pyarrow.fs.FileType.File for info in filesystem.get_file_info(paths))


def verify(storage, key):
    """Read and hash every stored file of a key; the StoreIntegrityError of the first that fails, else None."""
    filesystem, folder = _path(storage, key, "")
    infos = filesystem.get_file_info(pyarrow.fs.FileSelector(folder.rstrip("/"), allow_not_found=True))
    names = sorted(info.base_name for info in infos if info.type == pyarrow.fs.FileType.File)
    for name in names:
        if name.endswith((HASH_SUFFIX, ".tmp")):
            continue
        try:
            read(storage, key, name)
        except StoreIntegrityError as error:
            return error
    return None


def delete(storage, key, section="models"):
    """Delete every stored file of a key (the key then counts as missing: its stage runs again)."""
    filesystem, folder = _path(storage, key, "", section)
    try:
        filesystem.delete_dir(folder.rstrip("/"))
    except FileNotFoundError:
        pass


def discard_corrupt(storage, keys):
    """Of the keys with a stored model, verify every file (read + SHA-256) and delete the files of each
    key where one fails, so `has_model` is False and the key is trained again. Returns the errors."""
    errors = []
    for key in keys:
        if has_model(storage, key):
            error = verify(storage, key)
            if error is not None:
                delete(storage, key)
                errors.append(error)
    return errors
