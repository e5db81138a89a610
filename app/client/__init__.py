"""STEPH hospital integration client: a small SDK (`Client`) and the `steph-client` command.

Depends only on httpx, tqdm and the standard library — never on the server (torch, FastAPI, SQLAlchemy).

    from app.client import Client
    with Client("http://localhost:8000", api_key) as client:
        [pred] = client.predict(model_id, "slides/P001.h5")
        print(pred.risk, pred.times_days, pred.probabilities)
"""

from app.client.sdk import Client
from app.client.transport import AuthError, ClientError, ConnectionFailed
from app.client.types import (
    Base,
    Checkpoint,
    Cohort,
    Health,
    MergeJob,
    Model,
    Prediction,
    SourceUse,
)

__all__ = [
    "AuthError",
    "Base",
    "Checkpoint",
    "Client",
    "ClientError",
    "Cohort",
    "ConnectionFailed",
    "Health",
    "MergeJob",
    "Model",
    "Prediction",
    "SourceUse",
]
