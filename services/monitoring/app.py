"""The monitoring service's app: health, metrics and recent alerts; one consumer."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from contracts.events import AlertRaised
from contracts.http import LiveView
from contracts.topics import Topic
from services.monitoring.consumers import (
    MonitorWorker,
    Rebalance,
    load_champions,
    monitor_handler,
)
from services.monitoring.handlers import Monitor
from services.monitoring.settings import MonitoringSettings
from shared.changelog import Changelog
from shared.consumer import Consumer
from shared.errors import ModelNotFound, UnknownWindow
from shared.http_errors import error_responses
from shared.project import load_project
from shared.service import Runtime, build_app

CHANGELOG_TOPIC = "monitoring.state"
"""Monitoring's changelog (behind the topic prefix): its joins, watches, alerts, outbox."""


def create_app(settings: MonitoringSettings) -> FastAPI:
    monitor = Monitor(load_project(settings.config),
                      max_pending_predictions=settings.max_pending_predictions,
                      max_pending_labels=settings.max_pending_labels,
                      partitions=settings.kafka_partitions)
    registry = settings.verifier("registry")  # a public key: decisions are checked, not made
    secret = settings.state_secret()

    workers: list[MonitorWorker] = []

    def owned() -> set[int]:
        """The input partitions this worker holds the state of."""
        return workers[0].owned if workers else set()

    async def on_start(runtime: Runtime) -> None:
        changelog = Changelog(runtime.bus, CHANGELOG_TOPIC, secret, settings.kafka_partitions)
        worker = monitor_handler(runtime.bus, monitor, registry, changelog,
                                 settings.checkpoint_seconds)
        workers.append(worker)
        # Feedback comes on the feedback topic alone (ingestion forwards the labels of whole
        # records there): every input of a model then shares one partition number.
        consumer = Consumer(runtime.bus, settings.group_id,
                            [Topic.PREDICTIONS, Topic.FEEDBACK, Topic.MODELS_LIFECYCLE],
                            worker, max_records=1000, stateful=True,
                            committable=worker.committable, listener=Rebalance(worker),
                            aligned=True)
        runtime.spawn("monitor", consumer.run)

        async def bootstrap(stopping: asyncio.Event) -> None:
            await worker.ready.wait()  # a restored watch already knows its champion
            await load_champions(monitor, settings.registry_url, stopping)

        runtime.spawn("load-champions", bootstrap)
        runtime.checks["consumer_assigned"] = consumer.assigned.is_set

    app, runtime = build_app("monitoring", settings, on_start, title="driftloop monitoring")

    @app.get("/v1/alerts", tags=["monitoring"], dependencies=runtime.auth.reads)
    async def alerts() -> list[AlertRaised]:
        """The most recent alerts this instance raised or resolved, oldest first."""
        return list(monitor.alerts)

    @app.get("/v1/models/{model}/live", tags=["monitoring"], response_model=LiveView,
             dependencies=runtime.auth.reads, responses=error_responses(404, 422))
    async def live(model: str, window: int | None = None,
                   version: int | None = None) -> LiveView:
        """Live metrics of `model` per version in tumbling windows of `window` seconds (one
        of the project's `monitor.live.windows_seconds`; default the smallest): predictions,
        accuracy or MAE of the labeled ones, outputs, latency and drift per feature."""
        watch = monitor.watches.get(model)
        if watch is None:
            raise ModelNotFound(model=model)
        sizes = watch.spec.monitor.live.windows_seconds
        size = sizes[0] if window is None else window
        if size not in sizes:
            raise UnknownWindow(window=size, model=model, known=", ".join(map(str, sizes)),
                                errors=[("window", f"one of {sizes}")])
        return LiveView.model_validate({"model": model, "window_seconds": size,
                                        "windows": watch.live.view(size, version)})

    @app.get("/v1/status", tags=["monitoring"], dependencies=runtime.auth.reads)
    async def status() -> dict[str, object]:
        """Per model: version watched, labeled samples, error rate, firing alerts."""
        return {name: {"version": w.concept.version, "labeled": w.concept.samples,
                       "error_rate": w.concept.error_rate, "firing": sorted(w.firing),
                       "retrain_in_flight": w.retrain_in_flight}
                for name, w in monitor.watches.items()} | {
                    "pending_joins": monitor.join.pending(),
                    "partitions": sorted(owned()),
                    "models_owned": sorted(m for m in monitor.watches
                                           if monitor.partition_of(m) in owned())}

    return app
