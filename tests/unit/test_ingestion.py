"""Ingestion logic: validation against the dataset contract, de-duplication, sequences."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.events import LabeledRecord
from services.ingestion.handlers import Ingestor, validate
from shared.datasets import DatasetStore
from shared.errors import InvalidRecord, UnknownDataset
from shared.project import Project
from tests.unit.factories import T0, agrawal, demo_project

ROWS = agrawal(20, seed=3)


def record(index: int, dataset: str = "loans", record_id: str | None = None,
           **changes: Any) -> LabeledRecord:
    """Agrawal row `index` as a labeled record; a change to `...` removes that feature."""
    features, label = ROWS[index]
    features = {**features, **changes}
    for name, value in changes.items():
        if value is ...:
            del features[name]
    return LabeledRecord(dataset=dataset, record_id=record_id or f"rec-{index}",
                         features=features, label=label)


@pytest.fixture
def project() -> Project:
    return demo_project()


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "datasets")


def fields_of(exc: InvalidRecord | UnknownDataset) -> list[str]:
    return [name for name, _ in exc.errors]


# -- validate -------------------------------------------------------------------------------


def test_valid_record_is_normalised_to_declared_types(project: Project) -> None:
    raw = record(0, age=41.0, salary=50_000)
    result = validate(raw, project, sequence=7, ingested_at=T0)
    assert result.features["age"] == 41 and type(result.features["age"]) is int
    assert result.features["salary"] == 50_000.0 and type(result.features["salary"]) is float
    assert result.sequence == 7
    assert result.event_time == T0 == result.ingested_at
    assert set(result.features) == set(project.datasets["loans"].features)


def test_wrong_type_names_the_field(project: Project) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, age="forty"), project, 0, T0)
    assert fields_of(caught.value) == ["features.age"]
    assert "forty" in caught.value.errors[0][1]
    assert "features.age" in str(caught.value)


@pytest.mark.parametrize("value", [41.5, True])
def test_int_feature_refuses_fractions_and_booleans(project: Project, value: Any) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, age=value), project, 0, T0)
    assert fields_of(caught.value) == ["features.age"]


@pytest.mark.parametrize(("name", "value", "word"), [
    ("age", 150, "maximum"),
    ("salary", -1.0, "minimum"),
    ("elevel", 9, "not one of"),
])
def test_out_of_range_value(project: Project, name: str, value: Any, word: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, **{name: value}), project, 0, T0)
    assert fields_of(caught.value) == [f"features.{name}"]
    assert word in caught.value.errors[0][1]


def test_non_finite_number_refused(project: Project) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, salary=float("nan")), project, 0, T0)
    assert fields_of(caught.value) == ["features.salary"]


def test_missing_feature(project: Project) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, car=...), project, 0, T0)
    assert caught.value.errors == [("features.car", "field required")]


def test_undeclared_feature(project: Project) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, colour="red"), project, 0, T0)
    assert fields_of(caught.value) == ["features.colour"]


def test_label_not_in_categories(project: Project) -> None:
    features, _ = ROWS[0]
    raw = LabeledRecord(dataset="loans", record_id="r", features=features, label=2)
    with pytest.raises(InvalidRecord) as caught:
        validate(raw, project, 0, T0)
    assert fields_of(caught.value) == ["label"]


def test_every_problem_is_reported(project: Project) -> None:
    with pytest.raises(InvalidRecord) as caught:
        validate(record(0, age="forty", car=..., colour="red"), project, 0, T0)
    assert sorted(fields_of(caught.value)) == ["features.age", "features.car", "features.colour"]


def test_unknown_dataset(project: Project) -> None:
    with pytest.raises(UnknownDataset) as caught:
        validate(record(0, dataset="nope"), project, 0, T0)
    assert fields_of(caught.value) == ["dataset"]
    assert "loans" in str(caught.value)


# -- Ingestor -------------------------------------------------------------------------------


def test_sort_accepts_rejects_by_index(project: Project, store: DatasetStore) -> None:
    ingestor = Ingestor(project, store)
    batch = [record(0), record(1, age="forty"), record(2, dataset="nope"), record(3)]
    outcome = ingestor.sort(batch, T0)
    assert [r.record_id for r in outcome.accepted["loans"]] == ["rec-0", "rec-3"]
    assert set(outcome.rejected) == {1, 2}
    assert isinstance(outcome.rejected[1], InvalidRecord)
    assert fields_of(outcome.rejected[1]) == ["features.age"]
    assert isinstance(outcome.rejected[2], UnknownDataset)
    assert "nope" not in outcome.accepted
    assert outcome.duplicates == 0


def test_sequences_are_consecutive_across_batches(project: Project,
                                                  store: DatasetStore) -> None:
    ingestor = Ingestor(project, store)
    first = ingestor.sort([record(0), record(1, age="forty"), record(2), record(3)], T0)
    assert [r.sequence for r in first.accepted["loans"]] == [0, 1, 2]
    ingestor.store_accepted(first, T0)
    second = ingestor.sort([record(4), record(5)], T0)
    assert [r.sequence for r in second.accepted["loans"]] == [3, 4]


def test_duplicates_within_a_batch(project: Project, store: DatasetStore) -> None:
    outcome = Ingestor(project, store).sort([record(0), record(1), record(0)], T0)
    assert [r.record_id for r in outcome.accepted["loans"]] == ["rec-0", "rec-1"]
    assert outcome.duplicates == 1


def test_duplicates_against_the_store(project: Project, store: DatasetStore) -> None:
    ingestor = Ingestor(project, store)
    ingestor.store_accepted(ingestor.sort([record(0), record(1)], T0), T0)
    outcome = ingestor.sort([record(1), record(2), record(0)], T0)
    assert [r.record_id for r in outcome.accepted["loans"]] == ["rec-2"]
    assert outcome.accepted["loans"][0].sequence == 2
    assert outcome.duplicates == 2


def test_duplicates_and_sequences_survive_a_restart(project: Project, tmp_path: Path) -> None:
    before = Ingestor(project, DatasetStore(tmp_path / "datasets"))
    before.store_accepted(before.sort([record(0), record(1), record(2)], T0), T0)

    after = Ingestor(project, DatasetStore(tmp_path / "datasets"))
    outcome = after.sort([record(2), record(3), record(0)], T0 + timedelta(seconds=1))
    assert outcome.duplicates == 2
    assert [(r.record_id, r.sequence) for r in outcome.accepted["loans"]] == [("rec-3", 3)]
    after.store_accepted(outcome, T0 + timedelta(seconds=1))
    assert after.store.size("loans") == 4


def test_sorting_twice_without_storing_is_the_same(project: Project,
                                                   store: DatasetStore) -> None:
    ingestor = Ingestor(project, store)
    ingestor.store_accepted(ingestor.sort([record(0)], T0), T0)
    batch = [record(1), record(0), record(2, age="forty"), record(3), record(1)]
    first = ingestor.sort(batch, T0)
    retry = ingestor.sort(batch, T0)
    assert retry.accepted == first.accepted
    assert [r.sequence for r in retry.accepted["loans"]] == [1, 2]
    assert retry.duplicates == first.duplicates == 2
    assert set(retry.rejected) == set(first.rejected) == {2}


def test_store_accepted_makes_records_readable(project: Project, store: DatasetStore) -> None:
    ingestor = Ingestor(project, store)
    outcome = ingestor.sort([record(0), record(1)], T0)
    ingestor.store_accepted(outcome, T0)
    snapshot = store.snapshot("loans")
    assert list(store.read(snapshot)) == outcome.accepted["loans"]
