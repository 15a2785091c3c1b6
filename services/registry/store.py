"""Persistence of versions, champions and the audit log (SQLite or PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from contracts.base import utcnow
from contracts.events import (
    ArtifactRef,
    BinnedDistribution,
    Lineage,
    ModelLifecycleChanged,
    ModelTrained,
)
from contracts.http import AuditEntry, ModelVersionView
from contracts.topics import Topic
from services.registry.schema import audit, champions, migrate, outbox, versions
from shared.errors import VersionNotFound
from shared.tracing import trace_id_var

Lookup = Callable[[int], ModelVersionView]
Announce = Callable[["Decided", Lookup], Sequence[ModelLifecycleChanged]]
"""Builds a decision's events inside its transaction, from what was decided (the champion
before it, the sequence numbers written) and a lookup of versions on the transaction's own
connection."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting to be published; `ce_id` is fixed when the row is written, so every
    re-send of it carries the same id (consumers de-duplicate by it)."""

    id: int
    ce_id: str
    topic: Topic
    key: str
    payload: bytes
    trace_id: str | None


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every datetime we store is UTC."""
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _inserted_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the database returned no id for an audit line")
    return int(key[0])


@dataclass(frozen=True, slots=True)
class Decided:
    """What `decide` did: the champion before, and the sequence numbers it wrote."""

    previous: int | None
    sequence: int
    archived_sequence: int | None = None


class RegistryStore:
    """Reads and writes of the registry database; each method is one transaction."""

    def __init__(self, url: str) -> None:
        options: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            options["connect_args"] = {"check_same_thread": False}
        self.engine = sa.create_engine(url, **options)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @staticmethod
    def _sequences(conn: sa.Connection, model: str,
                   version: int | None = None) -> dict[int, int]:
        """Version → id of its latest audit line: the sequence of its latest decision."""
        query = (sa.select(audit.c.version, sa.func.max(audit.c.id))
                 .where(audit.c.model == model).group_by(audit.c.version))
        if version is not None:
            query = query.where(audit.c.version == version)
        return {int(v): int(i) for v, i in conn.execute(query).all()}

    def decision_sequence(self, model: str, version: int) -> int | None:
        with self.engine.connect() as conn:
            return self._sequences(conn, model, version).get(version)

    @staticmethod
    def _view(row: sa.Row[Any], champion: int | None,
              sequence: int | None = None) -> ModelVersionView:
        stage = "champion" if champion == row.version else row.stage
        return ModelVersionView(
            model=row.model, version=row.version, run_id=row.run_id,
            request_id=row.request_id, stage=stage,
            metric=row.metric, metrics=row.metrics, baseline_version=row.baseline_version,
            baseline_metrics=row.baseline_metrics,
            artifact=ArtifactRef.model_validate(row.artifact),
            lineage=Lineage.model_validate(row.lineage),
            reference_profile={k: BinnedDistribution.model_validate(v)
                               for k, v in row.reference_profile.items()},
            decision=row.decision, created_at=_aware(row.created_at),
            decision_sequence=sequence)

    def champion_version(self, model: str, conn: sa.Connection | None = None) -> int | None:
        query = sa.select(champions.c.version).where(champions.c.model == model)
        if conn is not None:
            return conn.execute(query).scalar()
        with self.engine.connect() as own:
            return own.execute(query).scalar()

    def by_run(self, run_id: str) -> ModelVersionView | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(versions).where(versions.c.run_id == run_id)).first()
            if row is None:
                return None
            return self._view(row, self.champion_version(row.model, conn),
                              self._sequences(conn, row.model, row.version).get(row.version))

    def get(self, model: str, version: int, conn: sa.Connection | None = None) -> ModelVersionView:
        if conn is None:
            with self.engine.connect() as own:
                return self.get(model, version, own)
        row = conn.execute(sa.select(versions).where(
            versions.c.model == model, versions.c.version == version)).first()
        if row is None:
            raise VersionNotFound(model=model, version=version)
        return self._view(row, self.champion_version(model, conn),
                          self._sequences(conn, model, version).get(version))

    def list_versions(self, model: str) -> list[ModelVersionView]:
        with self.engine.connect() as conn:
            champion = self.champion_version(model, conn)
            rows = conn.execute(sa.select(versions).where(versions.c.model == model)
                                .order_by(versions.c.version)).all()
            sequences = self._sequences(conn, model)
            return [self._view(row, champion, sequences.get(row.version)) for row in rows]

    def models(self) -> list[tuple[str, int | None, int]]:
        """(model, champion version, number of versions) for every registered model."""
        with self.engine.connect() as conn:
            counts = conn.execute(sa.select(versions.c.model, sa.func.count())
                                  .group_by(versions.c.model)).all()
            return [(model, self.champion_version(model, conn), int(n)) for model, n in counts]

    def add_version(self, event: ModelTrained) -> int:
        """Insert the run as the model's next version; returns the version number."""
        with self.engine.begin() as conn:
            latest = conn.execute(sa.select(sa.func.max(versions.c.version))
                                  .where(versions.c.model == event.model)).scalar() or 0
            conn.execute(versions.insert().values(
                model=event.model, version=latest + 1, run_id=event.run_id,
                request_id=event.request_id, stage="candidate", metric=event.metric,
                metrics=event.metrics, baseline_version=event.baseline_version,
                baseline_metrics=event.baseline_metrics,
                artifact=event.artifact.model_dump(mode="json"),
                lineage=event.lineage.model_dump(mode="json"),
                reference_profile={k: v.model_dump() for k, v in event.reference_profile.items()},
                created_at=utcnow()))
            return latest + 1

    def decide(self, model: str, version: int, action: str, reason: str, actor: str,
               new_champion: int | None, stage: str | None = None,
               announce: Announce | None = None) -> Decided:
        """Record a decision: stages, champion, audit line and the events `announce` builds
        for it, all in one transaction (a decision is never stored without its events, nor
        announced without being stored). Returns the previous champion and the sequence
        (audit line id) of the decision and of the archiving it caused."""
        now = utcnow()
        with self.engine.begin() as conn:
            previous = self.champion_version(model, conn)
            values: dict[str, Any] = {"decision": reason}
            if stage is not None:
                values.update(stage=stage, decision_action=action)
            conn.execute(versions.update().where(versions.c.model == model,
                                                 versions.c.version == version).values(**values))
            sequence = _inserted_id(conn.execute(audit.insert().values(
                model=model, version=version, action=action, reason=reason, actor=actor,
                at=now)))
            archived: int | None = None
            if new_champion is not None and new_champion != previous:
                if previous is None:
                    conn.execute(champions.insert().values(model=model, version=new_champion))
                else:
                    conn.execute(champions.update().where(champions.c.model == model)
                                 .values(version=new_champion))
                    conn.execute(versions.update().where(
                        versions.c.model == model, versions.c.version == previous)
                        .values(stage="archived"))
                    archived = _inserted_id(conn.execute(audit.insert().values(
                        model=model, version=previous, action="archived",
                        reason=f"replaced by v{new_champion}", actor=actor, at=now)))
            decided = Decided(previous, sequence, archived)
            if announce is not None:
                events = announce(decided, lambda number: self.get(model, number, conn))
                self._enqueue(conn, Topic.MODELS_LIFECYCLE, [(e.model, e) for e in events])
            return decided

    @staticmethod
    def _enqueue(conn: sa.Connection, topic: Topic,
                 events: Sequence[tuple[str, ModelLifecycleChanged]]) -> None:
        trace_id = trace_id_var.get()  # the request's or the consumed event's trace
        for key, event in events:
            conn.execute(outbox.insert().values(
                ce_id=uuid.uuid4().hex, topic=topic.value, key=key,
                payload=event.model_dump_json(), trace_id=trace_id, created_at=utcnow()))

    def pending_events(self, limit: int = 100) -> list[OutboxRow]:
        """Events not yet acknowledged by the broker, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(outbox).where(
                outbox.c.sent_at.is_(None), outbox.c.error.is_(None))
                .order_by(outbox.c.id).limit(limit)).all()
        return [OutboxRow(r.id, r.ce_id, Topic(r.topic), r.key, r.payload.encode(), r.trace_id)
                for r in rows]

    def mark_sent(self, row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == row_id).values(sent_at=utcnow()))

    def mark_unsendable(self, row_id: int, error: str) -> None:
        """Set a row aside that the broker refuses for itself (it would block every later one)."""
        with self.engine.begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == row_id)
                         .values(error=error[:2000]))

    def audit_log(self, model: str) -> list[AuditEntry]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(audit).where(audit.c.model == model)
                                .order_by(audit.c.id)).all()
            return [AuditEntry(model=r.model, version=r.version, action=r.action,
                               reason=r.reason, actor=r.actor, at=_aware(r.at)) for r in rows]
