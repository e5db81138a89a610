"""Figures and HTML reports (matplotlib, Agg backend, imported lazily). No torch here: the hospital client uses
figures_km / figures_model / render too. The numbers come from app.services.report_data (server) or from
app.client.validate (hospital side); KM and log-rank from app.domain.km."""
