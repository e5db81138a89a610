"""Read the reference code's per-cancer LMDB of bags (SPEC §4), never with the plain pickle module.

Layout: key = slide id (utf-8), value = pickle of a torch tensor [1, N, D] (or [N, D]);
key `__keys__` = pickle of the list of slide ids. Values are decoded by `safe_unpickle.restricted_loads`,
which allows only tensors/arrays and refuses any other global before calling it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch import Tensor

from app.io._bag_formats import RawBag, clean_exc
from app.io.bags import validate_raw_bag
from app.io.errors import BagFormatError, display_name_of
from app.io.safe_unpickle import UnsafePickleError, restricted_loads

KEYS_KEY = b"__keys__"


class LmdbBags:
    """An open LMDB of bags. Use as a context manager; `keys()`, `get(slide_id)`, iteration over ids."""

    def __init__(self, path: str | os.PathLike[str], *, display_name: str | None = None) -> None:
        import lmdb

        self.path = Path(path)
        self.name = display_name_of(self.path, display_name)
        if not self.path.exists():
            raise BagFormatError(f"{self.name}: LMDB not found; upload it or fix the path", file_name=self.name)
        try:
            self.env = lmdb.open(str(self.path), readonly=True, lock=False, subdir=self.path.is_dir(),
                                 readahead=False, max_readers=64)  # fmt: skip
        except lmdb.Error as exc:
            raise BagFormatError(
                f"{self.name}: not a readable LMDB ({clean_exc(exc, self.path, self.name)}); pass the LMDB "
                "directory (holding data.mdb) or its data file",
                file_name=self.name,
            ) from None

    def __enter__(self) -> LmdbBags:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.env.close()

    def _decode(self, raw: bytes, what: str) -> Any:
        try:
            return restricted_loads(raw)
        except UnsafePickleError as exc:
            raise BagFormatError(
                f"{self.name}: {what}: {exc} — values must be pickled tensors only; rebuild the LMDB from "
                "plain tensors",
                file_name=self.name,
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError, AttributeError,
                IndexError, KeyError, MemoryError) as exc:  # fmt: skip
            raise BagFormatError(
                f"{self.name}: {what} is not a valid pickled tensor "
                f"({clean_exc(exc, self.path, self.name)}); "
                "rebuild the LMDB",
                file_name=self.name,
            ) from None

    def keys(self) -> list[str]:
        """Slide ids: the `__keys__` list when present, else every key of the database."""
        with self.env.begin() as txn:
            raw = txn.get(KEYS_KEY)
            if raw is None:
                return [k.decode("utf-8", "replace") for k, _ in txn.cursor() if k != KEYS_KEY]
        ids = self._decode(raw, "key '__keys__'")
        if not isinstance(ids, list | tuple) or not all(isinstance(i, str | bytes) for i in ids):
            raise BagFormatError(f"{self.name}: '__keys__' must be a list of slide ids", file_name=self.name)
        return [i.decode("utf-8") if isinstance(i, bytes) else i for i in ids]

    def get(self, slide_id: str, *, expected_dim: int | None = None, max_patches: int | None = None) -> Tensor:
        """The bag of `slide_id` as float32 [N, D] (a stored [1, N, D] is squeezed)."""
        with self.env.begin() as txn:
            raw = txn.get(slide_id.encode("utf-8"))
        if raw is None:
            raise BagFormatError(
                f"{self.name}: no slide {slide_id!r} in the LMDB; check the pathology_id in the labels",
                file_name=self.name,
            )
        value = self._decode(raw, f"slide {slide_id!r}")
        try:
            return validate_raw_bag(RawBag(value, None), f"{self.name}[{slide_id}]", expected_dim, max_patches).features
        except BagFormatError as exc:
            raise BagFormatError(str(exc), file_name=self.name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


def read_lmdb_bags(
    path: str | os.PathLike[str], *, expected_dim: int | None = None, display_name: str | None = None
) -> dict[str, Tensor]:
    """Every bag of a reference LMDB -> {slide_id: float32 [N, D]} (in `__keys__` order)."""
    with LmdbBags(path, display_name=display_name) as db:
        return {sid: db.get(sid, expected_dim=expected_dim) for sid in db.keys()}


def read_lmdb_bag(
    path: str | os.PathLike[str], slide_id: str, *, expected_dim: int | None = None,
    display_name: str | None = None,
) -> Tensor:  # fmt: skip
    """One bag of a reference LMDB -> float32 [N, D]."""
    with LmdbBags(path, display_name=display_name) as db:
        return db.get(slide_id, expected_dim=expected_dim)
