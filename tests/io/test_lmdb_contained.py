"""Issue 8 class 1: an untrusted LMDB is read in a contained child; a crash there is a clean 422 here."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from app.io.cohort import open_cohort
from app.io.errors import BagFormatError, InputFileError
from app.io.lmdb_bags import LmdbBags
from app.io.safe_unpickle import UnsafePickleError, restricted_loads
from tests.io.conftest import D
from tests.io.test_lmdb_bags import write_lmdb

PAGE = 4096


def corrupt_root(db: Path, root: int = 3000, last_page: int = 4000) -> None:
    """Point both meta pages' main-DB root (and last page) past the end of data.mdb: mapping it faults (SIGBUS)."""
    data = bytearray((db / "data.mdb").read_bytes())
    for meta in (0, PAGE):
        data[meta + 128 : meta + 136] = struct.pack("<Q", root)  # mm_dbs[MAIN].md_root
        data[meta + 136 : meta + 144] = struct.pack("<Q", last_page)  # mm_last_pg
    (db / "data.mdb").write_bytes(bytes(data))


def good_values(n: int = 3) -> dict[str, bytes]:
    return {f"s{i}": pickle.dumps(torch.full((1, 2 + i, D), float(i))) for i in range(n)}


def test_a_corrupt_lmdb_is_a_clean_error_and_the_process_lives_on(tmp_path: Path) -> None:
    bad = write_lmdb(tmp_path / "bad.lmdb", good_values())
    corrupt_root(bad)
    db = LmdbBags(bad)
    with pytest.raises(BagFormatError) as ei:
        db.keys()
    msg = str(ei.value)
    assert msg.startswith("bad.lmdb: ") and "crashed the reader" in msg and "rebuild" in msg, msg
    with pytest.raises(BagFormatError, match="crashed the reader"):  # restarted once, crashes again ...
        db.get("s1")
    with pytest.raises(BagFormatError, match="crashed the reader"):  # ... then the LMDB is marked unreadable
        db.get("s2")
    db.close()
    good = write_lmdb(tmp_path / "good.lmdb", good_values())
    with LmdbBags(good) as db2:
        assert db2.keys() == ["s0", "s1", "s2"]
        assert torch.equal(db2.get("s2"), torch.full((4, D), 2.0))


def test_a_cohort_with_a_corrupt_lmdb_fails_validation_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "bags.lmdb").mkdir(parents=True)
    write_lmdb(root / "bags.lmdb", good_values(2))
    corrupt_root(root / "bags.lmdb")
    (root / "labels.csv").write_text("patient_id,pathology_id,t,e\nP0,s0,100,1\nP1,s1,200,0\n")
    with pytest.raises(InputFileError) as ei:
        open_cohort(root).validate(expected_dim=D)
    assert "crashed the reader" in str(ei.value) and str(tmp_path) not in str(ei.value)


class _StatelessArray:
    """Pickles as numpy's _reconstruct(ndarray, (n,), b'b') WITHOUT the state that carries the data."""

    def __init__(self, n: int, state: tuple | None = None) -> None:
        self.n, self.state = n, state

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        args = (_reconstruct, (np.ndarray, (0,), b"b"))
        return args if self.state is None else (*args, self.state)


def test_numpy_arrays_are_rebuilt_with_their_data_or_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafePickleError, match="without its data"):
        restricted_loads(pickle.dumps(_StatelessArray(10)))
    short = (1, (1000, D), np.dtype("f4"), False, b"\0" * 16)
    with pytest.raises(UnsafePickleError, match="does not match its shape"):
        restricted_loads(pickle.dumps(_StatelessArray(0, short)))
    a = np.arange(3 * D, dtype=np.float32).reshape(3, D)
    for protocol in (2, 4, 5):
        assert np.array_equal(restricted_loads(pickle.dumps(np.asfortranarray(a), protocol=protocol)), a)
    db = write_lmdb(tmp_path / "np.lmdb", {"x": pickle.dumps(_StatelessArray(10)), "ok": pickle.dumps(a[None])})
    with LmdbBags(db) as bags:
        with pytest.raises(BagFormatError, match=r"np\.lmdb: slide 'x'.*uninitialised memory"):
            bags.get("x")
        assert torch.equal(bags.get("ok"), torch.from_numpy(a))


def test_tensor_values_cannot_expand_or_overallocate(tmp_path: Path) -> None:
    view = torch.ones(1, D).expand(100_000, D)
    with pytest.raises(UnsafePickleError, match="repeats or overruns"):
        restricted_loads(pickle.dumps(view))
    buf = io.BytesIO()
    torch.save(torch.zeros(4).untyped_storage(), buf, _use_new_zipfile_serialization=False)
    payload = buf.getvalue()
    lying = payload.replace(b"K\x10", b"J\x00\x00\x00\x40", 1)  # the storage now declares 1 GiB
    assert lying != payload

    class _Lying:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (lying,))

    with pytest.raises(UnsafePickleError, match="declares"):
        restricted_loads(pickle.dumps(_Lying()))
    db = write_lmdb(tmp_path / "v.lmdb", {"v": pickle.dumps(view)})
    with LmdbBags(db) as bags, pytest.raises(BagFormatError, match=r"v\.lmdb: slide 'v'.*repeats"):
        bags.get("v")


def test_a_read_past_the_time_limit_is_a_clean_error(tmp_path: Path) -> None:
    db = write_lmdb(tmp_path / "t.lmdb", good_values())
    with LmdbBags(db, timeout_s=1e-6) as bags, pytest.raises(BagFormatError, match="took longer than"):
        bags.get("s1")
