"""Every contract, one suite: documented fields, valid examples, round-trips, schema snapshots,
the topic catalogue, and the public payload shapes promised in the README."""

from __future__ import annotations

import json
import types
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import ValidationError

from contracts.base import Contract, StrictContract
from contracts.catalogue import CATALOGUE, MAJOR_VERSION, ce_type_of
from contracts.events import AlertRaised, LabeledRecord
from contracts.export import SCHEMA_DIR, all_contracts, expected_files
from contracts.topics import Topic

CONTRACTS = all_contracts()


def _contracts_in(annotation: Any) -> list[type[Contract]]:
    """The contract classes an annotation is or contains (Optional, list[...], dict[..., ...])."""
    if isinstance(annotation, type) and issubclass(annotation, Contract):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _contracts_in(arg)]


def _nested_contracts() -> list[type[Contract]]:
    """Contracts reachable through fields of the public ones but not public themselves."""
    seen: list[type[Contract]] = []
    todo = list(CONTRACTS)
    while todo:
        model = todo.pop()
        for info in model.model_fields.values():
            for nested in _contracts_in(info.annotation):
                if nested not in CONTRACTS and nested not in seen:
                    seen.append(nested)
                    todo.append(nested)
    return sorted(seen, key=lambda m: m.__name__)


NESTED = _nested_contracts()
EVERY_MODEL = CONTRACTS + NESTED


def _example_of(annotation: Any) -> Any:
    """A JSON-able value for a field without examples, built from nested contracts' examples."""
    if isinstance(annotation, type) and issubclass(annotation, Contract):
        return example_data(annotation)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType):
        return _example_of(next(a for a in args if a is not type(None)))
    if origin is list:
        return [_example_of(args[0])]
    if origin is dict:
        return {"age": _example_of(args[1])}
    raise AssertionError(f"no way to build an example of {annotation!r}")


def example_data(model: type[Contract]) -> dict[str, Any]:
    """Every field of `model` set to its first example (or one built from nested contracts)."""
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        data[name] = info.examples[0] if info.examples else _example_of(info.annotation)
    return data


def ids(models: list[type[Contract]]) -> list[str]:
    return [m.__name__ for m in models]


# -- every field documented -------------------------------------------------------------------


@pytest.mark.parametrize("model", EVERY_MODEL, ids=ids(EVERY_MODEL))
def test_every_field_has_a_description(model: type[Contract]) -> None:
    undocumented = [name for name, info in model.model_fields.items()
                    if not (info.description or "").strip()]
    assert not undocumented, f"{model.__name__}: fields without a description: {undocumented}"


@pytest.mark.parametrize("model", EVERY_MODEL, ids=ids(EVERY_MODEL))
def test_every_field_has_an_example(model: type[Contract]) -> None:
    # Nested contracts' own fields are checked too (NESTED is in EVERY_MODEL).
    missing = [name for name, info in model.model_fields.items() if not info.examples]
    assert not missing, f"{model.__name__}: fields without examples: {missing}"


@pytest.mark.parametrize("model", EVERY_MODEL, ids=ids(EVERY_MODEL))
def test_every_example_is_valid_for_its_field(model: type[Contract]) -> None:
    base = example_data(model)
    for name, info in model.model_fields.items():
        for example in info.examples or []:
            try:
                model.model_validate({**base, name: example})
            except ValidationError as exc:
                pytest.fail(f"{model.__name__}.{name} example {example!r} is invalid: {exc}")


# -- instances from the examples --------------------------------------------------------------


@pytest.mark.parametrize("model", EVERY_MODEL, ids=ids(EVERY_MODEL))
def test_example_instance_round_trips_through_json(model: type[Contract]) -> None:
    instance = model.model_validate(example_data(model))
    text = instance.model_dump_json()
    again = model.model_validate_json(text)
    assert again == instance
    assert again.model_dump_json() == text


@pytest.mark.parametrize("model", CONTRACTS, ids=ids(CONTRACTS))
def test_unknown_top_level_fields_are_refused_only_from_outsiders(
        model: type[Contract]) -> None:
    payload = json.dumps({**model.model_validate(example_data(model)).model_dump(mode="json"),
                          "unexpected": 1})
    if issubclass(model, StrictContract):  # labeled records and HTTP request bodies
        with pytest.raises(ValidationError) as caught:
            model.model_validate_json(payload)
        assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [
            (("unexpected",), "extra_forbidden")]
    else:  # a newer minor version's optional field: accepted and ignored
        parsed = model.model_validate_json(payload)
        assert "unexpected" not in parsed.model_dump()


@pytest.mark.parametrize("model", CONTRACTS, ids=ids(CONTRACTS))
def test_instances_are_immutable(model: type[Contract]) -> None:
    instance = model.model_validate(example_data(model))
    name = next(iter(model.model_fields))
    with pytest.raises(ValidationError):
        setattr(instance, name, getattr(instance, name))


# -- JSON Schema --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", CONTRACTS, ids=ids(CONTRACTS))
def test_schema_is_generated_and_documents_every_field(model: type[Contract]) -> None:
    for mode in ("validation", "serialization"):
        schema = model.model_json_schema(mode=mode)
        assert schema["title"] == model.__name__
        # strict payloads say so in their schema; tolerant ones allow later optional fields
        assert schema.get("additionalProperties", True) is not issubclass(model, StrictContract)
        assert set(schema["properties"]) == set(model.model_fields)
        for name, prop in schema["properties"].items():
            assert prop.get("description") == model.model_fields[name].description, name


def test_committed_schemas_equal_the_generated_ones() -> None:
    expected = expected_files()
    committed = {path.name: path.read_text(encoding="utf-8")
                 for path in sorted(SCHEMA_DIR.glob("*.json"))}
    fix = "contracts/schemas/ is stale: run `python -m contracts.export` and commit the result"
    assert sorted(committed) == sorted(expected), f"{fix} (file names differ)"
    stale = sorted(name for name, text in expected.items() if committed[name] != text)
    assert not stale, f"{fix} (content differs: {', '.join(stale)})"


def test_event_schemas_name_their_topic_and_ce_type() -> None:
    files = expected_files()
    for topic, entry in CATALOGUE.items():
        schema = json.loads(files[f"{entry.model.__name__}.json"])
        assert (schema["x-topic"], schema["x-ce-type"]) == (topic.value, entry.ce_type)


# -- topic catalogue ----------------------------------------------------------------------------

DESIGN_TOPICS = ["data.labeled", "data.validated", "data.rejected", "training.requests",
                 "models.trained", "models.lifecycle", "predictions", "feedback", "alerts"]
"""../shared/DESIGN.md's topics, and `feedback` (labels named by prediction id alone, keyed
like the predictions they join: docs/ARCHITECTURE.md)."""


def test_topic_names_are_the_design_defaults() -> None:
    assert [t.value for t in Topic] == DESIGN_TOPICS


def test_catalogue_covers_every_topic_with_a_distinct_event() -> None:
    assert set(CATALOGUE) == set(Topic)
    models = [entry.model for entry in CATALOGUE.values()]
    assert len(set(models)) == len(models)
    assert all_contracts()[:len(models)] == models


@pytest.mark.parametrize("topic", list(Topic), ids=[t.value for t in Topic])
def test_ce_type_carries_the_major_version(topic: Topic) -> None:
    entry = CATALOGUE[topic]
    assert MAJOR_VERSION == 1
    assert entry.ce_type.endswith(".v1")
    assert entry.ce_type == f"io.driftloop.{entry.model.__name__}.v1"
    assert ce_type_of(entry.model) == entry.ce_type


@pytest.mark.parametrize("topic", list(Topic), ids=[t.value for t in Topic])
def test_qualified_prepends_the_prefix(topic: Topic) -> None:
    assert topic.qualified() == topic.value
    assert topic.qualified("staging.") == f"staging.{topic.value}"


# -- public payloads (README "Public payloads") -------------------------------------------------

LABELED = {"dataset": "loans", "record_id": "r1", "features": {"age": 3}, "label": 1}


def test_minimal_labeled_record_validates() -> None:
    record = LabeledRecord.model_validate_json(json.dumps(LABELED))
    assert record.features == {"age": 3} and record.label == 1
    assert record.event_time is None and record.prediction_id is None


def test_labeled_record_accepts_event_time_and_prediction_id() -> None:
    record = LabeledRecord.model_validate_json(json.dumps(
        {**LABELED, "event_time": "2026-11-22T10:00:00Z", "prediction_id": "pred-7f3a"}))
    assert record.event_time is not None and record.event_time.utcoffset() is not None
    assert record.event_time.isoformat() == "2026-11-22T10:00:00+00:00"
    assert record.prediction_id == "pred-7f3a"


def test_labeled_record_rejects_unknown_top_level_field() -> None:
    with pytest.raises(ValidationError) as caught:
        LabeledRecord.model_validate_json(json.dumps({**LABELED, "colour": "red"}))
    assert caught.value.errors()[0]["loc"] == ("colour",)


def test_labeled_record_rejects_empty_record_id() -> None:
    with pytest.raises(ValidationError) as caught:
        LabeledRecord.model_validate_json(json.dumps({**LABELED, "record_id": ""}))
    assert caught.value.errors()[0]["loc"] == ("record_id",)


def alert(**changes: Any) -> dict[str, Any]:
    return {**example_data(AlertRaised), **changes}


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_alert_status_accepts_firing_and_resolved(status: str) -> None:
    assert AlertRaised.model_validate(alert(status=status)).status == status


@pytest.mark.parametrize("status", ["pending", "FIRING", "", "ok"])
def test_alert_status_rejects_anything_else(status: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertRaised.model_validate(alert(status=status))
    assert caught.value.errors()[0]["loc"] == ("status",)


@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_alert_severity_accepts_the_three_levels(severity: str) -> None:
    assert AlertRaised.model_validate(alert(severity=severity)).severity == severity


@pytest.mark.parametrize("severity", ["error", "page", "CRITICAL", ""])
def test_alert_severity_rejects_anything_else(severity: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertRaised.model_validate(alert(severity=severity))
    assert caught.value.errors()[0]["loc"] == ("severity",)


def test_alert_schema_enumerates_status_and_severity() -> None:
    schema = AlertRaised.model_json_schema()
    defs = schema["$defs"]
    assert defs["AlertStatus"]["enum"] == ["firing", "resolved"]
    assert defs["Severity"]["enum"] == ["info", "warning", "critical"]


def test_a_training_request_is_bounded_in_every_free_field() -> None:
    """training.requests is writable by anyone with topic access: what it carries ends up in
    lineage, the registry's database and lifecycle events, so each part is bounded."""
    from contracts.events import MAX_EVIDENCE_BYTES, MAX_NAME, TrainingRequested

    base = {"request_id": "r1", "model": "loans-tree", "reason": "manual",
            "requested_by": "alice"}
    TrainingRequested.model_validate({**base, "evidence": {"note": "x" * 1000}})
    for field in ("request_id", "model", "requested_by"):
        with pytest.raises(ValidationError, match=field):
            TrainingRequested.model_validate({**base, field: "x" * (MAX_NAME + 1)})
    with pytest.raises(ValidationError, match="evidence"):
        TrainingRequested.model_validate({**base, "evidence": {"note": "x" * MAX_EVIDENCE_BYTES}})
