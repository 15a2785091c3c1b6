"""Helpers of the trust attacks (forged events, training floods): a tiny learnable project,
publishing raw or forged events, and reading what the platform answered on its topics."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaProducer, ConsumerRecord

from cli.kafka_io import follower
from cli.platform import Platform
from contracts.base import Contract
from contracts.events import LabeledRecord, RecordRejected
from contracts.topics import Topic
from shared.envelope import build_headers

T = TypeVar("T")

MODEL = "toy"


def toy_project(path: Path, models: dict[str, dict[str, Any]] | None = None) -> Path:
    """One float feature; the label is its sign (concept A) or the opposite (concept B): a
    logistic regression learns either in a few hundred records, so a retrain on the other
    concept beats the champion for sure."""
    models = models or {MODEL: {}}
    lines = ['name = "trust-test"', "", "[datasets.signs.label]", 'type = "int"',
             "categories = [0, 1]", "", "[datasets.signs.features]",
             'x = { type = "float", min = -10, max = 10 }', ""]
    for name, policy in models.items():
        lines += [f"[models.{name}]", 'dataset = "signs"',
                  'pipeline = [{ estimator = "linear_model.LogisticRegression" }]', "",
                  f"[models.{name}.training]", "passes = 3", "",
                  f"[models.{name}.policy]", "retrain_on_drift = false"]
        lines += [f"{key} = {value}" for key, value in policy.items()] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def signs(n: int, flipped: bool, seed: int, prefix: str) -> list[LabeledRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        x = round(rng.uniform(-5, 5), 3) or 0.5
        label = int((x > 0) != flipped)
        records.append(LabeledRecord(dataset="signs", record_id=f"{prefix}-{i}",
                                     features={"x": x}, label=label))
    return records


async def _send(bootstrap: str, messages: Iterable[tuple[Topic, str, bytes, Any]]) -> None:
    client = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await client.start()
    try:
        futures = []
        for topic, key, value, headers in messages:
            futures.append(await client.send(topic.value, value, key=key.encode(),
                                             headers=headers))
        await asyncio.gather(*futures)
    finally:
        await client.stop()


def publish(bootstrap: str, topic: Topic, events: Iterable[tuple[str, Contract]]) -> None:
    """Publish events as any producer could (fresh ce_ids, like an attacker would)."""
    asyncio.run(_send(bootstrap, [(topic, key, event.model_dump_json().encode(),
                                   build_headers(event, "attacker", uuid.uuid4().hex))
                                  for key, event in events]))


def publish_raw(bootstrap: str, topic: Topic, key: str, value: bytes) -> None:
    asyncio.run(_send(bootstrap, [(topic, key, value, [])]))


async def _read(bootstrap: str, topic: Topic) -> list[ConsumerRecord]:
    found: list[ConsumerRecord] = []
    async with follower(bootstrap, [topic]) as consumer:
        empty = 0
        while empty < 2:  # Tansu's end offsets count batches: read until nothing comes
            batches = await consumer.getmany(timeout_ms=400)
            empty = 0 if batches else empty + 1
            for messages in batches.values():
                found.extend(messages)
    return found


def read(bootstrap: str, topic: Topic) -> list[ConsumerRecord]:
    """Everything on `topic` now."""
    return asyncio.run(_read(bootstrap, topic))


def events(bootstrap: str, topic: Topic, kind: type[T]) -> list[T]:
    return [kind.model_validate_json(m.value) for m in read(bootstrap, topic)]  # type: ignore[attr-defined]


def wait_for(check: Callable[[], T], what: str, timeout: float = 90.0) -> T:
    """Poll until `check` returns something truthy (a bound on waiting, not a timing claim)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.5)


def letters(bootstrap: str, marker: str) -> list[RecordRejected]:
    """Dead letters whose original value mentions `marker`."""
    return [letter for letter in events(bootstrap, Topic.DATA_REJECTED, RecordRejected)
            if marker in (letter.value_text or "")]


def state(platform: Platform, models: Iterable[str] = (MODEL,)) -> dict[str, Any]:
    """What a user can see: registry models, versions, champions, what serving loads and
    answers, which version monitoring watches. Equal before and after an attack means the
    attack changed nothing."""
    seen: dict[str, Any] = {}
    with httpx.Client(timeout=10) as client:
        registry, serving = platform.url("registry"), platform.url("serving")
        seen["registry_models"] = client.get(f"{registry}/v1/models").json()
        seen["serving_models"] = sorted((m["model"], m["version"], m["digest"])
                                        for m in client.get(f"{serving}/v1/models").json())
        for model in models:
            versions = client.get(f"{registry}/v1/models/{model}/versions").json()
            seen[f"{model}_versions"] = [(v["version"], v["stage"], v["run_id"])
                                         for v in versions]
            answer = client.post(f"{serving}/v1/models/{model}/predict",
                                 json={"features": {"x": 1.0}})
            seen[f"{model}_answer"] = (answer.status_code, answer.json().get("version"))
            # Monitoring hears of a promotion through models.lifecycle a moment after serving
            # may: wait (bounded) for it to watch the version serving answers with, so a
            # snapshot taken just after a genuine promotion is not read as an attack's effect.
            deadline = time.monotonic() + 20
            while True:
                status = client.get(f"{platform.url('monitoring')}/v1/status").json()
                watched = status[model]["version"]
                if watched == seen[f"{model}_answer"][1] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            seen[f"{model}_monitored_version"] = watched
    return seen


def serving_version(platform: Platform, model: str = MODEL) -> int | None:
    with httpx.Client(timeout=10) as client:
        for loaded in client.get(f"{platform.url('serving')}/v1/models").json():
            if loaded["model"] == model:
                return int(loaded["version"])
    return None
