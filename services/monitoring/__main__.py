"""`python -m services.monitoring`: run the monitoring service."""

from __future__ import annotations

from services.monitoring.app import create_app
from services.monitoring.settings import MonitoringSettings
from shared.service import run_service, serve


def run(settings: MonitoringSettings) -> None:
    serve(create_app(settings), settings, settings.port, "monitoring")


if __name__ == "__main__":
    run_service("monitoring", MonitoringSettings, run)
