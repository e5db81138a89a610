"""What to score: a folder of bag files (one patient per file, id = file stem) or a manifest CSV.

Manifest CSV columns `patient_id, path` (header required); several rows for one patient = several slides,
pooled by the server into one prediction. Relative paths are taken relative to the manifest's folder.

A folder scan also reports the files it skipped because they are not bags (another suffix, or hidden), and
`input_problem` says, before anything is sent, why a patient cannot be scored: a patient id with a control
character (it could not be written to, and read back from, a one-line-per-row output), a missing file, a broken
symbolic link, a file that is empty, not a regular file or not readable.
"""

from __future__ import annotations

import csv
import os
import stat
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Same list as the engine's app.io.bags.SUPPORTED_BAG_SUFFIXES, duplicated so the client needs no server code.
SUPPORTED_BAG_SUFFIXES = (".h5", ".hdf5", ".pt", ".npy", ".safetensors")
_CONTROL_NAMES = {"\n": "newline", "\r": "carriage return", "\t": "tab", "\x00": "NUL", "\x1b": "escape"}


class InputError(ValueError):
    """The input folder or manifest cannot be used (exit code 2); the message says how to fix it."""


@dataclass(frozen=True)
class PatientInput:
    """One patient to score: its id and its slides' bag files (1 or more)."""

    patient_id: str
    files: tuple[Path, ...]

    def files_text(self) -> str:
        return ";".join(str(f) for f in self.files)


def is_control(ch: str) -> bool:
    """C0/C1 control characters and DEL (Unicode category Cc), plus the line / paragraph separators."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (\\n, \\t, \\x1b, \\u2028): one visible line."""
    out = []
    for ch in text:
        if not is_control(ch):
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def patient_id_problem(patient_id: str) -> str | None:
    """Why this patient id cannot be written to an output (None when it can)."""
    found = list(dict.fromkeys(ch for ch in patient_id if is_control(ch)))
    if not found:
        return None
    names = ", ".join(_CONTROL_NAMES.get(ch, f"U+{ord(ch):04X}") for ch in found)
    return (
        f"patient id '{printable(patient_id)}' contains a control character ({names}); "
        "rename the file or fix the manifest"
    )


def file_problem(path: Path) -> str | None:
    """Why this bag file cannot be sent (None when it can): missing, broken link, not a file, empty, unreadable."""
    name = printable(path.name)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"{name} is a broken symbolic link (its target {printable(os.readlink(path))} does not exist)"
        return f"file not found: {name}"
    except OSError as exc:  # a symlink loop, a folder we may not enter, …
        return f"cannot read {name}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file"
    if st.st_size == 0:
        return f"{name}: the file is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return f"cannot read {name}: permission denied"
    return None


def input_problem(patient: PatientInput) -> str | None:
    """Why this patient is not scored (None when it can be sent): its id first, then each of its files."""
    id_problem = patient_id_problem(patient.patient_id)
    if id_problem:
        return id_problem
    problems = [p for p in map(file_problem, patient.files) if p]
    return "; ".join(problems) or None


def looks_like_bag(path: Path) -> bool:
    """A bag by name: a supported suffix, not hidden (whether it is a readable file is checked later)."""
    return path.suffix.lower() in SUPPORTED_BAG_SUFFIXES and not path.name.startswith(".")


def scan_folder(folder: Path) -> tuple[list[PatientInput], list[Path]]:
    """Every bag file under `folder` (recursive), sorted by patient id, and the files skipped as not bags.

    A bag-looking name that is a broken link or an unreadable file is kept (scoring records it as a failure);
    folders are searched, not reported; duplicate stems are an error."""
    found: dict[str, Path] = {}
    duplicates: list[str] = []
    not_bags: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        if not looks_like_bag(path):
            not_bags.append(path)
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
    return [PatientInput(pid, (path,)) for pid, path in sorted(found.items())], not_bags


def relative_names(paths: list[Path], root: Path) -> list[str]:
    """The paths relative to `root` (posix, control characters escaped), for messages."""
    return [printable(p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)) for p in paths]


def names_text(names: list[str], limit: int = 5) -> str:
    """ "a.txt, sub/b.csv, …": at most `limit` names."""
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


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


def scan_inputs(source: Path) -> tuple[list[PatientInput], list[Path]]:
    """A directory → `scan_folder` (patients and the non-bag files skipped); a `.csv` file → `read_manifest`."""
    if source.is_dir():
        patients, not_bags = scan_folder(source)
        if not patients:
            others = f" (only other files: {names_text(relative_names(not_bags, source))})" if not_bags else ""
            raise InputError(f"no bag files ({', '.join(SUPPORTED_BAG_SUFFIXES)}) found under {source}{others}")
        return patients, not_bags
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_manifest(source), []
    if not source.exists():
        raise InputError(f"input {source} does not exist: give a folder of bag files or a manifest CSV")
    raise InputError(f"input {source} is neither a folder nor a .csv manifest (patient_id,path)")
