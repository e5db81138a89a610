"""LRU cache of loaded merged models, keyed by artifact sha256 (content address).

A prediction request looks the model up here: the artifact is read, its sha256 verified and the model
rebuilt only on a miss; later requests reuse the in-memory module (eval mode), on the prediction device
(STEPH_PREDICT_DEVICE: resolve_predict_device). Thread-safe; one per context. After a miss the free top of the
C heap is given back to the OS (`trim_heap`): `steph serve` keeps up to 128 MiB of freed heap for the next
request's bag, and after a load that slack is the loader's buffers (BENCHMARKS.md "Predict under load").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from app.io.limits import trim_heap
from app.services.errors import ServiceUnavailable
from app.storage.store import StoreError


def resolve_predict_device(settings: Any) -> Any:
    """torch.device of the prediction forwards: settings.predict_device "auto" → cuda when this process sees a
    GPU, else cpu. A "cuda" setting without a visible GPU raises ServiceUnavailable naming the fix (the service
    checks it at start-up, so a misconfigured server does not start)."""
    from app.domain.training import resolve_device

    name = str(getattr(settings, "predict_device", "auto"))
    try:
        return resolve_device(name)
    except ValueError:
        raise ServiceUnavailable(
            f"STEPH_PREDICT_DEVICE={name} but this process sees no CUDA GPU (check the driver, the container's GPU "
            "access and CUDA_VISIBLE_DEVICES), or set STEPH_PREDICT_DEVICE=cpu or auto"
        ) from None


class ModelCache:
    """get(sha256) -> LoadedModel (model, config, provenance); at most `capacity` models kept (LRU)."""

    def __init__(self, store: Any, capacity: int = 8, device: Any = "cpu") -> None:
        self.store = store
        self.device = device  # every cached model lives there (moved once, at load)
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self.loads = 0  # number of artifact reads (misses), for tests and metrics

    def __len__(self) -> int:
        return len(self._items)

    def get(self, sha256: str) -> Any:
        with self._lock:
            if sha256 in self._items:
                self._items.move_to_end(sha256)
                return self._items[sha256]
            load_lock = self._load_locks.setdefault(sha256, threading.Lock())
        with load_lock:  # one load per sha256 even under concurrent requests
            with self._lock:
                if sha256 in self._items:
                    return self._items[sha256]
            loaded = self._load(sha256)
            with self._lock:
                self._items[sha256] = loaded
                self._items.move_to_end(sha256)
                evicted = [self._items.popitem(last=False) for _ in range(len(self._items) - self.capacity)]
                self._load_locks.pop(sha256, None)
            del evicted  # an evicted model's tensors are freed here unless a request still uses it
            trim_heap()  # issue 7: the loader's freed buffers (and an evicted model) go back to the OS
            return loaded

    def _load(self, sha256: str) -> Any:
        from app.io.artifacts import load_model_file

        path = Path(self.store.path(sha256))
        if not path.is_file():
            raise StoreError(f"model artifact {sha256[:12]}… is missing from the store; restore it from a backup")
        # hashes the file once and refuses a mismatch (ArtifactError: "modified or corrupted")
        loaded = load_model_file(path, expected_sha256=sha256, display_name=f"model-{sha256[:12]}")
        loaded.model.to(self.device).eval()
        self.loads += 1
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHES_LOCK = threading.Lock()


def get_model_cache(ctx: Any) -> ModelCache:
    """The context's model cache (ctx.extras["model_cache"]), sized by settings.model_cache_size, on the
    prediction device (resolve_predict_device)."""
    with _CACHES_LOCK:
        cache = ctx.extras.get("model_cache")
        if cache is None or cache.store is not ctx.store:
            size = int(getattr(ctx.settings, "model_cache_size", 8))
            device = resolve_predict_device(ctx.settings)
            cache = ctx.extras["model_cache"] = ModelCache(ctx.store, size, device)
        return cache
