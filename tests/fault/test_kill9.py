"""kill -9 under load: a service is killed mid-stream and started again (as `driftloop up`
would), and nothing the broker acknowledged is lost or recorded twice.

Counts are taken before and after every kill and logged (run with `-o log_cli=true
--log-cli-level=INFO` to see them). One platform serves the whole module; every test uses
its own record and request ids, so each counts only what it sent."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from river.datasets import synth

from cli.kafka_io import follower, producer, send_all
from cli.platform import Platform
from contracts.events import DataWindow, LabeledRecord, TrainingReason, TrainingRequested
from contracts.topics import Topic
from shared.datasets import DatasetStore
from tests.fault.conftest import PROJECT_FILE

logger = logging.getLogger(__name__)

MODEL, DATASET = "loans-tree", "loans"
DEADLINE = 180.0  # generous bound for a failing test; nothing asserts how fast it went


@pytest.fixture(scope="module")
def platform(platform_factory: Callable[..., Platform],
             tmp_path_factory: pytest.TempPathFactory) -> Platform:
    # The shipped budget (6 trainings per model per hour) would refuse this module's 13
    # requests: these tests are about delivery, so the budget is raised for them.
    project = PROJECT_FILE.read_text().replace("max_retrains_per_hour = 6",
                                               "max_retrains_per_hour = 100")
    assert "max_retrains_per_hour = 100" in project
    config = tmp_path_factory.mktemp("kill9-project") / "driftloop.toml"
    config.write_text(project)
    return platform_factory(config=config)


def wait_for(check: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.5)


def stored(platform: Platform, prefix: str) -> Counter[str]:
    """How many times each record id with `prefix` is in the dataset store."""
    store = DatasetStore(platform.data_dir / "datasets")
    if not store.segments(DATASET):
        return Counter()
    return Counter(r.record_id for r in store.read(store.snapshot(DATASET))
                   if r.record_id.startswith(prefix))


def labeled(prefix: str, count: int, seed: int) -> list[LabeledRecord]:
    rows = itertools.islice(synth.Agrawal(seed=seed), count)
    return [LabeledRecord(dataset=DATASET, record_id=f"{prefix}{i}", features=x, label=y)
            for i, (x, y) in enumerate(rows)]


async def publish(bootstrap: str, topic: Topic, events: list[tuple[str, Any]],
                  chunk: int, pause: float) -> int:
    """Publish in chunks with a pause between them (a stream, not one burst); returns how
    many the broker acknowledged."""
    acknowledged = 0
    async with producer(bootstrap) as kafka:
        for start in range(0, len(events), chunk):
            acknowledged += await send_all(kafka, topic.value, events[start:start + chunk])
            await asyncio.sleep(pause)
    return acknowledged


def in_background(work: Callable[[], int]) -> Callable[[], int]:
    """Run `work` in a thread; the returned function joins it and gives its result."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()

    def join() -> int:
        thread.join(DEADLINE)
        assert result, "the publisher did not finish"
        return result[0]

    return join


async def read_validated(bootstrap: str, prefix: str, expected: int) -> Counter[str]:
    """Every data.validated event with `prefix`, by record id, read until all ids are seen
    and the topic has been quiet for a moment."""
    seen: Counter[str] = Counter()
    async with follower(bootstrap, [Topic.DATA_VALIDATED]) as consumer:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            batches = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batches and len(seen) >= expected:
                break
            for messages in batches.values():
                for message in messages:
                    key = (message.key or b"").decode()
                    if key.startswith(prefix):
                        seen[key] += 1
    return seen


def ensure_data(platform: Platform, needed: int) -> None:
    """Enough labeled records in the store for training requests to run on."""
    if sum(stored(platform, "").values()) >= needed:
        return
    records = labeled("seed-", needed, seed=11)
    asyncio.run(publish(platform.bootstrap or "", Topic.DATA_LABELED,
                        [(r.record_id, r) for r in records], chunk=500, pause=0))
    wait_for(lambda: len(stored(platform, "seed-")) >= needed, "the seed records")


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "term"])
def test_ingestion_stopped_mid_stream_loses_and_repeats_no_record(
        platform: Platform, signum: signal.Signals) -> None:
    total, prefix = 8000, f"k9i{signum}-"
    records = labeled(prefix, total, seed=7)
    join = in_background(lambda: asyncio.run(publish(
        platform.bootstrap or "", Topic.DATA_LABELED, [(r.record_id, r) for r in records],
        chunk=200, pause=0.05)))
    wait_for(lambda: len(stored(platform, prefix)) >= 500, "ingestion to store some records")
    pid = platform.kill("ingestion", signum)
    before = sum(stored(platform, prefix).values())
    platform.restart("ingestion")
    acknowledged = join()
    assert before < total, "the kill came after the stream: nothing was in flight"
    wait_for(lambda: len(stored(platform, prefix)) >= total, "every record to be stored")
    after = stored(platform, prefix)
    validated = asyncio.run(read_validated(platform.bootstrap or "", prefix, total))
    logger.info("ingestion %s (pid %d): acknowledged %d, stored before the kill %d, "
                "stored after %d (distinct %d), data.validated events %d (distinct %d)",
                signum.name, pid, acknowledged, before, sum(after.values()), len(after),
                sum(validated.values()), len(validated))
    assert acknowledged == total
    assert len(after) == total and sum(after.values()) == total, "lost or stored twice"
    assert len(validated) == total, "a record never reached data.validated"
    assert all(platform.alive().values())


def versions(platform: Platform, prefix: str) -> Counter[str]:
    """How many registry versions answer each training request id with `prefix`."""
    try:
        answer = httpx.get(f"{platform.url('registry')}/v1/models/{MODEL}/versions",
                           timeout=5)
    except httpx.HTTPError:
        return Counter()
    if answer.status_code != 200:
        return Counter()
    return Counter(v["request_id"] for v in answer.json()
                   if str(v.get("request_id") or "").startswith(prefix))


async def read_trained(bootstrap: str, prefix: str, expected: int) -> Counter[str]:
    """models.trained events answering requests with `prefix`: run ids by request id."""
    runs: dict[str, set[str]] = {}
    async with follower(bootstrap, [Topic.MODELS_TRAINED]) as consumer:
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches and len(runs) >= expected:
                break
            for messages in batches.values():
                for message in messages:
                    event = orjson.loads(message.value or b"{}")
                    request = str(event.get("request_id", ""))
                    if request.startswith(prefix):
                        runs.setdefault(request, set()).add(str(event["run_id"]))
    return Counter({request: len(ids) for request, ids in runs.items()})


@pytest.mark.parametrize("signum", [signal.SIGKILL], ids=["kill9"])  # SIGTERM: same, measured
@pytest.mark.parametrize("victim", ["registry", "training"])
def test_stopped_while_models_are_in_flight_records_every_version_once(
        platform: Platform, victim: str, signum: signal.Signals) -> None:
    """Training requests stream in; the victim is killed after the first version of this
    test is recorded and started again; every request ends as exactly one version."""
    ensure_data(platform, 2500)
    count, prefix = 6, f"k9{victim[0]}{signum}-"
    requests = [TrainingRequested(request_id=f"{prefix}{i}", model=MODEL,
                                  reason=TrainingReason.MANUAL, window=DataWindow(last=800),
                                  requested_by="kill9-test") for i in range(count)]
    acknowledged = asyncio.run(publish(platform.bootstrap or "", Topic.TRAINING_REQUESTS,
                                       [(MODEL, r) for r in requests], chunk=count, pause=0))
    wait_for(lambda: len(versions(platform, prefix)) >= 1, "a first version to be recorded")
    before = versions(platform, prefix)
    pid = platform.kill(victim, signum)
    platform.restart(victim)
    wait_for(lambda: len(versions(platform, prefix)) >= count, "every request's version")
    after = versions(platform, prefix)
    trained = asyncio.run(read_trained(platform.bootstrap or "", prefix, count))
    logger.info("%s %s (pid %d): %d requests acknowledged, versions recorded just before "
                "the kill %d, after %d (per request %s), models.trained runs per request %s",
                victim, signum.name, pid, acknowledged, sum(before.values()), sum(after.values()),
                dict(after), dict(trained))
    assert acknowledged == count
    assert sum(before.values()) < count, "the kill came after every version: none in flight"
    assert after == Counter({r.request_id: 1 for r in requests}), "lost or recorded twice"
    assert all(platform.alive().values())


def labeled_count(platform: Platform) -> int | None:
    """Labeled samples monitoring has joined for the model's watched version (None: down)."""
    try:
        answer = httpx.get(f"{platform.url('monitoring')}/v1/status", timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200 or MODEL not in answer.json():
        return None
    return int(answer.json()[MODEL]["labeled"])


def predict_and_label(platform: Platform, prefix: str, count: int, seed: int) -> int:
    """`count` predictions through serving, then their labels on data.labeled."""
    rows = list(itertools.islice(synth.Agrawal(seed=seed), count))
    labels = []
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        for i, (x, y) in enumerate(rows):
            answer = serving.post(f"/v1/models/{MODEL}/predict", json={"features": x})
            assert answer.status_code == 200, answer.text
            labels.append(LabeledRecord(dataset=DATASET, record_id=f"{prefix}{i}", features=x,
                                        label=y, prediction_id=answer.json()["prediction_id"]))
    return asyncio.run(publish(platform.bootstrap or "", Topic.DATA_LABELED,
                               [(r.record_id, r) for r in labels], chunk=50, pause=0.05))


def serving_answers(platform: Platform) -> bool:
    x, _ = next(iter(synth.Agrawal(seed=1)))
    answer = httpx.post(f"{platform.url('serving')}/v1/models/{MODEL}/predict",
                        json={"features": x}, timeout=10)
    return answer.status_code == 200


@pytest.mark.parametrize("signum", [signal.SIGKILL], ids=["kill9"])  # SIGTERM: same, measured
def test_monitoring_stopped_mid_stream_resumes_from_its_committed_offsets(
        platform: Platform, signum: signal.Signals) -> None:
    """Monitoring's joins and detectors live in memory (a documented limit): a kill -9 loses
    the joins pending at that moment (a prediction read, its label not yet). What must hold:
    it starts again, resumes from its committed offsets and joins every prediction and label
    that was sent while it was down."""
    ensure_data(platform, 2500)
    wait_for(lambda: serving_answers(platform), "a champion to be served")
    wait_for(lambda: labeled_count(platform) is not None, "monitoring to watch the model")
    count = 300
    start = labeled_count(platform) or 0
    join = in_background(lambda: predict_and_label(platform, "k9m-a-", count, seed=21))
    wait_for(lambda: (labeled_count(platform) or 0) > start, "monitoring to join some labels")
    before = (labeled_count(platform) or 0) - start
    pid = platform.kill("monitoring", signum)
    in_flight = join()
    while_down = predict_and_label(platform, "k9m-b-", count, seed=22)
    platform.restart("monitoring")
    wait_for(lambda: (labeled_count(platform) or 0) >= count,
             "every pair sent while monitoring was down to be joined")
    time.sleep(3)  # not a timing assertion: lets the rest of the backlog settle for the log
    after = labeled_count(platform) or 0
    logger.info("monitoring %s (pid %d): %d prediction+label pairs in flight, %d joined "
                "before the kill, %d of them after the restart, so %d lost with the pending "
                "joins; %d sent while it was down, all joined after the restart", signum.name, pid,
                in_flight, before, after - while_down, in_flight - before - (after - while_down),
                while_down)
    assert in_flight == while_down == count
    assert all(platform.alive().values())


def completed_feedback(platform: Platform, prediction_ids: set[str]) -> int:
    """How many of these predictions' feedback monitoring completed into stored records."""
    wanted = {f"feedback-{p}" for p in prediction_ids}
    return sum(1 for record_id in stored(platform, "feedback-") if record_id in wanted)


@pytest.mark.parametrize("signum", [signal.SIGKILL], ids=["kill9"])
def test_monitoring_killed_with_pending_joins_joins_them_after_restart(
        platform: Platform, signum: signal.Signals) -> None:
    """2,000 predictions wait for their labels when monitoring is killed; the labels come
    only after the restart, and every one of them still meets its prediction."""
    ensure_data(platform, 2500)
    wait_for(lambda: serving_answers(platform), "a champion to be served")
    wait_for(lambda: labeled_count(platform) is not None, "monitoring to watch the model")
    count = 2_000
    rows = list(itertools.islice(synth.Agrawal(seed=31), count))
    outcomes: dict[str, int] = {}
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        for x, y in rows:
            answer = serving.post(f"/v1/models/{MODEL}/predict", json={"features": x})
            assert answer.status_code == 200, answer.text
            outcomes[answer.json()["prediction_id"]] = int(y)

    def pending() -> int:
        answer = httpx.get(f"{platform.url('monitoring')}/v1/status", timeout=5)
        return int(answer.json()["pending_joins"]) if answer.status_code == 200 else 0

    wait_for(lambda: pending() >= count, "monitoring to hold the 2,000 predictions")
    time.sleep(2)  # not a timing assertion: past a checkpoint, the state monitoring must keep
    platform.kill("monitoring", signum)
    platform.restart("monitoring")
    feedback = [{"prediction_id": p, "label": y} for p, y in outcomes.items()]
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        for start in range(0, count, 1000):
            sent = serving.post("/v1/feedback", json=feedback[start:start + 1000])
            assert sent.status_code == 202, sent.text
    wait_for(lambda: completed_feedback(platform, set(outcomes)) >= count,
             "every feedback to meet its prediction after the restart", 120)
    assert completed_feedback(platform, set(outcomes)) == count


def flipped_traffic(platform: Platform, count: int, seed: int) -> None:
    """`count` predictions, each followed by feedback with the opposite of Agrawal's label:
    a concept drift as sharp as can be, which a model retrained on it learns back."""
    rows = list(itertools.islice(synth.Agrawal(seed=seed), count))
    feedback = []
    with httpx.Client(base_url=platform.url("serving"), timeout=10) as serving:
        for x, y in rows:
            answer = serving.post(f"/v1/models/{MODEL}/predict", json={"features": x})
            assert answer.status_code == 200, answer.text
            feedback.append({"prediction_id": answer.json()["prediction_id"],
                             "label": 1 - int(y)})
        sent = serving.post("/v1/feedback", json=feedback)
        assert sent.status_code == 202, sent.text


def concept_alerts(platform: Platform) -> list[dict[str, Any]]:
    answer = httpx.get(f"{platform.url('monitoring')}/v1/alerts", timeout=5)
    return [a for a in answer.json() if a["kind"] == "concept_drift"]


def status(platform: Platform) -> dict[str, Any]:
    return dict(httpx.get(f"{platform.url('monitoring')}/v1/status", timeout=5).json()[MODEL])


def test_a_firing_alert_resolves_after_monitoring_is_killed(platform: Platform) -> None:
    """The alert raised before a kill -9, and the retrain it asked for, are still monitoring's
    after the restart: the retrain's decision is recognised, the alert resolves under its own
    id, and no retrain is requested twice."""
    ensure_data(platform, 2500)
    wait_for(lambda: serving_answers(platform), "a champion to be served")
    wait_for(lambda: labeled_count(platform) is not None, "monitoring to watch the model")
    before = {a["alert_id"] for a in concept_alerts(platform)}
    seed = itertools.count(100)

    def fired() -> bool:
        flipped_traffic(platform, 100, next(seed))
        return "concept_drift" in status(platform)["firing"] and bool(
            status(platform)["retrain_in_flight"])

    wait_for(fired, "the flipped labels to raise a concept-drift alert and a retrain")
    [alert] = [a for a in concept_alerts(platform)
               if a["alert_id"] not in before and a["status"] == "firing"][-1:]
    in_flight = status(platform)["retrain_in_flight"]

    platform.kill("monitoring", signal.SIGKILL)
    platform.restart("monitoring")
    restored = status(platform)
    assert "concept_drift" in restored["firing"]
    assert restored["retrain_in_flight"] in (in_flight, None)  # None: already decided

    def resolved() -> bool:
        flipped_traffic(platform, 100, next(seed))
        return any(a["alert_id"] == alert["alert_id"] and a["status"] == "resolved"
                   for a in concept_alerts(platform))

    wait_for(resolved, "the alert raised before the kill to resolve after it")
    requests = [r for r in asyncio.run(read_requests(platform.bootstrap or ""))
                if r.evidence.get("alert_id") == alert["alert_id"]]
    assert requests and requests[0].request_id == in_flight
    attempts = [r.evidence["attempt"] for r in requests]
    assert len({r.request_id for r in requests}) == len(requests)
    assert attempts == list(range(1, len(requests) + 1)), attempts  # none repeated


async def read_requests(bootstrap: str) -> list[TrainingRequested]:
    """Every training request on the topic, read until it has been quiet for a moment."""
    found: list[TrainingRequested] = []
    async with follower(bootstrap, [Topic.TRAINING_REQUESTS]) as consumer:
        while batches := await consumer.getmany(timeout_ms=2000, max_records=5000):
            for messages in batches.values():
                found += [TrainingRequested.model_validate_json(m.value) for m in messages]
    return found
