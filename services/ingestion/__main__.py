"""`python -m services.ingestion`: run the ingestion service."""

from __future__ import annotations

from services.ingestion.app import create_app
from services.ingestion.settings import IngestionSettings
from shared.service import run_service, serve


def run(settings: IngestionSettings) -> None:
    serve(create_app(settings), settings, settings.port, "ingestion")


if __name__ == "__main__":
    run_service("ingestion", IngestionSettings, run)
