"""GET /methods: the registered merge methods with their parameter schemas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import PredictKey
from app.schemas.resources import MethodList, MethodOut

router = APIRouter(tags=["methods"])


@router.get("/methods", response_model=MethodList, summary="Merge methods and their parameters")
def list_methods(_key: PredictKey) -> MethodList:
    from app.domain.merging.registry import list_methods as registered

    try:
        from app.domain.pipeline import TRAIN_KEYS
    except ImportError:
        TRAIN_KEYS = ()
    items = []
    for d in registered():
        fields: dict[str, Any] = {k: d.get(k) for k in ("name", "paper", "summary", "learned")}
        items.append(MethodOut(**fields, params=d.get("params") or []))
    return MethodList(items=items, train_params=list(TRAIN_KEYS))
