"""The merge methods, by name (an explicit literal tuple), and loading any saved model by its config."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from app.domain.merging.auto import AutoMethod
from app.domain.merging.base import MergeMethod, SurvivalModel
from app.domain.merging.ensemble import EnsembleMethod
from app.domain.merging.learned import LearnedWeightsMethod
from app.domain.merging.routing import RoutingMethod
from app.domain.merging.static import AverageMethod, TaskArithmeticMethod, TiesMethod, load_static
from app.domain.merging.steph import StephMethod

METHODS: dict[str, MergeMethod] = {
    method.name: method
    for method in (
        StephMethod(),
        AverageMethod(),
        TaskArithmeticMethod(),
        TiesMethod(),
        LearnedWeightsMethod(),
        RoutingMethod(),
        EnsembleMethod(),
        AutoMethod(),
    )
}

# Models that are one plain ABMIL (reference-layout state dict) without a merge method of their own.
PLAIN_MODELS = ("cancer_specific",)


class UnknownMethodError(ValueError):
    """A method name that is not registered. `.name` is the bad name, `.known` the registered ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(f"unknown merge method {name!r}; known methods: {', '.join(known)}")


def get_method(name: str) -> MergeMethod:
    """The registered method called `name`; UnknownMethodError (listing the known names) otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(name, list(METHODS)) from None


def list_methods() -> list[dict[str, Any]]:
    """describe() of every method: name, paper, summary, learned, params schema."""
    return [method.describe() for method in METHODS.values()]


def load_model(tensors: dict[str, Tensor], config: dict[str, Any]) -> SurvivalModel:
    """Rebuild a model from artifact_tensors() and artifact_config(), dispatching on config["method"].

    "cancer_specific" (and any static merge) is a plain ABMIL; the learned methods rebuild their own modules.
    Raises ValueError when the config has no method, UnknownMethodError when the method is not known.
    """
    if not isinstance(config, dict) or "method" not in config:
        raise ValueError("model config has no 'method'; it is not a model artifact written by this service")
    name = config["method"]
    if name in PLAIN_MODELS:
        return load_static(tensors, config)
    if name not in METHODS:
        raise UnknownMethodError(name, [*METHODS, *PLAIN_MODELS])
    return METHODS[name].load(tensors, config)
