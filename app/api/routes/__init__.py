"""Routers, one module per resource; each exposes `router`. app.main includes them in ROUTER_MODULES order."""
