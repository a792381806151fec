"""mixvi.checkpoint: round trips, atomic writes and refusal of damaged files."""

import io
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixvi.checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint

META = {"method": "ibw", "step": 40, "eta": 0.125, "shape": [4, 3], "nested": {"ok": True, "none": None}}


def _state():
    return {
        "locs": jnp.arange(12, dtype=jnp.float32).reshape(4, 3) / 7,
        "count": jnp.asarray(40, jnp.int32),
        "key": jax.random.PRNGKey(3),
        "extra": (np.linspace(0.0, 1.0, 5), np.array([1, -2], np.int64)),
    }


def _losses():
    return np.array([3.5, 2.25, np.nan, 1.0], np.float32)


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def _write_members(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _temp_files(folder):
    return [f for f in os.listdir(folder) if f.startswith(".mixvi-ckpt-")]


def test_round_trip_gives_back_identical_leaves_losses_and_meta(tmp_path):
    """Saving then loading returns the leaves in jax.tree.leaves order with their dtypes, the losses and the meta."""
    state = _state()
    path = tmp_path / "run.npz"
    save_checkpoint(path, state, _losses(), META)
    leaves, losses, meta = load_checkpoint(path)
    expected = jax.tree.leaves(state)
    assert len(leaves) == len(expected)
    for got, want in zip(leaves, expected, strict=True):
        want = np.asarray(want)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert {str(x.dtype) for x in leaves} >= {"float32", "int32", "uint32", "float64", "int64"}
    np.testing.assert_array_equal(losses, _losses())  # NaN in the history survives too
    assert losses.dtype == np.float32
    assert meta == META
    rebuilt = jax.tree.unflatten(jax.tree.structure(state), leaves)
    np.testing.assert_array_equal(rebuilt["key"], state["key"])


def test_key_data_round_trip_draws_the_same_numbers(tmp_path):
    """A uint32 PRNG key restored from a checkpoint draws exactly what the saved key draws."""
    key = jax.random.split(jax.random.PRNGKey(11))[1]
    save_checkpoint(tmp_path / "k.npz", {"key": key}, np.zeros(0), {})
    (restored,), _, _ = load_checkpoint(tmp_path / "k.npz")
    np.testing.assert_array_equal(jax.random.normal(jnp.asarray(restored), (5,)), jax.random.normal(key, (5,)))


def test_save_creates_the_folder_and_leaves_no_temporary_file(tmp_path):
    """A save into a missing folder creates it, and only the checkpoint itself remains there."""
    path = tmp_path / "a" / "b" / "run.npz"
    save_checkpoint(str(path), _state(), _losses(), META)
    assert sorted(os.listdir(path.parent)) == ["run.npz"]


def test_save_overwrites_a_previous_checkpoint(tmp_path):
    """A second save at the same path replaces the first one completely."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, {"x": np.ones(3)}, np.zeros(1), {"v": 1})
    save_checkpoint(path, {"y": np.arange(2, dtype=np.int32)}, np.ones(2), {"v": 2})
    leaves, losses, meta = load_checkpoint(path)
    assert len(leaves) == 1 and leaves[0].dtype == np.int32
    np.testing.assert_array_equal(losses, [1.0, 1.0])
    assert meta == {"v": 2}


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    """A save that fails while writing (meta not JSON-serialisable) leaves the earlier file intact and no temporary file."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"x": np.ones(2)}, np.zeros(1), {"bad": object()})
    assert path.read_bytes() == before
    assert _temp_files(tmp_path) == []
    assert load_checkpoint(path)[2] == META


def test_unconvertible_leaf_fails_before_touching_the_file(tmp_path):
    """A leaf NumPy cannot take (a typed PRNG key) raises and leaves the previous checkpoint as it was."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, {"key": jax.random.key(0)}, np.zeros(1), {})
    assert path.read_bytes() == before
    assert _temp_files(tmp_path) == []


def test_save_interrupted_midway_leaves_no_partial_file(tmp_path, monkeypatch):
    """An interrupt after half the archive is written removes the temporary file and keeps the old checkpoint."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    before = path.read_bytes()
    real_savez = np.savez

    def half_then_interrupt(f, **arrays):
        buf = io.BytesIO()
        real_savez(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"x": np.ones(100)}, np.zeros(10), {"v": 3})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _temp_files(tmp_path) == []


def test_leaf_that_load_cannot_read_is_refused_by_save(tmp_path):
    """A leaf that becomes an object array (not loadable without pickle) makes save raise and keep the old file."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    before = path.read_bytes()
    with pytest.raises((TypeError, ValueError)):
        save_checkpoint(path, {"x": np.ones(2), "f": len}, np.zeros(1), {})
    assert path.read_bytes() == before


def test_missing_path_raises_no_checkpoint(tmp_path):
    """Loading a path that does not exist raises CheckpointError saying there is no checkpoint."""
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.npz")


@pytest.mark.parametrize("target", ["leaf_0", "losses", "record"])
def test_flipped_byte_in_a_member_is_refused(tmp_path, target):
    """A flipped byte inside an array or the metadata record raises CheckpointError naming the damage."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    raw = bytearray(path.read_bytes())
    if target == "record":
        needle = json.dumps(META).encode("utf-32-le")[:16]  # numpy stores the JSON string as UTF-32
    elif target == "losses":
        needle = _losses().tobytes()
    else:
        needle = np.asarray(jax.tree.leaves(_state())[0]).tobytes()
    at = raw.index(needle) + len(needle) // 2
    raw[at] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt or truncated|fails its checksum"):
        load_checkpoint(path)


def test_flipped_compression_method_is_refused(tmp_path):
    """A flipped compression-method byte in the central directory raises CheckpointError, not a zipfile error."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, {"x": np.ones(3)}, np.zeros(2), {})
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"PK\x01\x02") + 10] ^= 0xFF  # compression method of the first central-directory entry
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_every_single_byte_flip_is_refused_or_harmless(tmp_path):
    """Flipping any one byte of a checkpoint either raises CheckpointError or loads exactly the saved data."""
    path = tmp_path / "run.npz"
    state, losses = {"x": np.arange(4, dtype=np.float32), "k": np.asarray(jax.random.PRNGKey(0))}, np.ones(2)
    save_checkpoint(path, state, losses, {"v": 1})
    raw = path.read_bytes()
    damaged = tmp_path / "damaged.npz"
    for i in range(len(raw)):
        flipped = bytearray(raw)
        flipped[i] ^= 0xFF
        damaged.write_bytes(bytes(flipped))
        try:
            leaves, got_losses, meta = load_checkpoint(damaged)
        except CheckpointError:
            continue
        assert meta == {"v": 1}, i
        np.testing.assert_array_equal(got_losses, losses)
        for got, want in zip(leaves, jax.tree.leaves(state), strict=True):
            assert got.dtype == want.dtype, i
            np.testing.assert_array_equal(got, want)


def test_truncated_file_is_refused(tmp_path):
    """A checkpoint cut short raises CheckpointError saying it is corrupt or truncated."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("member", "match"),
    [
        ("leaf_1.npy", "fails its checksum"),
        ("losses.npy", "fails its checksum"),
        ("record.npy", "corrupt or truncated"),
    ],
)
def test_missing_member_is_refused(tmp_path, member, match):
    """A checkpoint with one member removed raises CheckpointError."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    members = _members(path)
    del members[member]
    _write_members(path, members)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_consistently_altered_array_fails_the_checksum(tmp_path):
    """An array rewritten as a valid .npy with one changed value (zip CRCs intact) fails the SHA-256 check."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, _state(), _losses(), META)
    members = _members(path)
    members["losses.npy"] = _npy(_losses() + np.float32(1e-3))
    _write_members(path, members)
    with pytest.raises(CheckpointError, match="fails its checksum: the file was altered or damaged"):
        load_checkpoint(path)


def test_changed_dtype_fails_the_checksum(tmp_path):
    """The same values stored with another dtype fail the checksum, which covers dtypes and shapes."""
    path = tmp_path / "run.npz"
    save_checkpoint(path, {"x": np.arange(3, dtype=np.int32)}, np.zeros(1), {})
    members = _members(path)
    members["leaf_0.npy"] = _npy(np.arange(3, dtype=np.int64))
    _write_members(path, members)
    with pytest.raises(CheckpointError, match="fails its checksum"):
        load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path):
    """A non-zip file, an npz without a record, and a record of another format all raise CheckpointError."""
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(text)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.ones(2))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(plain)
    other = tmp_path / "other.npz"
    np.savez(other, record=np.asarray(json.dumps({"format": "other-1"})), losses=np.zeros(1))
    with pytest.raises(CheckpointError, match=f"is not a {FORMAT} file \\(format='other-1'\\)"):
        load_checkpoint(other)
