"""Write the JSON Schema of every contract to contracts/schemas/ (`python -m contracts.export`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from contracts import http
from contracts.base import Contract
from contracts.catalogue import CATALOGUE

SCHEMA_DIR = Path(__file__).parent / "schemas"

HTTP_PAYLOADS: tuple[type[Contract], ...] = (
    http.PredictRequest,
    http.BatchPredictRequest,
    http.PredictResponse,
    http.BatchPredictResponse,
    http.ErrorDetail,
    http.ModelView,
    http.ModelVersionView,
    http.PromoteRequest,
    http.RollbackRequest,
    http.TrainRequest,
    http.TrainAccepted,
    http.AuditEntry,
)


def all_contracts() -> list[type[Contract]]:
    """Every event (in topic order) then every HTTP payload."""
    return [entry.model for entry in CATALOGUE.values()] + list(HTTP_PAYLOADS)


def render(model: type[Contract]) -> str:
    """The committed text of a model's schema (stable key order, trailing newline)."""
    schema = model.model_json_schema(mode="serialization")
    for topic, entry in CATALOGUE.items():
        if entry.model is model:
            schema["x-topic"], schema["x-ce-type"] = topic.value, entry.ce_type
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name → content for every schema."""
    return {f"{model.__name__}.json": render(model) for model in all_contracts()}


def main() -> int:
    """Regenerate the schema files, removing stale ones."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    wanted = expected_files()
    for stale in SCHEMA_DIR.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (SCHEMA_DIR / name).write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {len(wanted)} schemas to {SCHEMA_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
