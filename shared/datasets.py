"""The dataset store: validated records in immutable, content-addressed segments.

Layout under `root/<dataset>/`:
  segments/<sha256>.jsonl   one batch of records, named by the hash of its bytes
  log.jsonl                 append-only list of segments with their ingestion time and
                            the newest event time they hold
  snapshots/<id>.json       a manifest of (segment, start, end) slices; id = its sha256

A snapshot therefore names exact bytes: any model can be traced to, and
retrained from, the data that built it. Ingestion is the only writer; training
reads. A torn last log line (a crash mid-write) is ignored by readers.

Ingestion order is not time order: a backlog is consumed partition by partition, so the
newest records by ingestion interleave older and newer observations. "Newest" therefore
always means by event time (ties by sequence): `snapshot(last=n)` keeps the n newest by
event time, and `by_event_time` is the order a holdout is cut from.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    newest_event: float | None = None
    """Largest event time (POSIX seconds) in the segment; None in logs written before it was
    recorded (such a segment is always read when looking for the newest records)."""


@dataclass(slots=True)
class _LogTail:
    """How far a store has read a dataset's log, and the segments read so far."""

    inode: int
    offset: int = 0
    segments: list[Segment] = field(default_factory=list)


def _parse_log(data: bytes) -> Iterator[Segment]:
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn line of a crashed writer (the next writer ended it)
        yield Segment(entry["digest"], entry["count"], entry["first_sequence"],
                      datetime.fromisoformat(entry["ingested_at"]), entry.get("newest_event"))


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
        self._logs: dict[str, _LogTail] = {}
        self._logs_lock = threading.Lock()

    def _dir(self, dataset: str) -> Path:
        return self.root / dataset

    def segments(self, dataset: str) -> list[Segment]:
        """Every segment of a dataset, oldest first.

        The log is append-only, so each store remembers how far it has read it and parses
        only the lines added since (an online learner asks many times a second; the log of a
        long stream holds thousands of segments). A log that shrank or was replaced is read
        again from its start."""
        log = self._dir(dataset) / "log.jsonl"
        with self._logs_lock:
            try:
                handle = log.open("rb")
            except FileNotFoundError:
                self._logs.pop(dataset, None)
                return []
            with handle:
                stat = os.fstat(handle.fileno())
                tail = self._logs.get(dataset)
                if tail is None or tail.inode != stat.st_ino or tail.offset > stat.st_size:
                    tail = self._logs[dataset] = _LogTail(stat.st_ino)
                if stat.st_size > tail.offset:
                    handle.seek(tail.offset)
                    data = handle.read(stat.st_size - tail.offset)
                    whole = data.rfind(b"\n") + 1  # a line still being written waits
                    tail.segments.extend(_parse_log(data[:whole]))
                    tail.offset += whole
            return list(tail.segments)

    @contextmanager
    def writer_lock(self, dataset: str) -> Iterator[None]:
        """Exclusive among every process writing `dataset` (an flock, released when the block
        ends or the process dies): replicas of ingestion read the log's tail, pick sequence
        numbers and append as one step."""
        directory = self._dir(dataset)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

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
        segment = Segment(digest, len(records), records[0].sequence, ingested_at,
                          max(_event_key(record)[0] for record in records))
        line = json.dumps({"digest": digest, "count": segment.count,
                           "first_sequence": segment.first_sequence,
                           "ingested_at": ingested_at.isoformat(),
                           "newest_event": segment.newest_event}) + "\n"
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
        """Freeze a window: records ingested since `since`, at most the `last` newest by event
        time. The manifest lists them in ingestion order (read them `by_event_time`)."""
        chosen = [s for s in self.segments(dataset) if since is None or s.ingested_at >= since]
        if last is None or last >= sum(s.count for s in chosen):
            slices = [(s.digest, 0, s.count) for s in chosen]
        elif last <= 0:
            slices = []
        else:
            slices = self._newest(dataset, chosen, last)
        records = sum(end - start for _, start, end in slices)
        manifest = json.dumps({"dataset": dataset, "slices": slices, "records": records},
                              sort_keys=True, separators=(",", ":")).encode()
        snapshot_id = hashlib.sha256(manifest).hexdigest()
        path = self._dir(dataset) / "snapshots" / f"{snapshot_id}.json"
        if not path.exists():
            atomic_write(path, manifest)
        return Snapshot(snapshot_id, dataset, tuple(slices), records)

    def _newest(self, dataset: str, segments: list[Segment],
                last: int) -> list[tuple[str, int, int]]:
        """Slices holding the `last` newest records of `segments` by event time.

        Segments are visited from the newest event time down and reading stops once no
        unread segment can hold a newer record, so only the tail of a long log is read.
        """
        newest: list[tuple[tuple[float, int], int, int]] = []  # min-heap: key, segment, row
        visit = sorted(range(len(segments)), reverse=True,
                       key=lambda i: (segments[i].newest_event is None,
                                      segments[i].newest_event or 0.0))
        for index in visit:
            bound = segments[index].newest_event
            if len(newest) >= last and bound is not None and bound < newest[0][0][0]:
                break  # this and every later-visited segment only hold older records
            for row, record in enumerate(self._read_segment(dataset, segments[index].digest)):
                item = (_event_key(record), index, row)
                if len(newest) < last:
                    heapq.heappush(newest, item)
                elif item > newest[0]:
                    heapq.heapreplace(newest, item)
        rows: dict[int, list[int]] = {}
        for _, index, row in newest:
            rows.setdefault(index, []).append(row)
        slices: list[tuple[str, int, int]] = []
        for index in sorted(rows):  # ingestion order; contiguous rows as one slice
            for start, end in _runs(sorted(rows[index])):
                slices.append((segments[index].digest, start, end))
        return slices

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
        """The snapshot's records, in ingestion order (see `by_event_time`)."""
        for digest, start, end in snapshot.slices:
            yield from self._read_segment(snapshot.dataset, digest)[start:end]

    def end_of(self, snapshot: Snapshot) -> int | None:
        """The first log position a model trained on `snapshot` never learned: after the
        furthest record of any of its slices, whatever their order. None when a slice's
        segment is not in the log (a snapshot of another store)."""
        ends = {digest: end for digest, _, end in snapshot.slices}
        start, newest = 0, 0
        for segment in self.segments(snapshot.dataset):
            if segment.digest in ends:
                newest = start + ends.pop(segment.digest)
            start += segment.count
        return None if ends else newest

    def records_from(self, dataset: str, position: int,
                     segments: Sequence[Segment] | None = None,
                     ) -> Iterator[tuple[int, RecordValidated]]:
        """(log position, record) of every record logged at `position` or later, in log
        order (of `segments`, a prefix of the log, when given): how a reader that learned the
        log up to `position` catches up. Only the segments holding them are read."""
        start = 0
        for segment in self.segments(dataset) if segments is None else segments:
            end = start + segment.count
            if end > position:
                rows = self._read_segment(dataset, segment.digest)[:segment.count]
                for row in range(max(position - start, 0), len(rows)):
                    yield start + row, rows[row]
            start = end

    def read_segment(self, dataset: str, digest: str) -> list[RecordValidated]:
        """One logged segment's records, in order: how an online learner tails the log."""
        return self._read_segment(dataset, digest)

    def _read_segment(self, dataset: str, digest: str) -> list[RecordValidated]:
        path = self._dir(dataset) / "segments" / f"{digest}.jsonl"
        return [RecordValidated.model_validate_json(line)
                for line in path.read_bytes().splitlines() if line]


def by_event_time(records: Iterable[RecordValidated]) -> list[RecordValidated]:
    """Records in the order they were observed (ties: ingestion sequence): the order in which
    "the newest" is meant, e.g. for a time-ordered holdout."""
    return sorted(records, key=_event_key)


def _event_key(record: RecordValidated) -> tuple[float, int]:
    # POSIX seconds: comparable whether or not a producer's time carried a zone.
    return record.event_time.timestamp(), record.sequence


def _runs(rows: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted row numbers as half-open (start, end) ranges of consecutive rows."""
    start = previous = rows[0]
    for row in rows[1:]:
        if row != previous + 1:
            yield start, previous + 1
            start = row
        previous = row
    yield start, previous + 1
