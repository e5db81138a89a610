"""Checkpoints: safetensors read/write, reference .pth conversion in a limited child process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from app.domain.mil import FamilyDims, new_abmil
from app.io.checkpoints import import_reference_checkpoint, read_checkpoint, write_checkpoint
from app.io.errors import CheckpointFormatError
from tests.io.conftest import truncate_half

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)


def abmil_state(seed: int = 0) -> dict[str, torch.Tensor]:
    return new_abmil(DIMS, seed).state_dict()


def test_write_is_atomic_and_round_trips(tmp_path: Path) -> None:
    state = abmil_state()
    state["tied"] = state["feat_proj.0.bias"]  # shares storage: must still be writable
    out = write_checkpoint(tmp_path / "m.safetensors", state, {"note": "x", "n": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no temp file left
    back = read_checkpoint(out)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"note": "x", "n": "3"}


def test_safetensors_errors(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "cut.safetensors", abmil_state())
    truncate_half(path)
    with pytest.raises(CheckpointFormatError) as ei:
        read_checkpoint(path)
    assert str(ei.value).startswith("cut.safetensors: cannot read") and "truncated" in str(ei.value)
    assert ei.value.file_name == "cut.safetensors" and str(tmp_path) not in str(ei.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match=r"junk\.safetensors: not a valid safetensors file"):
        read_checkpoint(tmp_path / "junk.safetensors")
    (tmp_path / "w.txt").write_text("weights")
    with pytest.raises(CheckpointFormatError, match=r"uploaded\.txt: not a checkpoint.*\.safetensors, \.pth"):
        read_checkpoint(tmp_path / "w.txt", display_name="uploaded.txt")
    with pytest.raises(CheckpointFormatError, match="not found"):
        read_checkpoint(tmp_path / "missing.pth")


def test_import_reference_pth_equals_original(tmp_path: Path) -> None:
    state = abmil_state(3)
    torch.save({"model": state, "epoch": 7, "c_index": 0.61}, tmp_path / "ref.pth")
    out = tmp_path / "blob"  # store files have no suffix: the format is sniffed from content
    back = import_reference_checkpoint(tmp_path / "ref.pth", out)
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    again = read_checkpoint(out)
    assert all(torch.equal(again[k], state[k]) for k in state)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pth_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": abmil_state(), "hook": _Exploit(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointFormatError) as ei:
        read_checkpoint(tmp_path / "evil.pth", display_name="evil.pth")
    assert str(ei.value).startswith("evil.pth: refusing to load") and "state_dict()" in str(ei.value)
    assert not marker.exists()


def test_a_refused_pth_names_what_it_holds_without_torch_advice_to_load_it_unsafely(tmp_path: Path) -> None:
    import argparse

    torch.save({"model": abmil_state(), "args": argparse.Namespace(lr=1e-4)}, tmp_path / "ref.pth")
    with pytest.raises(CheckpointFormatError) as ei:
        read_checkpoint(tmp_path / "ref.pth", display_name="ref.pth")
    text = str(ei.value)
    assert "it holds an object of type argparse.Namespace" in text and "state_dict()" in text
    assert "\x1b" not in text and "weights_only" not in text and "trust" not in text  # no colours, no unsafe advice


def test_pth_non_tensor_value_names_the_key(tmp_path: Path) -> None:
    torch.save({"model": {**abmil_state(), "step": 5}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointFormatError, match=r"odd\.pth: model\['step'\] is not a tensor"):
        read_checkpoint(tmp_path / "odd.pth")


def test_pth_over_memory_limit(tmp_path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(24 * 2**20)}}, tmp_path / "big.pth")  # 96 MiB of float32
    with pytest.raises(CheckpointFormatError, match=r"big\.pth: loading the checkpoint needs more than the 32 MB"):
        read_checkpoint(tmp_path / "big.pth", memory_mb=32)


def test_pth_timeout(tmp_path: Path) -> None:
    torch.save({"model": abmil_state()}, tmp_path / "slow.pth")
    with pytest.raises(CheckpointFormatError, match=r"slow\.pth: conversion took longer than 0.2 s"):
        read_checkpoint(tmp_path / "slow.pth", timeout_s=0.2)  # the child cannot even import torch in 0.2 s


def test_the_same_tensors_and_metadata_give_the_same_bytes(tmp_path) -> None:
    """safetensors stores metadata in hash order (different on every run); write_checkpoint sorts it, so a
    retrained checkpoint or a re-run merge with the same seed has the same sha256."""
    import hashlib
    import json as json_

    from safetensors import safe_open

    from app.io.checkpoints import write_checkpoint

    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    meta = {f"k{i}": f"value {i} é" for i in range(12)}
    digests = set()
    for i in range(6):
        shuffled = dict(sorted(meta.items(), key=lambda kv: hash((i, kv[0]))))
        path = write_checkpoint(tmp_path / f"c{i}.safetensors", state, shuffled)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        with safe_open(str(path), "pt") as fh:
            assert fh.metadata() == meta and torch.equal(fh.get_tensor("w"), state["w"])
        size = int.from_bytes(path.read_bytes()[:8], "little")
        assert list(json_.loads(path.read_bytes()[8 : 8 + size])["__metadata__"]) == sorted(meta)
    assert len(digests) == 1
