"""Reference LMDB bags: read through the restricted unpickler; anything but tensors is refused unexecuted."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from app.io.errors import BagFormatError
from app.io.lmdb_bags import LmdbBags, read_lmdb_bag, read_lmdb_bags
from app.io.safe_unpickle import UnsafePickleError, restricted_loads
from tests.io.conftest import D


def write_lmdb(path: Path, values: dict[str, bytes], keys: list[str] | None = None) -> Path:
    """The reference layout: key = slide id, value = pickle bytes, `__keys__` = pickled id list."""
    env = lmdb.open(str(path), map_size=2**24)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key.encode(), value)
        txn.put(b"__keys__", pickle.dumps(list(values) if keys is None else keys))
    env.close()
    return path


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _NestedEvil:
    """Pickles as torch.storage._load_from_bytes(<torch.save of an os.system call>)."""

    def __init__(self, cmd: str) -> None:
        buf = io.BytesIO()
        torch.save(_System(cmd), buf)
        self.payload = buf.getvalue()

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.payload,))


def test_reads_reference_layout(tmp_path: Path) -> None:
    bags = {"slide-a": torch.randn(1, 5, D), "slide-b": torch.randn(3, D).half()}
    values = {k: pickle.dumps(v) for k, v in bags.items()}
    values["slide-c"] = pickle.dumps(np.ones((1, 2, D), np.float32))
    db = write_lmdb(tmp_path / "feats.lmdb", values, keys=["slide-b", "slide-a", "slide-c"])
    out = read_lmdb_bags(db, expected_dim=D)
    assert list(out) == ["slide-b", "slide-a", "slide-c"]
    assert torch.equal(out["slide-a"], bags["slide-a"][0])
    assert out["slide-b"].dtype == torch.float32 and torch.equal(out["slide-b"], bags["slide-b"].float())
    assert out["slide-c"].shape == (2, D) and float(out["slide-c"].sum()) == 2 * D
    assert torch.equal(read_lmdb_bag(db, "slide-a"), bags["slide-a"][0])
    with pytest.raises(BagFormatError, match=r"feats\.lmdb: no slide 'nope'"):
        read_lmdb_bag(db, "nope")
    with pytest.raises(BagFormatError, match=r"feats\.lmdb\[slide-a\].*D = 16, expected D = 8"):
        read_lmdb_bag(db, "slide-a", expected_dim=8)


@pytest.mark.parametrize("evil", [_System, _NestedEvil])
def test_malicious_value_refused_without_running(tmp_path: Path, evil: type) -> None:
    marker = tmp_path / "pwned"
    values = {"good": pickle.dumps(torch.zeros(1, 2, D)), "bad": pickle.dumps(evil(f"touch {marker}"))}
    db = write_lmdb(tmp_path / "evil.lmdb", values)
    with LmdbBags(db) as bags:
        assert bags.get("good").shape == (2, D)
        with pytest.raises(BagFormatError) as ei:
            bags.get("bad")
    msg = str(ei.value)
    assert ei.value.file_name == "evil.lmdb" and msg.startswith("evil.lmdb: slide 'bad'")
    assert "refusing" in msg or "not a valid pickled tensor" in msg
    if evil is _System:
        assert "refusing to unpickle posix.system" in msg
    assert not marker.exists()


def test_restricted_loads_refuses_globals_and_hooks() -> None:
    with pytest.raises(UnsafePickleError, match="refusing to unpickle builtins.eval"):
        restricted_loads(pickle.dumps(eval))
    assert restricted_loads(pickle.dumps({"a": [1, 2.5, "x"]})) == {"a": [1, 2.5, "x"]}
    with pytest.raises(UnsafePickleError, match="numpy dtype"):
        restricted_loads(pickle.dumps(np.array([None, 1], dtype=object)))


def test_garbled_value_and_bad_path(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "g.lmdb", {"s": b"\x80\x04garbage"})
    with pytest.raises(BagFormatError, match=r"g\.lmdb: slide 's' is not a valid pickled tensor"):
        read_lmdb_bags(db)
    (tmp_path / "x.lmdb").write_bytes(b"not an lmdb" * 100)
    with pytest.raises(BagFormatError, match=r"x\.lmdb: not a readable LMDB"):
        read_lmdb_bags(tmp_path / "x.lmdb")


def test_ndarray_global_is_not_callable() -> None:
    class _CallNdarray:
        def __reduce__(self):
            return (np.ndarray, ((10**12,),))  # would allocate terabytes if ndarray(...) were callable

    with pytest.raises(TypeError):
        restricted_loads(pickle.dumps(_CallNdarray()))
