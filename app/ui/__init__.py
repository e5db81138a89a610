"""The web UI: server-rendered pages (Jinja2) over the services; routes in app.api.routes.ui."""
