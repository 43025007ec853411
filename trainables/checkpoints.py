"""A trial's checkpoint in storage, by trial key: {storage}/checkpoints/{key}/state.pt (+ state.pt.sha256).

Why by key and not through Tune: Tune keeps a trial's checkpoints under its experiment's folder, and
every `run` starts a Tuner of its own, so a driver that dies (or a `ray up` that restarts the head,
or a stage that fails) leaves checkpoints that no later run looks at. The key names the trial's
whole definition (trainables/keys.py), so whichever run, stage attempt or node picks the trial up
next finds its checkpoint here, on a folder or a bucket alike (trainables/store.py).

A checkpoint is one torch.save'd dict: {"key", "run_id" (the MLflow run it continues), "stage",
then what the stage needs to resume: "training" (trainables/train.py train_classifier's state),
"method" (an unlearning method's loop: trainables/methods/task.py) or "model" (an unlearned model
whose method had finished)}. It is written with its SHA-256 like every stored file; one that fails
its hash or does not load is deleted and the trial starts over (a checkpoint only saves time: it
is never worth a wrong result). It is deleted when its trial finishes.
"""
import io
import logging

from trainables import store

CHECKPOINT_FILE = "state.pt"
SECTION = "checkpoints"

log = logging.getLogger(__name__)


def save(storage, key, state):
    """Write `state` (tensors and plain Python data) as the key's checkpoint, replacing the last one."""
    import torch   # here: the driver imports this module (what it deletes) without torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    store.write(storage, key, CHECKPOINT_FILE, buffer.getvalue(), section=SECTION)


def load(storage, key):
    """The key's last checkpoint, or None when it has none. One that fails its hash or does not load
    is deleted (logged as a warning) and None returned. weights_only: a checkpoint holds tensors and
    plain data only, and unpickling anything else could run code."""
    import torch
    try:
        payload = store.read(storage, key, CHECKPOINT_FILE, section=SECTION)
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception as error:   # StoreIntegrityError, or bytes torch cannot load
        log.warning("discarding the checkpoint of trial %s: %s", key, error)
        delete(storage, key)
        return None


def delete(storage, key):
    store.delete(storage, key, section=SECTION)
