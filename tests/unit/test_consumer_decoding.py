"""The pure parts of consumption: CloudEvents headers, readable validation errors, and the
feature checks shared by ingestion and serving."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import pytest
from pydantic import ValidationError

from contracts.events import AlertRaised, LabeledRecord, TrainingRequested
from shared.envelope import build_headers, read_envelope
from shared.project import DatasetSpec, ValueSpec
from shared.records import check_features, describe
from shared.tracing import trace_id_var
from shared.validation import field_errors
from tests.unit.factories import agrawal, demo_project

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
EVENT = LabeledRecord(dataset="loans", record_id="r1", features={"age": 3}, label=1)


@pytest.fixture
def in_trace() -> Iterator[str]:
    token = trace_id_var.set(TRACE)
    yield TRACE
    trace_id_var.reset(token)


@pytest.fixture
def no_trace() -> Iterator[None]:
    token = trace_id_var.set(None)
    yield
    trace_id_var.reset(token)


# -- read_envelope --------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [None, [], ()])
def test_message_without_headers_gets_coordinates_as_id_and_a_fresh_trace(
        headers: list[tuple[str, bytes]] | None) -> None:
    envelope = read_envelope(headers, "data.labeled", 2, 1234)
    assert envelope.ce_id == "data.labeled/2/1234"
    assert envelope.ce_source == "external"
    assert envelope.ce_type == "" and envelope.ce_time == ""
    assert HEX32.match(envelope.trace_id)


def test_each_headerless_message_starts_its_own_trace() -> None:
    first = read_envelope(None, "data.labeled", 0, 1)
    second = read_envelope(None, "data.labeled", 0, 1)
    assert first.ce_id == second.ce_id
    assert first.trace_id != second.trace_id


def test_malformed_traceparent_starts_a_fresh_trace() -> None:
    envelope = read_envelope([("traceparent", b"not-a-traceparent"), ("ce_id", b"e1")],
                             "alerts", 0, 0)
    assert envelope.ce_id == "e1"
    assert HEX32.match(envelope.trace_id)


def test_empty_ce_id_falls_back_to_coordinates() -> None:
    assert read_envelope([("ce_id", b"")], "alerts", 1, 5).ce_id == "alerts/1/5"


def test_undecodable_header_bytes_do_not_raise() -> None:
    envelope = read_envelope([("ce_source", b"\xff\xfeproducer")], "data.labeled", 0, 0)
    assert envelope.ce_source.endswith("producer")


def test_envelope_reads_back_what_build_headers_wrote(in_trace: str) -> None:
    headers = build_headers(EVENT, "ingestion", ce_id="loans/r1")
    envelope = read_envelope(headers, "data.labeled", 0, 7)
    assert envelope.ce_id == "loans/r1"
    assert envelope.ce_type == "io.driftloop.LabeledRecord.v1"
    assert envelope.ce_source == "ingestion"
    assert envelope.trace_id == in_trace
    assert datetime.fromisoformat(envelope.ce_time).utcoffset() is not None


# -- build_headers --------------------------------------------------------------------------


def test_headers_carry_every_cloudevents_attribute(no_trace: None) -> None:
    headers = build_headers(EVENT, "serving")
    assert all(isinstance(value, bytes) for _, value in headers)
    found = {key: value.decode() for key, value in headers}
    assert len(found) == len(headers)
    assert set(found) == {"ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time",
                          "content-type", "traceparent"}
    assert found["ce_specversion"] == "1.0"
    assert HEX32.match(found["ce_id"])
    assert found["ce_type"] == "io.driftloop.LabeledRecord.v1"
    assert found["ce_type"].endswith(".v1")
    assert found["ce_source"] == "serving"
    assert datetime.fromisoformat(found["ce_time"]).utcoffset() is not None
    assert found["content-type"] == "application/json"
    assert TRACEPARENT.match(found["traceparent"])


def test_ce_type_follows_the_event_class(no_trace: None) -> None:
    alert = AlertRaised(alert_id="al-1", status="firing", severity="critical", kind="drift",
                        model="loans-tree", summary="s")
    found = dict(build_headers(alert, "monitoring"))
    assert found["ce_type"] == b"io.driftloop.AlertRaised.v1"


def test_ce_id_is_the_given_one_or_unique() -> None:
    assert dict(build_headers(EVENT, "x", ce_id="fixed"))["ce_id"] == b"fixed"
    ids = {dict(build_headers(EVENT, "x"))["ce_id"] for _ in range(20)}
    assert len(ids) == 20


def test_traceparent_continues_the_current_trace_with_a_new_span(in_trace: str) -> None:
    first = dict(build_headers(EVENT, "x"))["traceparent"].decode()
    second = dict(build_headers(EVENT, "x"))["traceparent"].decode()
    assert TRACEPARENT.match(first) and TRACEPARENT.match(second)
    assert first.split("-")[1] == second.split("-")[1] == in_trace
    assert first.split("-")[2] != second.split("-")[2]


def test_without_a_current_trace_each_message_starts_one(no_trace: None) -> None:
    first = dict(build_headers(EVENT, "x"))["traceparent"].decode()
    second = dict(build_headers(EVENT, "x"))["traceparent"].decode()
    assert first.split("-")[1] != second.split("-")[1]


# -- field_errors ---------------------------------------------------------------------------


def errors_of(raw: bytes) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        LabeledRecord.model_validate_json(raw)
    return field_errors(caught.value)


def test_invalid_json_is_one_whole_value_error() -> None:
    [(field, message)] = errors_of(b'{"dataset": "loans", ')
    assert field == ""
    assert message.startswith("not valid JSON (")
    assert "EOF" in message or "line 1" in message


def test_json_that_is_not_an_object_is_one_whole_value_error() -> None:
    assert errors_of(b"[1, 2]") == [("", "Input should be an object")]


def test_missing_fields_are_named() -> None:
    [(field, message)] = errors_of(b'{"dataset": "loans"}')
    assert field == "" and "missing record_id, features, label:" in message
    # feedback alone needs only its label, and a missing label alone is that field's error
    assert errors_of(b'{"prediction_id": "p-1"}') == [("label", "Field required")]
    assert errors_of(b'{"dataset": "loans", "record_id": "r", "features": {}}') == [
        ("label", "Field required")]


def test_wrong_type_names_the_field() -> None:
    raw = b'{"dataset": "loans", "record_id": 5, "features": {}, "label": 1}'
    assert errors_of(raw) == [("record_id", "Input should be a valid string")]


def test_container_of_the_wrong_kind_names_the_field() -> None:
    raw = b'{"dataset": "loans", "record_id": "r1", "features": [1], "label": 1}'
    assert errors_of(raw) == [("features", "Input should be an object")]


def test_nested_paths_are_dotted() -> None:
    raw = (b'{"request_id": "q", "model": "m", "reason": "drift", "requested_by": "me", '
           b'"window": {"last": 0}}')
    with pytest.raises(ValidationError) as caught:
        TrainingRequested.model_validate_json(raw)
    assert field_errors(caught.value) == [
        ("window.last", "Input should be greater than or equal to 1")]


@pytest.mark.parametrize("value", [b"null", b"[41]", b'{"years": 41}'])
def test_wrong_type_of_a_feature_value_names_the_feature(value: bytes) -> None:
    # A feature value is float | int | str | bool; the field at fault is the feature, not a
    # member of that union (pydantic adds the member's name to the error location).
    raw = b'{"dataset": "loans", "record_id": "r1", "features": {"age": ' + value + b"}, " \
          b'"label": 1}'
    errors = errors_of(raw)
    assert errors, "expected at least one error"
    assert {field for field, _ in errors} == {"features.age"}
    assert all(message for _, message in errors)


def test_wrong_type_of_the_label_names_the_label() -> None:
    raw = b'{"dataset": "loans", "record_id": "r1", "features": {}, "label": null}'
    assert {field for field, _ in errors_of(raw)} == {"label"}


# -- check_features -------------------------------------------------------------------------

LOANS = demo_project().datasets["loans"]
ROW = agrawal(1, seed=5)[0][0]


def check(features: dict[str, object], dataset: DatasetSpec = LOANS,
          prefix: str = "features") -> tuple[dict[str, object], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    clean = check_features(features, dataset, problems, prefix)
    return clean, problems


def test_valid_features_are_typed_as_declared() -> None:
    clean, problems = check({**ROW, "age": 41.0, "salary": 50_000})
    assert problems == []
    assert set(clean) == set(LOANS.features)
    assert clean["age"] == 41 and type(clean["age"]) is int
    assert clean["salary"] == 50_000.0 and type(clean["salary"]) is float


@pytest.mark.parametrize(("name", "value", "message"), [
    ("age", "forty", "expected a number, got 'forty'"),
    ("age", True, "expected a number, got True"),
    ("age", [41], "expected a number, got [41]"),
    ("age", 41.5, "expected an integer, got 41.5"),
    ("salary", float("nan"), "expected a finite number, got nan"),
    ("salary", float("inf"), "expected a finite number, got inf"),
    ("age", 121, "121 is above the allowed maximum 120"),
    ("age", -1, "-1 is below the allowed minimum 0"),
    ("salary", 2e6, "2000000.0 is above the allowed maximum 1e+06"),
    ("elevel", 7, "7 is not one of [0, 1, 2, 3, 4]"),
])
def test_bad_value_messages(name: str, value: object, message: str) -> None:
    _, problems = check({**ROW, name: value})
    assert problems == [(f"features.{name}", message)]


@pytest.mark.parametrize("value", [..., None])
def test_missing_or_null_required_feature(value: object) -> None:
    features = {k: v for k, v in ROW.items() if k != "age"}
    if value is None:
        features["age"] = None
    clean, problems = check(features)
    assert problems == [("features.age", "field required")]
    assert "age" not in clean


def test_undeclared_feature() -> None:
    _, problems = check({**ROW, "colour": "red"})
    assert problems == [("features.colour", "not a feature of this dataset")]


def test_prefix_names_the_instance() -> None:
    _, problems = check({**ROW, "age": "forty"}, prefix="instances.3")
    assert problems == [("instances.3.age", "expected a number, got 'forty'")]


def test_every_problem_is_reported_and_described() -> None:
    features = {k: v for k, v in ROW.items() if k != "car"}
    _, problems = check({**features, "age": "forty", "colour": "red"})
    assert problems == [("features.age", "expected a number, got 'forty'"),
                        ("features.car", "field required"),
                        ("features.colour", "not a feature of this dataset")]
    assert describe(problems) == ("features.age: expected a number, got 'forty'; "
                                  "features.car: field required; "
                                  "features.colour: not a feature of this dataset")


OTHER = DatasetSpec(
    features={"flag": ValueSpec(type="bool"), "city": ValueSpec(type="str", categories=["a", "b"]),
              "note": ValueSpec(type="str", required=False)},
    label=ValueSpec(type="int"))


def test_bool_and_string_features() -> None:
    clean, problems = check({"flag": True, "city": "a"}, OTHER)
    assert problems == [] and clean == {"flag": True, "city": "a"}
    _, problems = check({"flag": 1, "city": 3, "note": None}, OTHER)
    assert problems == [("features.flag", "expected true or false, got 1"),
                        ("features.city", "expected a string, got 3")]
    _, problems = check({"flag": False, "city": "z"}, OTHER)
    assert problems == [("features.city", "'z' is not one of ['a', 'b']")]
