"""The dataset store: validated records in immutable, content-addressed segments.

Layout under `root/<dataset>/`:
  segments/<sha256>.jsonl   one batch of records, named by the hash of its bytes
  log.jsonl                 append-only list of segments with their ingestion time
  snapshots/<id>.json       a manifest of (segment, start, end) slices; id = its sha256

A snapshot therefore names exact bytes: any model can be traced to, and
retrained from, the data that built it. Ingestion is the only writer; training
reads. A torn last log line (a crash mid-write) is ignored by readers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from contracts.events import RecordValidated
from shared.errors import SnapshotNotFound
from shared.files import atomic_write


@dataclass(frozen=True, slots=True)
class Segment:
    """A log entry: one immutable batch of records."""

    digest: str
    count: int
    first_sequence: int
    ingested_at: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable selection of records, addressed by the hash of its manifest."""

    snapshot_id: str
    dataset: str
    slices: tuple[tuple[str, int, int], ...]
    records: int


class DatasetStore:
    """Append and snapshot validated records of every dataset under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, dataset: str) -> Path:
        return self.root / dataset

    def segments(self, dataset: str) -> list[Segment]:
        """Every segment of a dataset, oldest first."""
        log = self._dir(dataset) / "log.jsonl"
        if not log.exists():
            return []
        found: list[Segment] = []
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line of a crashed writer
            found.append(Segment(entry["digest"], entry["count"], entry["first_sequence"],
                                 datetime.fromisoformat(entry["ingested_at"])))
        return found

    def size(self, dataset: str) -> int:
        """Number of records stored."""
        return sum(segment.count for segment in self.segments(dataset))

    def record_ids(self, dataset: str) -> set[str]:
        """Ids of every stored record (for de-duplication after a restart)."""
        return {record.record_id for record in self.records(dataset)}

    def records(self, dataset: str) -> Iterator[RecordValidated]:
        """Every stored record of a dataset, in ingestion order."""
        for segment in self.segments(dataset):
            yield from self._read_segment(dataset, segment.digest)

    def append(self, dataset: str, records: Sequence[RecordValidated],
               ingested_at: datetime) -> Segment:
        """Write records as one segment and log it; durable when this returns."""
        directory = self._dir(dataset)
        (directory / "segments").mkdir(parents=True, exist_ok=True)
        body = b"".join(record.model_dump_json().encode() + b"\n" for record in records)
        digest = hashlib.sha256(body).hexdigest()
        segment_path = directory / "segments" / f"{digest}.jsonl"
        if not segment_path.exists():
            atomic_write(segment_path, body)
        segment = Segment(digest, len(records), records[0].sequence, ingested_at)
        line = json.dumps({"digest": digest, "count": segment.count,
                           "first_sequence": segment.first_sequence,
                           "ingested_at": ingested_at.isoformat()}) + "\n"
        fd = os.open(directory / "log.jsonl", os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # end a torn line left by a crash, so ours stays whole
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return segment

    def count_since(self, dataset: str, since: datetime | None) -> int:
        """Records ingested at or after `since` (all when None)."""
        return sum(s.count for s in self.segments(dataset)
                   if since is None or s.ingested_at >= since)

    def snapshot(self, dataset: str, since: datetime | None = None,
                 last: int | None = None) -> Snapshot:
        """Freeze a window (records ingested since `since`, at most the `last` newest)."""
        chosen = [s for s in self.segments(dataset) if since is None or s.ingested_at >= since]
        slices: list[tuple[str, int, int]] = [(s.digest, 0, s.count) for s in chosen]
        if last is not None:
            remaining, trimmed = last, []
            for digest, _, count in reversed(slices):
                if remaining <= 0:
                    break
                take = min(count, remaining)
                trimmed.append((digest, count - take, count))
                remaining -= take
            slices = list(reversed(trimmed))
        records = sum(end - start for _, start, end in slices)
        manifest = json.dumps({"dataset": dataset, "slices": slices, "records": records},
                              sort_keys=True, separators=(",", ":")).encode()
        snapshot_id = hashlib.sha256(manifest).hexdigest()
        path = self._dir(dataset) / "snapshots" / f"{snapshot_id}.json"
        if not path.exists():
            atomic_write(path, manifest)
        return Snapshot(snapshot_id, dataset, tuple(slices), records)

    def open_snapshot(self, dataset: str, snapshot_id: str) -> Snapshot:
        """A snapshot by id, verified against its manifest hash."""
        path = self._dir(dataset) / "snapshots" / f"{snapshot_id}.json"
        try:
            manifest = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotNotFound(snapshot_id=snapshot_id) from None
        if hashlib.sha256(manifest).hexdigest() != snapshot_id:
            raise SnapshotNotFound(snapshot_id=f"{snapshot_id} (manifest corrupted)")
        data = json.loads(manifest)
        slices = tuple((str(d), int(s), int(e)) for d, s, e in data["slices"])
        return Snapshot(snapshot_id, dataset, slices, int(data["records"]))

    def read(self, snapshot: Snapshot) -> Iterator[RecordValidated]:
        """The snapshot's records, in ingestion order."""
        for digest, start, end in snapshot.slices:
            yield from self._read_segment(snapshot.dataset, digest)[start:end]

    def _read_segment(self, dataset: str, digest: str) -> list[RecordValidated]:
        path = self._dir(dataset) / "segments" / f"{digest}.jsonl"
        return [RecordValidated.model_validate_json(line)
                for line in path.read_bytes().splitlines() if line]
