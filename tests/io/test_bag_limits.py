"""Issue 8 class 2: every declared size/shape/stride/count is checked before memory is committed."""

from __future__ import annotations

import gc
import io
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import app.io._bag_readers as readers
from app.io.bags import read_bag, read_patient_bag
from app.io.errors import BagFormatError
from app.io.limits import MemoryBudget, MemoryBudgetBusy, all_finite
from app.io.patient_bags import PatientTooLarge, read_patient_files
from tests.io.conftest import D, make_features, write_bag


def _msg(exc_info: pytest.ExceptionInfo, name: str, *needles: str) -> None:
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, BagFormatError) and exc_info.value.file_name == name
    assert msg.startswith(name), msg
    for needle in needles:
        assert needle in msg, msg


def test_pt_stride_zero_view_is_refused_before_it_expands(tmp_path: Path) -> None:
    torch.save({"features": torch.ones(1, D).expand(200_000, D)}, tmp_path / "view.pt")
    assert (tmp_path / "view.pt").stat().st_size < 4096  # 1 KB on disk, 12.8 MB as a tensor
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "view.pt", expected_dim=D)
    _msg(ei, "view.pt", "[200000, 16]", "repeats the 16 value(s)")
    t = torch.arange(4 * D, dtype=torch.float32).reshape(4, D)
    torch.save({"features": t.t().contiguous().t()}, tmp_path / "fortran.pt")  # a permuted but 1:1 view is fine
    assert torch.equal(read_bag(tmp_path / "fortran.pt").features, t)


def _recompress(src: Path, dst: Path) -> None:
    """Copy a torch.save zip, deflating its data records."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            kind = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=kind)


def test_pt_compressed_or_mismatched_records_are_refused(tmp_path: Path) -> None:
    torch.save({"features": torch.zeros(64, D)}, tmp_path / "plain.pt")
    _recompress(tmp_path / "plain.pt", tmp_path / "deflated.pt")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "deflated.pt", expected_dim=D)
    _msg(ei, "deflated.pt", "compressed (torch.save never compresses)")
    torch.save({"features": torch.zeros(2, D), "other": torch.zeros(2**18)}, tmp_path / "extra.pt")
    with pytest.raises(BagFormatError) as ei:  # loading would allocate every storage, features or not
        read_bag(tmp_path / "extra.pt", expected_dim=D, max_bytes=2**20)
    _msg(ei, "extra.pt", "per-request limit")


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("kind", ["sparse", "quantized"])
def test_pt_sparse_and_quantized_features_are_a_clean_422(tmp_path: Path, kind: str) -> None:
    dense = torch.from_numpy(make_features(5))
    value = dense.to_sparse() if kind == "sparse" else torch.quantize_per_tensor(dense, 0.1, 0, torch.qint8)
    torch.save({"features": value}, tmp_path / f"{kind}.pt")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / f"{kind}.pt", expected_dim=D)
    _msg(ei, f"{kind}.pt", f"{kind} tensor", "to_dense()")


def test_pt_legacy_format_declaring_more_than_it_holds(tmp_path: Path) -> None:
    feats = torch.from_numpy(make_features(6))
    torch.save({"features": feats}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_bag(tmp_path / "old.pt").features, feats)
    raw = (tmp_path / "old.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "cut.pt")
    _msg(ei, "cut.pt", "declares", "holds")


def test_h5_coords_fill_value_chunk_is_refused_unread(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "coords.h5", "w") as f:
        f.create_dataset("features", data=make_features(10))
        f.create_dataset("coords", shape=(10**8, 2), dtype="i8", chunks=(10**6, 2), compression="gzip")
    assert (tmp_path / "coords.h5").stat().st_size < 20_000
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "coords.h5", expected_dim=D)
    _msg(ei, "coords.h5", "coords hold 100000000 rows", "10 patches")
    with h5py.File(tmp_path / "hollow.h5", "w") as f:  # right shape, but never written (fill values)
        f.create_dataset("features", data=make_features(10))
        f.create_dataset("coords", shape=(10, 2), dtype="i8", chunks=(5, 2), compression="gzip")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "hollow.h5", expected_dim=D)
    _msg(ei, "hollow.h5", "`coords` declares 160 bytes", "stores only 0")


def test_h5_compression_bomb_within_limits_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "zeros.h5", "w") as f:
        f.create_dataset("features", data=np.zeros((20_000, D), np.float32), chunks=(5000, D), compression="gzip")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "zeros.h5", expected_dim=D)
    _msg(ei, "zeros.h5", "declares 1280000 bytes", ">100x expansion")
    write = make_features(200)
    with h5py.File(tmp_path / "real.h5", "w") as f:
        f.create_dataset("features", data=write, chunks=(50, D), compression="gzip")
    assert torch.equal(read_bag(tmp_path / "real.h5").features, torch.from_numpy(write))


def test_patient_total_is_checked_on_headers_before_any_data(tmp_path: Path, monkeypatch) -> None:
    with h5py.File(tmp_path / "s0.h5", "w") as f:
        f.create_dataset("features", shape=(50_000, D), dtype="f4", chunks=(10_000, D), compression="gzip")
    paths = [tmp_path / "s0.h5"] + [shutil.copy(tmp_path / "s0.h5", tmp_path / f"s{i}.h5") for i in range(1, 8)]
    reads: list[str] = []
    for fmt, reader in list(readers.READERS.items()):
        monkeypatch.setitem(readers.READERS, fmt, lambda p, n, h, r=reader: (reads.append(n), r(p, n, h))[1])
    with pytest.raises(PatientTooLarge) as ei:
        read_patient_files(paths, expected_dim=D, max_patches=50_000)
    _msg(ei, "s7.h5", "hold 400000 patches together", "limit of 50000")
    assert reads == []  # not one byte of features was read


def test_patient_bag_memory_and_dtypes(tmp_path: Path) -> None:
    a, b = make_features(3, seed=1), make_features(5, seed=2)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("features", data=a.astype(np.float16))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("features", data=b.astype(np.float16))
    one = read_patient_files([tmp_path / "a.h5"], keep_reduced=True)
    assert one.bag.features.dtype == torch.float16 and one.sizes == [3]
    two = read_patient_files([tmp_path / "a.h5", tmp_path / "b.h5"], keep_reduced=True)
    assert two.bag.features.dtype == torch.float16 and two.sizes == [3, 5]
    assert torch.equal(two.bag.features.float(), torch.from_numpy(np.concatenate([a, b]).astype(np.float16)).float())
    mixed = read_patient_bag([tmp_path / "a.h5", write_bag(tmp_path / "c.npy", make_features(2))], keep_reduced=True)
    assert mixed.features.dtype == torch.float32 and mixed.features.shape == (5, D)
    with pytest.raises(BagFormatError, match="per-request limit"):
        read_patient_files([tmp_path / "a.h5", tmp_path / "b.h5"], max_bytes=100)


def test_memory_budget_reserves_waits_and_releases_with_the_tensor() -> None:
    budget = MemoryBudget(1000)
    with pytest.raises(BagFormatError, match="more than this server's bag memory budget"):
        budget.reserve(1001, what="x.h5")
    budget.reserve(600, what="a.h5")
    with pytest.raises(MemoryBudgetBusy, match="retry"):
        budget.reserve(600, what="b.h5", wait_s=0.05)
    t = torch.zeros(4)
    budget.attach(t, 600)
    del t
    gc.collect()
    assert budget.used == 0
    assert budget.reserve(1000, what="c.h5", wait_s=0) == 1000


def test_predict_reservation_is_held_while_the_bag_lives(tmp_path: Path) -> None:
    path = write_bag(tmp_path / "a.npy", make_features(50))
    budget = MemoryBudget(10**6)
    read = read_patient_files([path], budget=budget, hold=True)
    assert budget.used == read.reserved == 50 * D * 4
    del read
    gc.collect()
    assert budget.used == 0


def test_finite_check_is_exact() -> None:
    x = torch.randn(10_000, D)
    assert all_finite(x) and all_finite(x.half()) and all_finite(x.bfloat16())
    big = torch.full((4, D), 3e38)  # its float32 sum overflows, yet every value is finite
    assert all_finite(big)
    assert all_finite(torch.full((4, D), 65504.0, dtype=torch.float16))  # float16's largest finite value
    assert all_finite(torch.empty(0, D)) and all_finite(torch.arange(12).reshape(3, 4))
    for bad in (float("nan"), float("inf"), -float("inf")):
        for row, col in ((0, 0), (4_321, 7), (9_999, D - 1)):  # first, middle and last value
            y = x.half().clone()
            y[row, col] = bad
            assert not all_finite(y) and not all_finite(y.float()) and not all_finite(y.bfloat16())
            assert not all_finite(y[row:])  # a view (a slice of rows) too
    mixed = x.clone()
    mixed[1, 1], mixed[2, 2] = float("inf"), -float("inf")  # +Inf and -Inf together (their sum is NaN)
    assert not all_finite(mixed)


def test_npy_and_safetensors_headers_declaring_more_than_the_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, D), np.float32))
    raw = buf.getvalue().replace(b"(4, 16), }   ", b"(4000, 16), }")  # same header length
    assert len(raw) == len(buf.getvalue())
    (tmp_path / "h.npy").write_bytes(raw)
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "h.npy")
    _msg(ei, "h.npy", "truncated")
    write_bag(tmp_path / "s.safetensors", make_features(4))
    raw = (tmp_path / "s.safetensors").read_bytes().replace(b"[4,16]", b"[9,16]")
    (tmp_path / "t.safetensors").write_bytes(raw)
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "t.safetensors")
    _msg(ei, "t.safetensors", "cannot read the file as safetensors")


def test_pt_pickles_are_bounded_before_they_allocate(tmp_path: Path) -> None:
    feats = torch.from_numpy(make_features(2))
    torch.save(
        {"features": feats, "blob": b"x" * (5 * 2**20)}, tmp_path / "blob.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "blob.pt")
    _msg(ei, "blob.pt", "cannot read the file as torch", "larger than 4194304 bytes")
    torch.save({"features": feats, "note": b"small"}, tmp_path / "note.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(read_bag(tmp_path / "note.pt").features, feats)


def test_several_files_are_read_straight_into_one_tensor(tmp_path: Path) -> None:
    a = make_features(700, seed=3)
    b = np.asfortranarray(make_features(7, seed=4)).astype(">f8")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    write_bag(tmp_path / "c.h5", make_features(5, seed=5), np.ones((5, 2), np.int64))
    read = read_patient_files([tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.h5"])
    expected = np.concatenate([a, b.astype(np.float32), make_features(5, seed=5)])
    assert read.sizes == [700, 7, 5] and read.bag.coords is None
    assert torch.equal(read.bag.features, torch.from_numpy(expected))
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "a.npy").write_bytes(raw[: len(raw) - 64])  # shrinks after a peek would have passed
    with pytest.raises(BagFormatError, match="truncated"):
        read_patient_files([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_trim_heap_gives_freed_heap_back_to_the_os() -> None:
    """A child process with `steph serve`'s policy (freed heap below 128 MiB is kept): 96 MiB malloc'ed from the
    heap, written and freed stays resident until trim_heap()."""
    import subprocess
    import sys

    child = """
import ctypes
from app.io.limits import trim_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
def rss():
    with open("/proc/self/status") as fh:
        return int(next(x for x in fh if x.startswith("VmRSS:")).split()[1]) / 1024
blocks = [libc.malloc(1 << 20) for _ in range(96)]
for b in blocks:
    ctypes.memset(b, 1, 1 << 20)
for b in blocks:
    libc.free(ctypes.c_void_p(b))
kept = rss()
assert trim_heap()
print(kept - rss())
"""
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": str(128 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}
    out = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=True)
    assert float(out.stdout.strip().splitlines()[-1]) > 80  # MiB returned by the trim
