"""What to score: a folder of bag files (one patient per file, id = file stem) or a manifest CSV.

Manifest CSV columns `patient_id, path` (header required); several rows for one patient = several slides,
pooled by the server into one prediction. Relative paths are taken relative to the manifest's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# Same list as the engine's app.io.bags.SUPPORTED_BAG_SUFFIXES, duplicated so the client needs no server code.
SUPPORTED_BAG_SUFFIXES = (".h5", ".hdf5", ".pt", ".npy", ".safetensors")


class InputError(ValueError):
    """The input folder or manifest cannot be used (exit code 2); the message says how to fix it."""


@dataclass(frozen=True)
class PatientInput:
    """One patient to score: its id and its slides' bag files (1 or more)."""

    patient_id: str
    files: tuple[Path, ...]

    def files_text(self) -> str:
        return ";".join(str(f) for f in self.files)


def is_bag_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUPPORTED_BAG_SUFFIXES and not path.name.startswith(".")


def discover_folder(folder: Path) -> list[PatientInput]:
    """Every bag file under `folder` (recursive), sorted by patient id; duplicate stems are an error."""
    found: dict[str, Path] = {}
    duplicates: list[str] = []
    for path in sorted(folder.rglob("*")):
        if not is_bag_file(path):
            continue
        if path.stem in found:
            duplicates.append(f"{found[path.stem]} and {path}")
        found.setdefault(path.stem, path)
    if duplicates:
        raise InputError(
            "several bag files share a patient id (file stem): "
            + "; ".join(duplicates[:5])
            + ". Use a manifest CSV (patient_id,path) to say which slides belong to which patient."
        )
    return [PatientInput(pid, (path,)) for pid, path in sorted(found.items())]


def read_manifest(manifest: Path) -> list[PatientInput]:
    """Parse a `patient_id,path` CSV; rows of one patient are grouped in first-appearance order."""
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "patient_id" not in fields or "path" not in fields:
            raise InputError(f"manifest {manifest.name} needs a header patient_id,path, got {fields or 'none'}")
        reader.fieldnames = fields
        grouped: dict[str, list[Path]] = {}
        for line_no, row in enumerate(reader, start=2):
            pid, raw_path = (row.get("patient_id") or "").strip(), (row.get("path") or "").strip()
            if not pid and not raw_path:
                continue
            if not pid or not raw_path:
                raise InputError(f"manifest {manifest.name} line {line_no}: both patient_id and path are required")
            path = Path(raw_path).expanduser()
            grouped.setdefault(pid, []).append(path if path.is_absolute() else manifest.parent / path)
    if not grouped:
        raise InputError(f"manifest {manifest.name} lists no patients")
    return [PatientInput(pid, tuple(files)) for pid, files in grouped.items()]


def load_inputs(source: Path) -> list[PatientInput]:
    """A directory → `discover_folder`; a `.csv` file → `read_manifest`."""
    if source.is_dir():
        patients = discover_folder(source)
        if not patients:
            raise InputError(f"no bag files ({', '.join(SUPPORTED_BAG_SUFFIXES)}) found under {source}")
        return patients
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_manifest(source)
    if not source.exists():
        raise InputError(f"input {source} does not exist: give a folder of bag files or a manifest CSV")
    raise InputError(f"input {source} is neither a folder nor a .csv manifest (patient_id,path)")
