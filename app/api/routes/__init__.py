"""Routers, one module per resource; each exposes `router`. app.main includes them in ROUTERS order."""
