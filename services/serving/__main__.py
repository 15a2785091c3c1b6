"""`python -m services.serving`: run the serving service."""

from __future__ import annotations

from services.serving.app import create_app
from services.serving.settings import ServingSettings
from shared.service import run_service, serve


def run(settings: ServingSettings) -> None:
    serve(create_app(settings), settings, settings.port, "serving")


if __name__ == "__main__":
    run_service("serving", ServingSettings, run)
