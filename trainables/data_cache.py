"""Datasets and weights in an object store, fetched once per node into a local cache.

A Ray cluster has no shared file system: a data root on the head does not exist on the GPU workers.
So a grid's `data.root` (and `data.weights`) may be a bucket URI (`s3://bucket/prefix?…`, reached
through pyarrow.fs like trainables/store.py), filled once with `unlearn-grid stage-data`.

Staged layout, per dataset, under the root URI:

    {root}/{dataset}/files.tar       an uncompressed tar of the dataset's folder (DatasetInfo.folder), paths
                                     relative to the data root: one object, because Tiny-ImageNet has 120k files
    {root}/{dataset}/manifest.json   {dataset, version, folder, archive_sha256, archive_bytes, file_count,
                                     staged_at}; written after the archive, so a manifest names a whole archive
    {uri}.sha256                     beside a staged weights file: its SHA-256 (`sha256sum` format)

Node-local cache: `$UNLEARN_GRID_DATA_CACHE`, else `~/.cache/unlearn-grid/data`.

    roots/{hash of the root URI}/            a local data root the loaders read (the URI's credentials are
                                             left out of the hash, so rotating keys keeps the cache)
    roots/{hash}/{folder}/                   a dataset's files, extracted from its archive
    roots/{hash}/.fetched/{dataset}.json     the manifest the files were extracted from (the marker)
    files/{hash of the file URI}/{name}      a fetched weights file, and {name}.sha256 once checked
    locks/{name}.lock                        the per-node locks (fcntl.flock)
    downloads.log                            one line per archive or file downloaded

Locking: every fetch runs under an exclusive flock on a lock file of its root (or file). Trials on
one node that start together queue on it: the first downloads, the others wait, then find the marker
matching the manifest and read the files. A fetch downloads to a temporary folder in the cache,
checks the SHA-256 against the manifest, extracts there and renames the dataset's folder into place
before writing the marker: a fetch that dies midway leaves no marker, and its leftovers are deleted
by the next fetch (which holds the lock, so nobody else is using them). flock is released by the
kernel when a process dies, so a killed trial never blocks the node.

`check_available` is the driver's pre-check: before anything is scheduled or written, every dataset
and weights file a grid needs is staged (URI) or present (local folder), else one line says how to
stage it. Torch-free: the driver and `unlearn-grid stage-data` use this module without torch.
"""
import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow
import pyarrow.fs

from trainables import store
from trainables.datasets import get_info, install_command

CACHE_ENV = "UNLEARN_GRID_DATA_CACHE"
DEFAULT_CACHE = Path("~/.cache/unlearn-grid/data")
ARCHIVE = "files.tar"
MANIFEST = "manifest.json"
HASH_SUFFIX = store.HASH_SUFFIX
CHUNK = 8 * 1024 * 1024          # bytes per read/write while streaming archives


class DataUnavailable(FileNotFoundError):
    """A dataset or weights file a grid needs is not staged/present, or its staged bytes are wrong.
    The message is one line naming the dataset (or file), where it was looked for and what to do."""


# ---------------------------------------------------------------- names and paths

def public_uri(uri):
    """The URI without its credentials and query: what messages show (never the secret key)."""
    parts = urlsplit(str(uri))
    return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def _without_credentials(uri):
    """The URI with its user:password@ removed but its query (endpoint) kept: what cache names hash."""
    parts = urlsplit(str(uri))
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host, parts.path, parts.query, ""))


def _short_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir():
    """This node's cache folder ($UNLEARN_GRID_DATA_CACHE or ~/.cache/unlearn-grid/data)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def local_root(root_uri):
    """The local data root a URI root's datasets are fetched into on this node."""
    return cache_dir() / "roots" / _short_hash(_without_credentials(root_uri))


def _with_suffix(uri, suffix):
    """`uri` + suffix on its path, the ?query kept last (s3://b/w.pth?q -> s3://b/w.pth.sha256?q)."""
    base, _, query = str(uri).partition("?")
    return base + suffix + (f"?{query}" if query else "")


def _object(uri):
    """(pyarrow filesystem, path inside it) of one object URI."""
    return store._filesystem(str(uri))


def _exists(uri):
    filesystem, path = _object(uri)
    return filesystem.get_file_info(path).type == pyarrow.fs.FileType.File


def stage_command(name, root):
    return f"unlearn-grid stage-data {name} --from DIR --to {public_uri(root) if store.is_uri(root) else root}"


# ---------------------------------------------------------------- locks and the download log

@contextlib.contextmanager
def node_lock(name):
    """An exclusive lock shared by every process of this node (flock on locks/{name}.lock in the cache)."""
    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)   # blocks until the process holding it is done (or dies)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_lock(data_root):
    """The lock a loader with `download: true` runs under, keyed by the local root: trials of one node
    would otherwise race on torchvision's in-place download into the same folder."""
    return node_lock("local-" + _short_hash(str(Path(data_root).resolve())))


def _log_download(source, digest, size):
    with open(cache_dir() / "downloads.log", "a") as log:
        log.write(f"{datetime.datetime.now().isoformat(timespec='seconds')}\tpid {os.getpid()}\t"
                  f"{public_uri(source)}\t{size} bytes\tsha256 {digest}\n")


def downloads():
    """The lines of this node's download log (one per archive or weights file fetched)."""
    path = cache_dir() / "downloads.log"
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------- hashing and streaming

def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(uri, target):
    """Copy object `uri` to local file `target`; returns (sha256, bytes)."""
    filesystem, path = _object(uri)
    digest, size = hashlib.sha256(), 0
    with filesystem.open_input_stream(path) as stream, open(target, "wb") as out:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _upload(source, uri):
    filesystem, path = _object(uri)
    with open(source, "rb") as f, filesystem.open_output_stream(path) as stream:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            stream.write(chunk)


def _read_text(uri):
    filesystem, path = _object(uri)
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def _write_text(uri, text):
    filesystem, path = _object(uri)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def _write_local(path, text):
    """Write a small local file atomically (temporary name + rename): a reader sees all of it or nothing."""
    temporary = Path(f"{path}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------- the pre-check

def _staged_folder(name):
    """The dataset's folder under a data root, or None for a dataset that ships in a package."""
    return get_info(name).folder


def nothing_to_stage(name):
    """Why `stage-data` has nothing to copy for a dataset without files (DatasetInfo.folder None)."""
    packages = ", ".join(f"{module} (the {extra} extra: {install_command(extra)})"
                         for module, extra in get_info(name).requires)
    where = f"it ships in the package {packages}" if packages else "it ships in a package or is generated"
    return (f"dataset {name} has no files to stage: {where}, so every node reads it from its own install; "
            f"leave it out of stage-data")


def _local_problem(name, root):
    """Why local `root` lacks dataset `name`'s files, or None when its folder exists and is not empty."""
    folder = Path(root) / _staged_folder(name)
    if not folder.is_dir() or not any(folder.iterdir()):
        return f"{Path(root).resolve()} holds no {name} files (no non-empty {_staged_folder(name)}/)"
    return None


def _read_manifest(name, root_uri):
    """The manifest of a staged dataset; DataUnavailable when there is none or it is for other data."""
    manifest_uri = store.join(root_uri, name, MANIFEST)
    try:
        manifest = json.loads(_read_text(manifest_uri))
    except FileNotFoundError:
        raise DataUnavailable(f"dataset {name}: {public_uri(root_uri)} holds no staged copy (no {name}/{MANIFEST}); "
                              f"stage it from a machine with the files: {stage_command(name, root_uri)}") from None
    info = get_info(name)
    if manifest.get("version") != info.version or manifest.get("folder") != info.folder:
        raise DataUnavailable(f"dataset {name}: {public_uri(root_uri)}/{name}/{MANIFEST} is of version "
                              f"{manifest.get('version')!r} folder {manifest.get('folder')!r}, this code reads version "
                              f"{info.version!r} folder {info.folder!r}; stage it again: {stage_command(name, root_uri)}")
    return manifest


@contextlib.contextmanager
def _unreachable_as_unavailable(what, uri):
    """A bucket that does not answer (wrong endpoint, credentials, no such bucket) or a URI pyarrow cannot
    read: one line, not a traceback."""
    try:
        yield
    except DataUnavailable:
        raise
    except (OSError, pyarrow.ArrowException) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataUnavailable(f"{what}: could not read {public_uri(uri)} ({reason}); check the URI, its endpoint "
                              "and credentials") from None


def check_available(name, root, download=False):
    """Raise DataUnavailable (one line: dataset, root, how to stage it) unless dataset `name` can be
    loaded from `root` on every node: a URI root holds its manifest and archive; a local root with
    download off holds its non-empty folder. Datasets without files (digits, toy2d) always can."""
    if _staged_folder(name) is None:
        return
    if store.is_uri(root):
        with _unreachable_as_unavailable(f"dataset {name}", root):
            _read_manifest(name, root)
            archive_there = _exists(store.join(root, name, ARCHIVE))
        if not archive_there:
            raise DataUnavailable(f"dataset {name}: {public_uri(root)}/{name}/ has a {MANIFEST} but no {ARCHIVE}; "
                                  f"stage it again: {stage_command(name, root)}")
    elif not download:
        problem = _local_problem(name, root)
        if problem:
            raise DataUnavailable(f"dataset {name}: {problem}; copy the files there, set data: {{download: true}}, "
                                  f"or stage them to a bucket and use it as data.root: {stage_command(name, 'URI')}")


def check_file_available(uri_or_path):
    """DataUnavailable unless a weights file exists: a staged object with its .sha256, or a local file."""
    if store.is_uri(uri_or_path):
        with _unreachable_as_unavailable("data.weights", uri_or_path):
            staged = _exists(uri_or_path) and _exists(_with_suffix(uri_or_path, HASH_SUFFIX))
        if not staged:
            raise DataUnavailable(f"data.weights: {public_uri(uri_or_path)} is not staged (no object with its "
                                  f"{HASH_SUFFIX}); stage it: unlearn-grid stage-data --weights FILE --to ROOT_URI")
    elif not Path(uri_or_path).is_file():
        raise DataUnavailable(f"data.weights: no file at {Path(uri_or_path).resolve()}; put the .pth file there "
                              f"or stage it: unlearn-grid stage-data --weights FILE --to ROOT_URI")


# ---------------------------------------------------------------- staging (from a machine with the files)

def _normalised(member):
    """Tar entries without owner and time, so staging the same files twice gives the same SHA-256
    (and every node's cached copy stays valid)."""
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    member.mtime = 0
    return member


def stage_dataset(name, local_root_dir, root_uri):
    """Upload dataset `name`'s folder under `local_root_dir` to {root_uri}/{name}/ (archive, then
    manifest); returns the manifest. DataUnavailable when the local folder lacks the files."""
    folder = _staged_folder(name)
    if folder is None:
        raise DataUnavailable(nothing_to_stage(name))
    problem = _local_problem(name, local_root_dir)
    if problem:
        raise DataUnavailable(f"dataset {name}: {problem}; point --from at the data root that holds {folder}/")
    with tempfile.TemporaryDirectory(prefix="unlearn-grid-stage-") as scratch:
        archive = Path(scratch) / ARCHIVE
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:   # tar.add walks folders sorted
            tar.add(Path(local_root_dir) / folder, arcname=folder, filter=_normalised)
        with tarfile.open(archive) as tar:
            file_count = sum(1 for member in tar if member.isfile())
        manifest = {"dataset": name, "version": get_info(name).version, "folder": folder,
                    "archive_sha256": sha256_file(archive), "archive_bytes": archive.stat().st_size,
                    "file_count": file_count,
                    "staged_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _upload(archive, store.join(root_uri, name, ARCHIVE))
    _write_text(store.join(root_uri, name, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    return manifest


def stage_file(path, uri):
    """Upload a local file (pretrained weights) to `uri`, then its SHA-256 to {uri}.sha256; returns the hash."""
    if not Path(path).is_file():
        raise DataUnavailable(f"weights: no file at {Path(path).resolve()}; pass the .pth file to stage")
    digest = sha256_file(path)
    _upload(path, uri)
    _write_text(_with_suffix(uri, HASH_SUFFIX), f"{digest}  {Path(path).name}\n")
    return digest


# ---------------------------------------------------------------- fetching (on every node)

def _remove(path):
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def fetch_dataset(root_uri, name):
    """The local data root holding dataset `name` as staged under `root_uri`, downloaded, checked and
    extracted at most once per node (see the module docstring for the lock and the marker)."""
    folder = _staged_folder(name)
    if folder is None:
        raise ValueError(f"dataset {name}: ships with its package, nothing to fetch")
    root = local_root(root_uri)
    with node_lock("root-" + root.name):
        manifest = _read_manifest(name, root_uri)
        marker = root / ".fetched" / f"{name}.json"
        if marker.exists() and json.loads(marker.read_text()).get("archive_sha256") == manifest["archive_sha256"] \
                and (root / folder).is_dir():
            return root
        root.mkdir(parents=True, exist_ok=True)
        for leftover in root.glob(".fetch-*"):     # a fetch that died; we hold the lock, nobody uses it
            _remove(leftover)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as scratch:
            archive = Path(scratch) / ARCHIVE
            digest, size = _download(store.join(root_uri, name, ARCHIVE), archive)
            if digest != manifest["archive_sha256"]:
                raise DataUnavailable(
                    f"dataset {name}: the archive at {public_uri(root_uri)}/{name}/{ARCHIVE} has SHA-256 {digest}, "
                    f"its manifest says {manifest['archive_sha256']} (corrupt or half-staged); "
                    f"stage it again: {stage_command(name, root_uri)}")
            extracted = Path(scratch) / "files"
            with tarfile.open(archive) as tar:
                # only files and folders under the dataset's folder: no links, devices, absolute paths or ".."
                # (checked here: tarfile's own "data" filter is missing from Pythons before 3.11.4)
                outside = [m.name for m in tar.getmembers()
                           if not (m.name == folder or m.name.startswith(folder + "/")) or ".." in m.name.split("/")
                           or not (m.isfile() or m.isdir())]
                if outside:
                    raise DataUnavailable(f"dataset {name}: {public_uri(root_uri)}/{name}/{ARCHIVE} holds entries "
                                          f"other than the files of {folder}/ ({outside[0]}); stage it again: "
                                          f"{stage_command(name, root_uri)}")
                tar.extractall(extracted, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
            _remove(marker)                                # the old files are going: no marker may vouch for them
            _remove(root / folder)
            (root / folder).parent.mkdir(parents=True, exist_ok=True)
            os.rename(extracted / folder, root / folder)
            marker.parent.mkdir(exist_ok=True)
            _write_local(marker, json.dumps(manifest) + "\n")
            _log_download(store.join(root_uri, name, ARCHIVE), digest, size)
    return root


def fetch_file(uri):
    """A local copy of a staged file (weights), checked against its {uri}.sha256, fetched once per node."""
    folder = cache_dir() / "files" / _short_hash(_without_credentials(uri))
    local = folder / Path(urlsplit(str(uri)).path).name
    checked = Path(f"{local}{HASH_SUFFIX}")     # the hash the local copy was checked against
    with node_lock("file-" + folder.name):
        try:
            expected = _read_text(_with_suffix(uri, HASH_SUFFIX)).split(maxsplit=1)[:1]
        except FileNotFoundError:
            raise DataUnavailable(f"data.weights: {public_uri(uri)} has no {HASH_SUFFIX} beside it (not staged, "
                                  "or staging did not finish); stage it: unlearn-grid stage-data --weights FILE "
                                  "--to ROOT_URI") from None
        if local.exists() and checked.exists() and checked.read_text().split()[:1] == expected:
            return local
        folder.mkdir(parents=True, exist_ok=True)
        _remove(checked)
        temporary = Path(f"{local}.{os.getpid()}.tmp")
        try:
            digest, size = _download(uri, temporary)
            if [digest] != expected:
                raise DataUnavailable(f"data.weights: {public_uri(uri)} has SHA-256 {digest}, its {HASH_SUFFIX} says "
                                      f"{(expected or ['(empty)'])[0]}; stage it again: unlearn-grid stage-data "
                                      "--weights FILE --to ROOT_URI")
            os.replace(temporary, local)
        finally:
            _remove(temporary)
        _write_local(checked, f"{digest}  {local.name}\n")
        _log_download(uri, digest, size)
    return local
