"""Atomic, verifiable checkpoints of a training state (any pytree of arrays) with its loss history.

Format: one ``.npz`` file with the state's leaves (``leaf_0`` ...), the losses, and a JSON metadata
record holding a format version, caller-supplied metadata and a SHA-256 of every array, so a
truncated or altered file is refused. Written to a temporary file in the same folder, flushed, then
renamed over the target (``os.replace`` is atomic on POSIX), so an interrupted save never leaves a
half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any

import jax
import numpy as np

FORMAT = "mixvi-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated, or does not match the run."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


NOT_NUMERIC = "checkpoint state leaves {} are not numeric arrays; a checkpoint stores arrays only"


def save_checkpoint(path: str | os.PathLike, state: Any, losses: np.ndarray, meta: dict) -> None:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file to write; its folder is created if needed.
    state : pytree
        A pytree of arrays (its leaves are stored; the structure comes from the caller on load).
    losses : numpy.ndarray
        The loss history so far.
    meta : dict
        JSON-serialisable metadata stored with the arrays.

    Raises
    ------
    TypeError
        When a leaf is not a numeric array (nothing is written; an older checkpoint stays intact).
    """
    path = os.fspath(path)
    leaves = jax.tree.leaves(state)
    arrays = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["losses"] = np.asarray(losses)
    objects = [k for k, a in arrays.items() if a.dtype.hasobject]
    if objects:
        # refused before the file is touched: np.savez would pickle them and load never reads pickles
        raise TypeError(NOT_NUMERIC.format(objects))
    record = {"format": FORMAT, "num_leaves": len(leaves), "sha256": _digest(arrays), "meta": meta}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mixvi-ckpt-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, record=np.asarray(json.dumps(record)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Read and verify a checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    leaves : list of numpy.ndarray
        The state's leaves, in ``jax.tree.leaves`` order.
    losses : numpy.ndarray
        The loss history.
    meta : dict
        The metadata passed to :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        When the file is missing, not a mixvi checkpoint, truncated, or fails its checksum.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(str(data["record"]))
            arrays = {k: np.asarray(data[k]) for k in data.files if k != "record"}
    # a damaged zip header can name an unknown compression method, for which zipfile raises
    # NotImplementedError: that too is a corrupt file, not a missing feature
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError, NotImplementedError) as err:
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or truncated ({type(err).__name__}: {err}); "
            "delete it and restart, or resume from an older copy"
        ) from err
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a {FORMAT} file (format={record.get('format')!r})")
    if _digest(arrays) != record["sha256"]:
        raise CheckpointError(f"checkpoint {path!r} fails its checksum: the file was altered or damaged")
    leaves = [arrays[f"leaf_{i}"] for i in range(record["num_leaves"])]
    return leaves, arrays["losses"], record["meta"]
