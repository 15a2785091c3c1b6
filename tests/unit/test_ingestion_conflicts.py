"""Ingestion's natural-key de-duplication is by id AND content, so a sender cannot erase
another's record by reusing its id, and numbers no float holds are bad records, not bugs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.events import LabeledRecord
from services.ingestion.handlers import Ingestor, validate
from shared.datasets import DatasetStore
from shared.errors import ConflictingRecord, InvalidRecord
from tests.unit.factories import T0, agrawal, demo_project

ROWS = agrawal(10, seed=5)


def record(index: int, record_id: str = "rec-1", label: Any = None,
           **features: Any) -> LabeledRecord:
    row, row_label = ROWS[index]
    return LabeledRecord(dataset="loans", record_id=record_id, features={**row, **features},
                         label=row_label if label is None else label)


@pytest.fixture
def ingestor(tmp_path: Path) -> Ingestor:
    return Ingestor(demo_project(), DatasetStore(tmp_path / "datasets"))


def test_same_id_other_content_in_one_batch_is_rejected_not_dropped(ingestor: Ingestor) -> None:
    outcome = ingestor.sort([record(0), record(1)], T0)
    assert [r.record_id for r in outcome.accepted["loans"]] == ["rec-1"]
    assert outcome.accepted["loans"][0].features["age"] == ROWS[0][0]["age"]
    assert outcome.duplicates == 0
    assert isinstance(outcome.rejected[1], ConflictingRecord)
    assert str(outcome.rejected[1]).startswith("duplicate id with different content")
    assert outcome.rejected[1].errors == [("record_id", "already ingested with different "
                                                        "content")]


def test_same_id_other_content_against_the_store_and_after_a_restart(tmp_path: Path) -> None:
    first = Ingestor(demo_project(), DatasetStore(tmp_path / "datasets"))
    first.store_accepted(first.sort([record(0)], T0), T0)
    assert isinstance(first.sort([record(1)], T0).rejected[0], ConflictingRecord)

    restarted = Ingestor(demo_project(), DatasetStore(tmp_path / "datasets"))
    later = T0 + timedelta(hours=1)
    assert isinstance(restarted.sort([record(1)], later).rejected[0], ConflictingRecord)
    assert isinstance(restarted.sort([record(0, label=1 - ROWS[0][1])], later).rejected[0],
                      ConflictingRecord)
    again = restarted.sort([record(0)], later)
    assert again.duplicates == 1 and not again.rejected and not again.accepted


def test_a_true_duplicate_is_still_dropped_whatever_its_spelling(ingestor: Ingestor) -> None:
    """Content is compared normalised: 40 and 40.0 are the same age."""
    ingestor.store_accepted(ingestor.sort([record(0)], T0), T0)
    age = ROWS[0][0]["age"]
    outcome = ingestor.sort([record(0, age=float(age))], T0 + timedelta(seconds=5))
    assert outcome.duplicates == 1 and not outcome.rejected


def test_an_explicit_event_time_is_part_of_the_content(tmp_path: Path) -> None:
    timed = record(0).model_copy(update={"event_time": T0 - timedelta(days=1)})
    first = Ingestor(demo_project(), DatasetStore(tmp_path / "datasets"))
    first.store_accepted(first.sort([timed], T0), T0)
    restarted = Ingestor(demo_project(), DatasetStore(tmp_path / "datasets"))
    assert restarted.sort([timed], T0 + timedelta(hours=1)).duplicates == 1
    moved = timed.model_copy(update={"event_time": T0 - timedelta(days=2)})
    assert isinstance(restarted.sort([moved], T0).rejected[0], ConflictingRecord)


@pytest.mark.parametrize(("changes", "field"), [
    ({"age": 10 ** 400}, "features.age"),          # int feature: float() overflows
    ({"salary": -(10 ** 400)}, "features.salary"),  # float feature
    ({"salary": float("nan")}, "features.salary"),
    ({"salary": float("inf")}, "features.salary"),
])
def test_numbers_no_float_holds_are_bad_records_naming_the_field(changes: dict[str, Any],
                                                                 field: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, **changes), demo_project(), 0, T0)
    assert [f for f, _ in caught.value.errors] == [field]
    assert "finite number" in str(caught.value)
    assert len(str(caught.value)) < 300


def test_a_huge_label_is_a_bad_record() -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, label=10 ** 400), demo_project(), 0, T0)
    assert [f for f, _ in caught.value.errors] == ["label"]
