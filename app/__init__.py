"""STEPH Service. Kept import-free: importing app.domain must not pull in FastAPI or SQLAlchemy."""

__version__ = "0.1.0"
