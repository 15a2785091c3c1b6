"""`driftloop produce FILE --dataset NAME`: publish a JSONL or CSV file of labeled records."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.events import LabeledRecord


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
    (one column per feature plus the label column; optional record_id column)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=1):
                record_id = row.pop("record_id", None) or f"{path.stem}-{number}"
                if label_column not in row:
                    raise ValueError(f"{path}:{number}: no {label_column!r} column")
                label = _scalar(row.pop(label_column))
                features = {k: _scalar(v) for k, v in row.items()}
                yield LabeledRecord(dataset=dataset, record_id=record_id, features=features,
                                    label=label)
        return
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            data = json.loads(line)
            data.setdefault("dataset", dataset)
            data.setdefault("record_id", f"{path.stem}-{number}")
            yield LabeledRecord.model_validate(data)
