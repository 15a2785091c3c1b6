"""`python -m services.registry`: run the registry service."""

from __future__ import annotations

from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from shared.service import run_service, serve


def run(settings: RegistrySettings) -> None:
    serve(create_app(settings), settings, settings.port, "registry")


if __name__ == "__main__":
    run_service("registry", RegistrySettings, run)
