"""read_bag / read_patient_bag: every format round-trips; every bad file gives a clear BagFormatError."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from app.io.bags import SUPPORTED_BAG_SUFFIXES, read_bag, read_patient_bag
from app.io.errors import BagFormatError, InputFileError
from tests.io.conftest import D, make_features, truncate_half, write_bag

FORMATS = (".h5", ".pt", ".npy", ".safetensors")


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    feats = make_features(5)
    coords = np.arange(10, dtype=np.int32).reshape(5, 2) * 256
    path = write_bag(tmp_path / f"slide{suffix}", feats, None if suffix == ".npy" else coords)
    bag = read_bag(path, expected_dim=D)
    assert bag.features.dtype == torch.float32 and bag.features.shape == (5, D)
    assert torch.equal(bag.features, torch.from_numpy(feats))
    if suffix != ".npy":
        assert bag.coords is not None and bag.coords.dtype == torch.int64
        assert bag.coords[4].tolist() == [2048, 2304]


def test_rank3_float16_and_bare_tensor(tmp_path: Path) -> None:
    feats = make_features(3)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("features", data=feats[None].astype(np.float16))
    bag = read_bag(tmp_path / "a.h5")
    assert bag.features.shape == (3, D) and bag.features.dtype == torch.float32
    assert torch.allclose(bag.features, torch.from_numpy(feats), atol=1e-2)
    torch.save(torch.from_numpy(feats), tmp_path / "b.pt")
    assert torch.equal(read_bag(tmp_path / "b.pt").features, torch.from_numpy(feats))


def check_error(exc_info: pytest.ExceptionInfo, name: str, *needles: str) -> str:
    msg = str(exc_info.value)
    assert isinstance(exc_info.value, BagFormatError)
    assert exc_info.value.file_name == name and exc_info.value.path_name == name
    assert msg.startswith(name), msg
    for needle in needles:
        assert needle in msg, msg
    return msg


@pytest.mark.parametrize("suffix", FORMATS)
def test_wrong_dim(tmp_path: Path, suffix: str) -> None:
    path = write_bag(tmp_path / f"s{suffix}", make_features(4, d=8))
    with pytest.raises(BagFormatError) as ei:
        read_bag(path, expected_dim=D)
    check_error(ei, f"s{suffix}", "D = 8", f"expected D = {D}")


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated(tmp_path: Path, suffix: str) -> None:
    path = truncate_half(write_bag(tmp_path / f"cut{suffix}", make_features(64)))
    with pytest.raises(BagFormatError) as ei:
        read_bag(path, expected_dim=D)
    msg = check_error(ei, f"cut{suffix}")
    assert "truncated" in msg or "corrupt" in msg
    assert str(tmp_path) not in msg


def test_nan_and_inf_are_counted(tmp_path: Path) -> None:
    feats = make_features(6)
    feats[0, :3] = np.nan
    feats[2, 1] = np.inf
    with pytest.raises(BagFormatError) as ei:
        read_bag(write_bag(tmp_path / "nan.h5", feats))
    check_error(ei, "nan.h5", "3 NaN", "1 Inf")


def test_empty_bag(tmp_path: Path) -> None:
    with pytest.raises(BagFormatError) as ei:
        read_bag(write_bag(tmp_path / "empty.safetensors", np.zeros((0, D), np.float32)))
    check_error(ei, "empty.safetensors", "empty", "N = 0")


def test_missing_key_lists_keys(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f.create_dataset("feats", data=make_features(2))
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "k.h5")
    check_error(ei, "k.h5", "no `features`", "'feats'")
    torch.save({"x": torch.zeros(2, D)}, tmp_path / "k.pt")
    with pytest.raises(BagFormatError, match=r"k\.pt: no `features`.*'x'"):
        read_bag(tmp_path / "k.pt")


def test_wrong_rank_and_too_many_patches(tmp_path: Path) -> None:
    np.save(tmp_path / "r.npy", np.zeros((2, 3, D), np.float32))
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "r.npy")
    check_error(ei, "r.npy", "[2, 3, 16]", "[N, D]")
    path = write_bag(tmp_path / "big.h5", make_features(10))
    with pytest.raises(BagFormatError) as ei:
        read_bag(path, max_patches=9)
    check_error(ei, "big.h5", "10 patches", "limit of 9")
    assert read_bag(path, max_patches=10).n_patches == 10


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "bag.csv").write_text("1,2\n")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "bag.csv")
    check_error(ei, "bag.csv", "'.csv'", *SUPPORTED_BAG_SUFFIXES)


def test_garbled_h5_and_no_suffix_sniffing(tmp_path: Path) -> None:
    (tmp_path / "g.h5").write_bytes(os.urandom(512))
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "g.h5")
    check_error(ei, "g.h5", "h5")
    stored = write_bag(tmp_path / "x.h5", make_features(3))
    blob = stored.rename(tmp_path / "0a1b2c")  # a content-addressed store file has no suffix
    assert read_bag(blob, display_name="upload").n_patches == 3


def test_pickled_npy_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "obj.npy")
    check_error(ei, "obj.npy", "refusing", "pickle")


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pt_with_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"features": torch.zeros(2, D), "x": _Exploit(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "evil.pt", display_name="evil.pt")
    check_error(ei, "evil.pt", "refusing")
    assert not marker.exists()


def test_dtypes_and_coords_mismatch(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.ones((2, D), np.complex64))
    with pytest.raises(BagFormatError, match=r"c\.npy: features"):
        read_bag(tmp_path / "c.npy")
    np.save(tmp_path / "i.npy", np.arange(2 * D, dtype=np.int16).reshape(2, D))
    with pytest.raises(BagFormatError, match=r"i\.npy: features are integers \(dtype int16\).*float32"):
        read_bag(tmp_path / "i.npy")  # a quantised or mis-saved export would score without meaning
    np.save(tmp_path / "b.npy", np.ones((2, D), bool))
    with pytest.raises(BagFormatError, match=r"b\.npy: features are booleans"):
        read_bag(tmp_path / "b.npy")
    np.save(tmp_path / "be.npy", make_features(2).astype(">f8"))
    assert torch.allclose(read_bag(tmp_path / "be.npy").features, torch.from_numpy(make_features(2)))
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("features", data=np.array([[b"a", b"b"]]))
    with pytest.raises(BagFormatError, match=r"s\.h5: features are not numbers"):
        read_bag(tmp_path / "s.h5")
    path = write_bag(tmp_path / "m.h5", make_features(4), np.zeros((3, 2), np.int64))
    with pytest.raises(BagFormatError) as ei:
        read_bag(path)
    check_error(ei, "m.h5", "3 rows", "4 patches")


def test_display_name_hides_server_path(tmp_path: Path) -> None:
    path = write_bag(tmp_path / "tmp123.npy", make_features(2, d=4))
    with pytest.raises(InputFileError) as ei:
        read_bag(path, expected_dim=D, display_name="my_slide.npy")
    assert ei.value.file_name == "my_slide.npy" and str(tmp_path) not in str(ei.value)
    with pytest.raises(BagFormatError) as ei:
        read_bag(path, expected_dim=D, display_name=str(path))
    assert ei.value.file_name == "tmp123.npy"


def test_patient_bag_concatenates(tmp_path: Path) -> None:
    a, b = make_features(3, seed=1), make_features(5, seed=2)
    ca, cb = np.zeros((3, 2), np.int64), np.ones((5, 2), np.int64)
    paths = [write_bag(tmp_path / "a.h5", a, ca), write_bag(tmp_path / "b.safetensors", b, cb)]
    bag = read_patient_bag(paths, expected_dim=D)
    assert torch.equal(bag.features, torch.from_numpy(np.concatenate([a, b])))
    assert bag.coords is not None and bag.coords.sum().item() == 10
    paths.append(write_bag(tmp_path / "c.npy", make_features(2)))
    assert read_patient_bag(paths).coords is None
    with pytest.raises(BagFormatError, match=r"limit of 9"):
        read_patient_bag(paths, max_patches=9)
    odd = write_bag(tmp_path / "d.npy", make_features(2, d=8))
    with pytest.raises(BagFormatError) as ei:
        read_patient_bag([paths[0], odd])
    check_error(ei, "d.npy", "D = 8", "'a.h5'", "D = 16")


def test_declared_sizes_are_not_trusted(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "hollow.h5", "w") as f:
        f.create_dataset("features", shape=(1000, D), dtype="f4")  # declared, never written
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "hollow.h5")
    check_error(ei, "hollow.h5", "declares 64000 bytes", "only 0")
    with h5py.File(tmp_path / "bomb.h5", "w") as f:  # gzip: a tiny file declaring a huge array
        f.create_dataset("features", shape=(10**6, D), dtype="f4", chunks=(1000, D), compression="gzip")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "bomb.h5", max_bytes=2**20)
    check_error(ei, "bomb.h5", "needs 61.0 MiB", "more than the per-request limit of 1.0 MiB")
    torch.save({"features": torch.zeros(1000, D)}, tmp_path / "big.pt")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "big.pt", max_bytes=10_000)
    check_error(ei, "big.pt", "more than the per-request limit", "STEPH_REQUEST_MEMORY_MB")
    with pytest.raises(BagFormatError) as ei:  # the same bomb within the limits: its chunks were never written
        read_bag(tmp_path / "bomb.h5")
    check_error(ei, "bomb.h5", "declares 64000000 bytes", "stores only 0")


def test_h5_data_outside_the_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(make_features(4).tobytes())
    with h5py.File(tmp_path / "ext.h5", "w") as f:  # raw external storage pointing at a server file
        f.create_dataset("features", shape=(4, D), dtype="f4", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "ext.h5")
    check_error(ei, "ext.h5", "outside the file")
    write_bag(tmp_path / "other.h5", make_features(4))
    with h5py.File(tmp_path / "link.h5", "w") as f:
        f["features"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/features")
    with pytest.raises(BagFormatError) as ei:
        read_bag(tmp_path / "link.h5")
    check_error(ei, "link.h5", "outside the file")


def test_h5_compact_layout_is_accepted(tmp_path: Path) -> None:
    feats = make_features(2)
    with h5py.File(tmp_path / "compact.h5", "w") as f:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        space = h5py.h5s.create_simple(feats.shape)
        dsid = h5py.h5d.create(f.id, b"features", h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, feats)
    assert torch.equal(read_bag(tmp_path / "compact.h5").features, torch.from_numpy(feats))


def test_h5_soft_link_to_external_link_is_refused(tmp_path: Path) -> None:
    write_bag(tmp_path / "other.h5", make_features(4))
    with h5py.File(tmp_path / "soft.h5", "w") as f:
        f["hidden"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/features")
        f["features"] = h5py.SoftLink("/hidden")
    with pytest.raises(BagFormatError, match=r"soft\.h5: dataset `features` refers to data outside the file"):
        read_bag(tmp_path / "soft.h5")
