"""The registry's tables and their migrations (applied in order at start-up)."""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version", metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

versions = sa.Table(
    "model_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(100), nullable=False, unique=True),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("metric", sa.String(50), nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("baseline_version", sa.Integer, nullable=True),
    sa.Column("baseline_metrics", sa.JSON, nullable=True),
    sa.Column("artifact", sa.JSON, nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("reference_profile", sa.JSON, nullable=False),
    sa.Column("decision_action", sa.String(20), nullable=True),
    sa.Column("decision", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model", "version"),
)

champions = sa.Table(
    "champions", metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

audit = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ce_id", sa.String(64), nullable=False, unique=True),
    sa.Column("topic", sa.String(100), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, index=True),
    sa.Column("error", sa.Text, nullable=True),
)
"""Events written in the same transaction as the decision they announce; the publisher sends
the rows with no sent_at (oldest first) and stamps them once the broker acknowledged."""


def _v1(conn: sa.Connection) -> None:
    for table in (versions, champions, audit):
        table.create(conn, checkfirst=True)


def _v2(conn: sa.Connection) -> None:
    outbox.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[sa.Connection], None]] = [_v1, _v2]
"""Migration N+1 is MIGRATIONS[N]; append, never edit a released one."""


def migrate(engine: sa.Engine) -> int:
    """Apply pending migrations; returns the schema version now in force."""
    from contracts.base import utcnow

    with engine.begin() as conn:
        schema_version.create(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            step(conn)
            conn.execute(schema_version.insert().values(version=number, applied_at=utcnow()))
    return len(MIGRATIONS)
