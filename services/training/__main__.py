"""`python -m services.training`: run the training service."""

from __future__ import annotations

from services.training.app import create_app
from services.training.settings import TrainingSettings
from shared.service import run_service, serve


def run(settings: TrainingSettings) -> None:
    serve(create_app(settings), settings, settings.port, "training")


if __name__ == "__main__":
    run_service("training", TrainingSettings, run)
