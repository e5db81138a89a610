"""Model artifacts: save/load round trip with identical predictions; tampering is detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.domain.merging.base import StaticModel
from app.domain.mil import FamilyDims, new_abmil
from app.domain.survival import default_bin_edges
from app.io.artifacts import ARTIFACT_FORMAT, file_sha256, load_any_model, load_model_file, save_model
from app.io.checkpoints import write_checkpoint
from app.io.errors import ArtifactError, CheckpointFormatError

DIMS = FamilyDims(in_dim=16, hidden_dim=8, attn_dim=4, n_bins=4)
EDGES = [0.0, 100.0, 200.0, 300.0, 400.0]


def model(seed: int = 1) -> StaticModel:
    return StaticModel(new_abmil(DIMS, seed).state_dict(), DIMS, EDGES, method="cancer_specific").eval()


def test_round_trip_identical_predictions(tmp_path: Path) -> None:
    original = model()
    sha = save_model(tmp_path / "m.safetensors", original, {"job_id": "j1", "c_index": 0.7})
    assert sha == file_sha256(tmp_path / "m.safetensors") and len(sha) == 64
    loaded = load_model_file(tmp_path / "m.safetensors", expected_sha256=sha)
    assert loaded.sha256 == sha and loaded.provenance == {"job_id": "j1", "c_index": 0.7}
    assert loaded.config["method"] == "cancer_specific" and loaded.config["bin_edges"] == EDGES
    assert not loaded.model.training and loaded.model.dims == DIMS
    bag = torch.randn(7, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(bag).logits, original(bag).logits)
    again = load_any_model(tmp_path / "m.safetensors")
    assert again.sha256 == sha and again.model.bin_edges == EDGES


def test_sha_mismatch_and_tampered_tensor(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    sha = save_model(path, model(), {"job_id": "j1"})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last tensor's bytes (the header is untouched)
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"m\.safetensors: sha256 is .* expected .*modified or corrupted"):
        load_model_file(path, expected_sha256=sha)
    with pytest.raises(ArtifactError, match=r"m\.safetensors: .*does not match its recorded digest"):
        load_model_file(path)


def test_tampered_config_and_non_artifact(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, model(), {})
    data = path.read_bytes()
    tampered = data.replace(b"cancer_specific", b"cancer_specifix", 1)  # same length: header stays valid
    assert tampered != data
    path.write_bytes(tampered)
    with pytest.raises(ArtifactError, match="does not match its recorded digest"):
        load_model_file(path)
    plain = write_checkpoint(tmp_path / "plain.safetensors", new_abmil(DIMS, 2).state_dict())
    with pytest.raises(ArtifactError, match=rf"plain\.safetensors: not a model artifact.*{ARTIFACT_FORMAT}"):
        load_model_file(plain)
    (tmp_path / "garbage").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(ArtifactError, match="garbage: not a readable model artifact"):
        load_model_file(tmp_path / "garbage")


def test_load_any_plain_checkpoints(tmp_path: Path) -> None:
    state = new_abmil(DIMS, 4).state_dict()
    plain = load_any_model(write_checkpoint(tmp_path / "p.safetensors", state))
    assert plain.model.method == "cancer_specific" and plain.model.bin_edges == default_bin_edges(4)
    torch.save({"model": state}, tmp_path / "ref.pth")
    ref = load_any_model(tmp_path / "ref.pth", bin_edges=EDGES)
    bag = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(ref.model(bag).logits, plain.model(bag).logits)
    assert ref.model.bin_edges == EDGES and json.dumps(ref.config)
    with pytest.raises(CheckpointFormatError, match="2 bin edges"):
        load_any_model(tmp_path / "p.safetensors", bin_edges=[0.0, 1.0])
    write_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(2)})
    with pytest.raises(CheckpointFormatError, match=r"x\.safetensors: missing key 'feat_proj.0.weight'"):
        load_any_model(tmp_path / "x.safetensors")
