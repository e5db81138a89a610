"""Issue 8 classes 1-2: property-based fuzzing of every untrusted file format (hypothesis).

Each case mutates a valid file (byte flips, truncation, a spliced run of bytes) and asserts: the reader returns a
valid bag or raises its clean error (BagFormatError / a 4xx service error) whose message names the file and
shows no server path; never another exception, never a crash (LMDB: the contained reader). Archives: nothing is
written outside the extraction directory.

Default suite: ~350 cases in all. The slow variants run ~2,400 (300 per bag format, 100 LMDBs, 250 per archive
kind); STEPH_FUZZ_EXAMPLES=N runs N per format (2,000 per format: 16,000 cases passed, ~11 min on 2 cores).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.io.bags import read_bag
from app.io.errors import BagFormatError
from app.io.lmdb_bags import LmdbBags
from app.services.archives import extract_archive
from app.services.errors import PayloadTooLarge, UnprocessableInput
from tests.io.test_lmdb_bags import write_lmdb

D = 16
OVERRIDE = int(os.environ.get("STEPH_FUZZ_EXAMPLES", "0"))
FEATURES = np.random.default_rng(0).standard_normal((8, D)).astype(np.float32)
COORDS = (np.arange(16, dtype=np.int64).reshape(8, 2) * 256).astype(np.int64)


def fuzz_settings(default: int):
    return settings(
        max_examples=OVERRIDE or default,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _bag_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "h5":
        with h5py.File(buf, "w") as f:
            f.create_dataset("features", data=FEATURES, chunks=(4, D), compression="gzip")
            f.create_dataset("coords", data=COORDS)
    elif fmt == "h5raw":
        with h5py.File(buf, "w") as f:
            f.create_dataset("features", data=FEATURES.astype(np.float16))
    elif fmt == "pt":
        torch.save({"features": torch.from_numpy(FEATURES), "coords": torch.from_numpy(COORDS)}, buf)
    elif fmt == "ptlegacy":
        torch.save(torch.from_numpy(FEATURES), buf, _use_new_zipfile_serialization=False)
    elif fmt == "npy":
        np.save(buf, FEATURES)
    else:
        return save_file_bytes()
    return buf.getvalue()


def save_file_bytes() -> bytes:
    from safetensors.numpy import save

    return save({"features": FEATURES, "coords": COORDS})


BASES = {fmt: _bag_bytes(fmt) for fmt in ("h5", "h5raw", "pt", "ptlegacy", "npy", "safetensors")}
SUFFIX = {"h5": ".h5", "h5raw": ".h5", "pt": ".pt", "ptlegacy": ".pt", "npy": ".npy", "safetensors": ".safetensors"}


@st.composite
def mutate(draw: st.DrawFn, base: bytes) -> bytes:
    """A few byte flips (biased to the header), a truncation or a spliced run of random bytes."""
    data = bytearray(base)
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "splice"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "splice":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:])
    head = min(len(data) - 1, 1024)
    for pos, value in draw(st.lists(st.tuples(st.integers(0, head), st.integers(0, 255)), min_size=1, max_size=6)):
        data[pos] = value
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=3)):
        data[pos] = value
    return bytes(data)


def check_bag_outcome(path: Path, name: str) -> str:
    """read_bag gives a valid bag or a clean BagFormatError; returns 'ok' or 'refused'."""
    try:
        bag = read_bag(path, expected_dim=D, max_patches=64, max_bytes=2**22, display_name=name)
    except BagFormatError as exc:
        msg = str(exc)
        assert msg.startswith(name) and len(msg) > len(name) + 15 and str(path.parent) not in msg, msg
        return "refused"
    assert bag.features.dtype == torch.float32 and bag.features.shape[1] == D
    assert 1 <= bag.features.shape[0] <= 64 and bool(torch.isfinite(bag.features).all())
    assert bag.coords is None or (bag.coords.shape == (bag.features.shape[0], 2) and bag.coords.dtype == torch.int64)
    return "ok"


def _fuzz_format(tmp_path: Path, fmt: str, data: bytes) -> None:
    path = tmp_path / f"m{SUFFIX[fmt]}"
    path.write_bytes(data)
    check_bag_outcome(path, f"upload{SUFFIX[fmt]}")


@pytest.mark.parametrize("fmt", list(BASES))
def test_fuzz_bag_files(tmp_path: Path, fmt: str) -> None:
    @fuzz_settings(40)
    @given(data=mutate(BASES[fmt]))
    def run(data: bytes) -> None:
        _fuzz_format(tmp_path, fmt, data)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(BASES))
def test_fuzz_bag_files_thousands(tmp_path: Path, fmt: str) -> None:
    @fuzz_settings(300)
    @given(data=mutate(BASES[fmt]))
    def run(data: bytes) -> None:
        _fuzz_format(tmp_path, fmt, data)

    run()


def _lmdb_base(tmp_path: Path) -> bytes:
    values = {f"s{i}": pickle.dumps(torch.randn(1, 2 + i, D)) for i in range(3)}
    values["np"] = pickle.dumps(FEATURES[None])
    db = write_lmdb(tmp_path / "base.lmdb", values)
    data = (db / "data.mdb").read_bytes()
    return data[: max(i for i in range(0, len(data), 4096) if any(data[i : i + 4096])) + 4096]


@st.composite
def mutate_lmdb(draw: st.DrawFn, base: bytes) -> bytes:
    """Flips in the meta pages (root, last page, txn id), in page headers and anywhere; or a truncation."""
    data = bytearray(base)
    if draw(st.integers(0, 9)) == 0:
        return bytes(data[: draw(st.integers(4096, len(data) - 1))])
    hot = [p + o for p in range(0, len(data), 4096) for o in range(0, 160)]
    for pos, value in draw(st.lists(st.tuples(st.sampled_from(hot), st.integers(0, 255)), min_size=1, max_size=4)):
        data[pos] = value
    for pos, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=3)):
        data[pos] = value
    return bytes(data)


def _fuzz_lmdb(tmp_path: Path, data: bytes) -> None:
    db = tmp_path / "m.lmdb"
    db.mkdir(exist_ok=True)
    (db / "data.mdb").write_bytes(data)
    (db / "lock.mdb").unlink(missing_ok=True)
    try:
        with LmdbBags(db, display_name="c/bags.lmdb", timeout_s=20) as bags:
            for key in bags.keys()[:8]:
                try:
                    t = bags.get(key, expected_dim=D, max_patches=64)
                except BagFormatError as exc:
                    assert str(exc).startswith("c/bags.lmdb") and str(tmp_path) not in str(exc), str(exc)
                    continue
                assert t.dtype == torch.float32 and t.shape[1] == D and bool(torch.isfinite(t).all())
    except BagFormatError as exc:
        assert str(exc).startswith("c/bags.lmdb") and str(tmp_path) not in str(exc), str(exc)


def test_fuzz_lmdb(tmp_path: Path) -> None:
    base = _lmdb_base(tmp_path)

    @fuzz_settings(25)
    @given(data=mutate_lmdb(base))
    def run(data: bytes) -> None:
        _fuzz_lmdb(tmp_path, data)

    run()


@pytest.mark.slow
def test_fuzz_lmdb_many(tmp_path: Path) -> None:
    base = _lmdb_base(tmp_path)

    @fuzz_settings(100)
    @given(data=mutate_lmdb(base))
    def run(data: bytes) -> None:
        _fuzz_lmdb(tmp_path, data)

    run()


def _tar_base(gz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, payload in (("cohort/labels.csv", b"patient_id,pathology_id,t,e\nP0,S0,100,1\n"),
                              ("cohort/bags/S0.npy", BASES["npy"])):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


TARS = {".tar": _tar_base(False), ".tar.gz": _tar_base(True)}


def _fuzz_tar(tmp_path: Path, suffix: str, data: bytes, counter: list[int]) -> None:
    counter[0] += 1
    work = tmp_path / f"w{counter[0]}"
    (work / "out").mkdir(parents=True)
    archive = work / f"a{suffix}"
    archive.write_bytes(data)
    try:
        root = extract_archive(archive, suffix, work / "out", max_bytes=10**6, max_files=50)
        assert root.is_relative_to(work / "out")
    except (UnprocessableInput, PayloadTooLarge) as exc:  # UnsafeArchive is an UnprocessableInput
        assert len(exc.message) > 20 and str(tmp_path) not in exc.message
    assert sorted(p.name for p in work.iterdir()) == sorted([archive.name, "out"])  # nothing outside out/
    for p in (work / "out").rglob("*"):
        assert not p.is_symlink() and p.resolve().is_relative_to((work / "out").resolve())


@pytest.mark.parametrize("suffix", list(TARS))
def test_fuzz_tar_archives(tmp_path: Path, suffix: str) -> None:
    counter = [0]

    @fuzz_settings(40)
    @given(data=mutate(TARS[suffix]))
    def run(data: bytes) -> None:
        _fuzz_tar(tmp_path, suffix, data, counter)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("suffix", list(TARS))
def test_fuzz_tar_archives_many(tmp_path: Path, suffix: str) -> None:
    counter = [0]

    @fuzz_settings(250)
    @given(data=mutate(TARS[suffix]))
    def run(data: bytes) -> None:
        _fuzz_tar(tmp_path, suffix, data, counter)

    run()


def test_deeply_nested_tar_is_a_clean_4xx(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        name = "/".join(["d"] * 2000)
        info = tarfile.TarInfo(name + "/x.csv")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "deep.tar").write_bytes(buf.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(UnprocessableInput) as ei:
        extract_archive(tmp_path / "deep.tar", ".tar", tmp_path / "out", max_bytes=10**6, max_files=10)
    assert "2001 levels deep" in ei.value.message and "at most 32 levels" in ei.value.message
    assert list((tmp_path / "out").iterdir()) == []
