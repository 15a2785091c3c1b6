"""`driftloop produce FILE --dataset NAME`: publish a JSONL or CSV file of labeled records."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from contracts.events import LabeledRecord
from shared.errors import UnreadableInput
from shared.records import describe
from shared.validation import field_errors


def _scalar(text: str) -> Any:
    """CSV cells are text: read numbers and booleans back as such."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def read_records(path: Path, dataset: str, label_column: str = "label") -> Iterator[LabeledRecord]:
    """Records from JSONL (one labeled record or {features, label} object per line) or CSV
    (one column per feature plus the label column; optional record_id column).

    A `prediction_id` (JSONL key or CSV column) names the prediction the label is for: with
    features it is a whole record that also labels its prediction, alone (a line or row of
    just `prediction_id` and the label) it is feedback, which the prediction completes."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=1):
                where = f"{path}:{number + 1}"
                if label_column not in row:
                    raise UnreadableInput(where=where, detail=f"no {label_column!r} column")
                label = _scalar(row.pop(label_column))
                prediction_id = (row.pop("prediction_id", None) or "").strip() or None
                record_id = row.pop("record_id", None) or f"{path.stem}-{number}"
                features = {k: _scalar(v) for k, v in row.items() if v not in ("", None)}
                if prediction_id is not None and not features:
                    yield _record(where, {"prediction_id": prediction_id, "label": label})
                else:
                    yield _record(where, {"dataset": dataset, "record_id": record_id,
                                          "features": features, "label": label,
                                          "prediction_id": prediction_id})
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UnreadableInput(where=where, detail=f"not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise UnreadableInput(where=where, detail="expected a JSON object")
            if not ("prediction_id" in data and "features" not in data):  # not feedback alone
                data.setdefault("dataset", dataset)
                data.setdefault("record_id", f"{path.stem}-{number}")
            yield _record(where, data)


def _record(where: str, data: dict[str, Any]) -> LabeledRecord:
    try:
        return LabeledRecord.model_validate(data)
    except ValidationError as exc:
        raise UnreadableInput(where=where, detail=describe(field_errors(exc))) from None
