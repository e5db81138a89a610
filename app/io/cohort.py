"""A cohort directory: labels.csv, optional splits.csv and one bag file per slide.

    <dir>/labels.csv         patient_id, pathology_id, t, e[, project] (app.io.labels)
    <dir>/splits.csv         optional: train, test[, val] columns of patient ids
    <dir>/bags/<pathology_id>.{h5,hdf5,pt,npy,safetensors}   (or the bag files directly in <dir>)
    or, the reference code's layout, one LMDB of every slide's bag (SPEC §4): <dir>/bags.lmdb/ (a directory
    holding data.mdb), or data.mdb in <dir>/bags/ or in <dir> itself; keys = pathology_id.

Without splits.csv every labelled patient is in "train" and "test" is empty (evaluation then needs another
cohort). A patient's bag is the row-wise concatenation of its slides' bags, loaded lazily on access.

`open_cohort(dir, confine_to=root)` (what the service does): every file is resolved, links followed, and must
lie inside `root` (STEPH_DATA_ROOT, or the store's cohort directory) — checked when the cohort is opened and
again before each bag is read, so a file or directory replaced by an outside link later is refused with a
PathEscapeError (a CohortError, 422). Without `confine_to` (the CLI on local files) links are followed freely.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.domain.data import LazySamples, Sample
from app.io.bags import SUPPORTED_BAG_SUFFIXES, Bag, read_bag, read_patient_bag
from app.io.errors import CohortError, InputFileError, display_name_of
from app.io.labels import PatientLabel, read_labels, read_splits
from app.io.safe_paths import confined, is_dir, is_file

LABELS_FILE = "labels.csv"
SPLITS_FILE = "splits.csv"
LMDB_DIR = "bags.lmdb"
SLIDE_SUFFIXES = (".svs", ".ndpi", ".tif", ".tiff", ".mrxs", ".scn", ".vms", ".bif")
MAX_PROBLEMS_SHOWN = 8
FEW_TRAIN_PATIENTS = 30  # below: the promotion gate's folds hold a handful of patients each
FEW_TEST_EVENTS = 10  # below: the held-out C-index comparison is mostly noise


@dataclass
class CohortSummary:
    """What validate() found. patches = per-patient patch counts (all slides together)."""

    patients: int
    events: int
    slides: int
    dim: int | None
    patches: dict[str, float]
    splits: dict[str, int]
    split_events: dict[str, int]
    has_splits: bool
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CohortDir:
    """An opened cohort directory (see the module docstring). Build with `open_cohort`."""

    def __init__(self, root: Path, name: str, labels: list[PatientLabel], splits: dict[str, list[str]] | None,
                 bags_dir: Path, lmdb_path: Path | None = None, confine: Path | None = None) -> None:  # fmt: skip
        self.root, self.name, self.labels, self.bags_dir = root, name, labels, bags_dir
        self.confine = confine  # every file read must resolve inside this directory (None: no check)
        self.has_splits = splits is not None
        self.splits = splits if splits is not None else {"train": [p.patient_id for p in labels], "test": []}
        self.by_id = {p.patient_id: p for p in labels}
        self.lmdb_path = lmdb_path
        self._lmdb_db: Any = None  # opened on first read (see _lmdb)
        if lmdb_path is None:
            self.index, self.duplicates = _index_bags(bags_dir)
        else:
            self.index, self.duplicates = {}, []

    def _lmdb(self) -> Any:
        """The cohort's LMDB, opened read-only once and reused: training reads every patient every epoch."""
        from app.io.lmdb_bags import LmdbBags

        if self._lmdb_db is None:
            assert self.lmdb_path is not None
            if self.confine is not None:
                confined(self.confine, self.lmdb_path / "data.mdb", what=f"{self.name}/{self.lmdb_path.name}")
            self._lmdb_db = LmdbBags(self.lmdb_path, display_name=f"{self.name}/{self.lmdb_path.name}")
        return self._lmdb_db

    def read_patient(self, label: PatientLabel, expected_dim: int | None = None,
                     max_patches: int | None = None) -> Bag:  # fmt: skip
        """The patient's slides read, validated and concatenated row-wise (from files or the LMDB)."""
        if self.lmdb_path is None:
            paths = [self.bag_path(s) for s in label.slide_ids]
            return read_patient_bag(paths, expected_dim=expected_dim, max_patches=max_patches,
                                    display_names=[p.name for p in paths])  # fmt: skip
        db = self._lmdb()
        parts = [db.get(s, expected_dim=expected_dim, max_patches=max_patches) for s in label.slide_ids]
        dims = {int(p.shape[1]) for p in parts}
        if len(dims) > 1:
            raise CohortError(
                f"{self.name}: the slides of patient #{self._position(label)} have different feature sizes "
                f"{sorted(dims)}; all slides must come from the same feature encoder",
                file_name=self.name,
            )
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if max_patches is not None and features.shape[0] > max_patches:
            raise CohortError(
                f"{self.name}: the slides of patient #{self._position(label)} hold {features.shape[0]} patches "
                f"together, more than the limit of {max_patches}; subsample the patches or raise the limit",
                file_name=self.name,
            )
        return Bag(features, None)

    def _position(self, label: PatientLabel) -> int:
        """1-based position of the patient in labels.csv (error messages name positions, not patient ids)."""
        return next((i + 1 for i, p in enumerate(self.labels) if p is label), 0)

    def bag_path(self, slide_id: str) -> Path:
        """The bag file of `slide_id` (pathology_id; a suffix like .svs is ignored). CohortError if none."""
        path = self.index.get(slide_id)
        if path is None:
            stem, suffix = os.path.splitext(slide_id)
            path = self.index.get(stem) if suffix.lower() in SLIDE_SUFFIXES else None
        if path is None:
            where = "bags/" if self.bags_dir != self.root else "the cohort directory"
            raise CohortError(
                f"{self.name}: no bag file for pathology_id {slide_id!r} (looked for {slide_id}"
                f"{{{','.join(SUPPORTED_BAG_SUFFIXES)}}} in {where}); add the bag or fix {LABELS_FILE}",
                file_name=self.name,
            )
        if self.confine is not None:
            confined(self.confine, path, what=f"{self.name}/{path.name}")
        return path

    def split_problems(self) -> list[str]:
        """Patients named in splits.csv that labels.csv does not know."""
        out = []
        for split, ids in self.splits.items():
            unknown = [p for p in ids if p not in self.by_id]
            if unknown:
                shown = ", ".join(repr(p) for p in unknown[:5]) + (" …" if len(unknown) > 5 else "")
                out.append(f"{SPLITS_FILE}: {len(unknown)} patient(s) of split {split!r} are not in "
                           f"{LABELS_FILE}: {shown}")  # fmt: skip
        return out

    def patients(self, split: str | None = None) -> list[PatientLabel]:
        """Labelled patients of `split` (None = all, labels order). CohortError: unknown split or patients."""
        if split is None:
            return list(self.labels)
        if split not in self.splits:
            if split in ("train", "val", "test"):
                return []
            raise CohortError(
                f"{self.name}: unknown split {split!r}; available: {', '.join(self.splits)}",
                file_name=self.name,
            )
        problems = self.split_problems()
        if problems:
            raise CohortError(f"{self.name}: {problems[0]}; fix {SPLITS_FILE}", file_name=self.name)
        return [self.by_id[p] for p in self.splits[split]]

    def samples(self, split: str | None = None, expected_dim: int | None = None,
                max_patches: int | None = None) -> CohortSamples:  # fmt: skip
        """A lazy Sequence[Sample] of `split`: each access reads and concatenates the patient's slides."""
        return CohortSamples(self, self.patients(split), expected_dim, max_patches)

    def unreferenced_bag_files(self) -> list[Path]:
        """Bag files (not an LMDB) that no slide of labels.csv names."""
        if self.lmdb_path is not None:
            return []
        used = {Path(self.bag_path(s)) for p in self.labels for s in p.slide_ids}
        return [path for path in self.index.values() if path not in used]

    def validate(self, expected_dim: int | None = None) -> CohortSummary:
        """Read every bag; raise one CohortError listing ALL problems found, else return the summary."""
        problems = self.split_problems()
        train = [self.by_id[p] for p in self.splits.get("train", []) if p in self.by_id]
        if train and not any(p.event for p in train):
            problems.append(
                f"none of the {len(train)} patient(s) of the 'train' split has an event (every e is 0): a survival "
                "model cannot learn from censored follow-up alone; check column e of labels.csv (1 = event observed)"
            )
        problems += [f"slide {sid!r} has several bag files: {', '.join(names)}" for sid, names in self.duplicates]
        counts, dims = self._scan_bags(expected_dim, problems)
        if len(dims) > 1:
            shown = ", ".join(f"D = {d} ({n} slides)" for d, n in dims.most_common())
            problems.append(f"the bags do not share one feature size: {shown}; use one encoder for every slide")
        if problems:
            head = "; ".join(f"{i + 1}) {p}" for i, p in enumerate(problems[:MAX_PROBLEMS_SHOWN]))
            more = f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
            raise CohortError(
                f"{self.name}: {len(problems)} problem(s) found: {head}{more}. Fix them and upload the cohort again",
                file_name=self.name,
            )
        return self._summary(counts, dims)

    def _scan_bags(self, expected_dim: int | None, problems: list[str]) -> tuple[dict[str, int], Counter]:
        if self.lmdb_path is not None:
            return self._scan_lmdb(expected_dim, problems)
        counts: dict[str, int] = {}
        dims: Counter = Counter()
        for label in self.labels:
            total = 0
            for sid in label.slide_ids:
                try:
                    bag = read_bag(self.bag_path(sid), expected_dim=expected_dim)
                except InputFileError as exc:
                    problems.append(str(exc).removeprefix(f"{self.name}: "))
                    continue
                dims[bag.dim] += 1
                total += bag.n_patches
            counts[label.patient_id] = total
        return counts, dims

    def _scan_lmdb(self, expected_dim: int | None, problems: list[str]) -> tuple[dict[str, int], Counter]:

        counts: dict[str, int] = {}
        dims: Counter = Counter()
        db = self._lmdb()
        self.lmdb_keys = db.keys()
        for label in self.labels:
            total = 0
            for sid in label.slide_ids:
                try:
                    features = db.get(sid, expected_dim=expected_dim)
                except InputFileError as exc:
                    problems.append(str(exc).removeprefix(f"{self.name}/"))
                    continue
                dims[int(features.shape[1])] += 1
                total += int(features.shape[0])
            counts[label.patient_id] = total
        return counts, dims

    def _summary(self, counts: dict[str, int], dims: Counter) -> CohortSummary:
        values = list(counts.values())
        split_events = {s: sum(self.by_id[p].event for p in ids) for s, ids in self.splits.items()}
        warnings = []
        if self.has_splits:
            in_split = {p for ids in self.splits.values() for p in ids}
            spare = [p.patient_id for p in self.labels if p.patient_id not in in_split]
            if spare:
                warnings.append(f"{len(spare)} labelled patient(s) are in no split and are not used")
        else:
            warnings.append(f"no {SPLITS_FILE}: every patient is in 'train' and 'test' is empty")
        if self.splits.get("test") and split_events.get("test", 0) == 0:
            warnings.append("the test split has no events: its C-index is undefined")
        elif self.splits.get("test") and split_events.get("test", 0) < FEW_TEST_EVENTS:
            warnings.append(
                f"the test split has only {split_events['test']} event(s): the held-out comparison will be "
                "too noisy to tell models apart"
            )
        n_train = len(self.splits.get("train", []))
        if 0 < n_train < FEW_TRAIN_PATIENTS:
            warnings.append(
                f"only {n_train} train patients: merge jobs train on these and the promotion gate validates on "
                f"folds of them; below {FEW_TRAIN_PATIENTS} its verdict rests on very few pairs"
            )
        if self.lmdb_path is None:
            unused = [p.name for p in self.unreferenced_bag_files()]
        else:
            referenced = {s for p in self.labels for s in p.slide_ids}
            unused = [k for k in getattr(self, "lmdb_keys", []) if k not in referenced]
        if unused:
            warnings.append(f"{len(unused)} bag(s) are not referenced by {LABELS_FILE}, e.g. {unused[0]!r}")
        patches = {"min": min(values), "median": float(statistics.median(values)), "max": max(values),
                   "total": sum(values)} if values else {}  # fmt: skip
        return CohortSummary(
            patients=len(self.labels), events=sum(p.event for p in self.labels),
            slides=sum(len(p.slide_ids) for p in self.labels), dim=next(iter(dims), None), patches=patches,
            splits={s: len(ids) for s, ids in self.splits.items()}, split_events=split_events,
            has_splits=self.has_splits, warnings=warnings,
        )  # fmt: skip


class CohortSamples(LazySamples):
    """Lazy Sequence[Sample]: patient i's slides are read (and concatenated) on every access."""

    def __init__(self, cohort: CohortDir, patients: list[PatientLabel], expected_dim: int | None,
                 max_patches: int | None) -> None:  # fmt: skip
        self.cohort, self.labels = cohort, patients
        self.items = self.labels
        self.expected_dim, self.max_patches = expected_dim, max_patches

    @property
    def patient_ids(self) -> list[str]:
        return [p.patient_id for p in self.labels]

    def _load(self, label: PatientLabel) -> Sample:
        bag = self.cohort.read_patient(label, self.expected_dim, self.max_patches)
        return Sample(label.patient_id, bag.features, label.time, label.event)


def _index_bags(bags_dir: Path) -> tuple[dict[str, Path], list[tuple[str, list[str]]]]:
    """{slide id (file name minus its bag suffix): path}, plus slides that have several bag files."""
    index: dict[str, Path] = {}
    seen: dict[str, list[str]] = {}
    try:
        entries = sorted(bags_dir.iterdir())
    except OSError:
        raise CohortError(f"{bags_dir.name}: the bag directory cannot be listed; check its permissions",
                          file_name=bags_dir.name) from None  # fmt: skip
    for path in entries:
        suffix = path.suffix.lower()
        if suffix in SUPPORTED_BAG_SUFFIXES and is_file(path):
            stem = path.name[: -len(suffix)]
            index.setdefault(stem, path)
            seen.setdefault(stem, []).append(path.name)
    return index, [(s, names) for s, names in seen.items() if len(names) > 1]


def open_cohort(directory: str | os.PathLike[str], *, display_name: str | None = None,
                confine_to: str | os.PathLike[str] | None = None) -> CohortDir:  # fmt: skip
    """Open a cohort directory: read labels.csv (and splits.csv when present) and index the bag files.

    Raises CohortError when the directory or labels.csv is missing; LabelError for malformed CSVs;
    PathEscapeError (a CohortError) when `confine_to` is given and a path resolves outside it.
    """
    root = Path(directory)
    name = display_name_of(root, display_name)
    confine = Path(confine_to) if confine_to is not None else None
    if confine is not None:
        root = confined(confine, root, what=name)
    if not is_dir(root):
        raise CohortError(f"{name}: cohort directory not found; upload the cohort again", file_name=name)
    if not is_file(root / LABELS_FILE):
        raise CohortError(
            f"{name}: no {LABELS_FILE}; a cohort needs {LABELS_FILE} (patient_id, pathology_id, t, e) next to its bags",
            file_name=name,
        )
    has_splits, bags_dir = is_file(root / SPLITS_FILE), root / "bags" if is_dir(root / "bags") else root
    if confine is not None:
        for path in (root / LABELS_FILE, *([root / SPLITS_FILE] if has_splits else []), bags_dir):
            confined(confine, path, what=f"{name}/{path.relative_to(root)}")
    labels = read_labels(root / LABELS_FILE)
    splits = read_splits(root / SPLITS_FILE) if has_splits else None
    return CohortDir(root, name, labels, splits, bags_dir, _find_lmdb(root, bags_dir), confine)


def _find_lmdb(root: Path, bags_dir: Path) -> Path | None:
    """The cohort's LMDB directory (bags.lmdb/, or bags/ or the root holding data.mdb), None for bag files."""
    for candidate in (root / LMDB_DIR, bags_dir):
        if is_file(candidate / "data.mdb"):
            return candidate
    return None
