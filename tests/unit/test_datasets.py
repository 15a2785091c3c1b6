"""The dataset store (segments, snapshots) and the artifact store (digest, signature)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

from contracts.events import RecordValidated
from shared.artifacts import ArtifactStore
from shared.datasets import DatasetStore, by_event_time
from shared.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    ConfigError,
    SnapshotNotFound,
)
from tests.unit.factories import ATTACKER_KEY, T0, TRAINING_KEY, validated_rows


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "datasets")


def fill(store: DatasetStore, sizes: list[int]) -> list[list[str]]:
    """One segment per size, ingested a minute apart; returns the record ids per segment."""
    ids, sequence = [], 0
    for index, size in enumerate(sizes):
        at = T0 + timedelta(minutes=index)
        rows = validated_rows(size, first_sequence=sequence, seed=index, ingested_at=at)
        store.append("loans", rows, at)
        ids.append([r.record_id for r in rows])
        sequence += size
    return ids


def ids_of(store: DatasetStore, snapshot_id: str) -> list[str]:
    return [r.record_id for r in store.read(store.open_snapshot("loans", snapshot_id))]


# -- DatasetStore ---------------------------------------------------------------------------


def test_append_then_read_returns_exactly_the_records_in_order(store: DatasetStore) -> None:
    first, second = validated_rows(5), validated_rows(3, first_sequence=5, seed=9)
    store.append("loans", first, T0)
    store.append("loans", second, T0 + timedelta(minutes=1))
    snapshot = store.snapshot("loans")
    assert snapshot.records == 8
    assert list(store.read(snapshot)) == first + second
    assert store.size("loans") == 8
    assert store.record_ids("loans") == {r.record_id for r in first + second}


def test_snapshot_id_is_the_sha256_of_its_manifest(store: DatasetStore,
                                                   tmp_path: Path) -> None:
    fill(store, [4, 6])
    snapshot = store.snapshot("loans")
    manifest = tmp_path / "datasets" / "loans" / "snapshots" / f"{snapshot.snapshot_id}.json"
    assert hashlib.sha256(manifest.read_bytes()).hexdigest() == snapshot.snapshot_id


def test_same_window_gives_the_same_id(store: DatasetStore) -> None:
    fill(store, [4, 6])
    assert store.snapshot("loans", last=5) == store.snapshot("loans", last=5)
    assert store.snapshot("loans").snapshot_id == store.snapshot("loans").snapshot_id
    assert store.snapshot("loans", last=5).snapshot_id != store.snapshot("loans").snapshot_id


def test_new_data_changes_the_snapshot(store: DatasetStore) -> None:
    fill(store, [4])
    before = store.snapshot("loans")
    store.append("loans", validated_rows(2, first_sequence=4, seed=5), T0 + timedelta(hours=1))
    after = store.snapshot("loans")
    assert after.snapshot_id != before.snapshot_id
    assert ids_of(store, before.snapshot_id) == [r.record_id for r in store.read(before)]
    assert before.records == 4 and after.records == 6


def test_last_trims_to_the_newest_across_segments(store: DatasetStore) -> None:
    ids = fill(store, [4, 3, 5])
    snapshot = store.snapshot("loans", last=7)
    assert snapshot.records == 7
    assert [r.record_id for r in store.read(snapshot)] == ids[1][-2:] + ids[2]
    assert store.snapshot("loans", last=100).records == 12


def test_since_filters_by_segment_ingestion_time(store: DatasetStore) -> None:
    ids = fill(store, [4, 3, 5])
    since = T0 + timedelta(minutes=1)
    snapshot = store.snapshot("loans", since=since)
    assert [r.record_id for r in store.read(snapshot)] == ids[1] + ids[2]
    assert store.count_since("loans", since) == 8
    assert store.count_since("loans", None) == 12
    combined = store.snapshot("loans", since=since, last=6)
    assert [r.record_id for r in store.read(combined)] == ids[1][-1:] + ids[2]
    assert store.snapshot("loans", since=T0 + timedelta(hours=1)).records == 0


def observed_at(store: DatasetStore, seconds: list[list[int]]) -> None:
    """One segment per list, ingested a minute apart, records observed at T0 + those seconds
    (ids name the second)."""
    sequence = 0
    for index, batch in enumerate(seconds):
        at = T0 + timedelta(minutes=index)
        rows = [row.model_copy(update={"record_id": f"t-{second:04d}",
                                       "event_time": T0 + timedelta(seconds=second)})
                for row, second in zip(validated_rows(len(batch), first_sequence=sequence,
                                                      seed=index, ingested_at=at),
                                       batch, strict=True)]
        store.append("loans", rows, at)
        sequence += len(batch)


def test_last_keeps_the_newest_by_event_time_in_ingestion_order(store: DatasetStore) -> None:
    observed_at(store, [[0, 2, 4, 6], [1, 3, 5, 7], [8, 9]])  # two partitions, then live
    snapshot = store.snapshot("loans", last=5)
    ids = [r.record_id for r in store.read(snapshot)]
    assert ids == ["t-0006", "t-0005", "t-0007", "t-0008", "t-0009"]
    assert [r.record_id for r in by_event_time(store.read(snapshot))] == [
        "t-0005", "t-0006", "t-0007", "t-0008", "t-0009"]
    # rows 1..3 of a segment are one slice, not three
    assert store.snapshot("loans", last=7).slices[1][1:] == (1, 4)


def test_last_reads_only_segments_that_can_hold_the_newest(store: DatasetStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    observed_at(store, [[10 * i + j for j in range(10)] for i in range(20)])
    read: list[str] = []
    real = store._read_segment

    def spy(dataset: str, digest: str) -> list[RecordValidated]:
        read.append(digest)
        return real(dataset, digest)

    monkeypatch.setattr(store, "_read_segment", spy)
    assert store.snapshot("loans", last=15).records == 15
    assert read == [s.digest for s in store.segments("loans")[-2:]][::-1]


def test_segments_logged_without_event_times_are_still_searched(store: DatasetStore,
                                                                tmp_path: Path) -> None:
    observed_at(store, [[5, 6], [0, 1]])
    log = tmp_path / "datasets" / "loans" / "log.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    log.write_text("".join(json.dumps({k: v for k, v in line.items() if k != "newest_event"})
                           + "\n" for line in lines))  # a log written before the field
    assert [r.record_id for r in store.read(store.snapshot("loans", last=2))] == [
        "t-0005", "t-0006"]


def test_open_snapshot_verifies_and_round_trips(store: DatasetStore) -> None:
    fill(store, [4, 3])
    made = store.snapshot("loans", last=5)
    assert store.open_snapshot("loans", made.snapshot_id) == made


def test_unknown_snapshot(store: DatasetStore) -> None:
    fill(store, [2])
    with pytest.raises(SnapshotNotFound):
        store.open_snapshot("loans", "0" * 64)


def test_tampered_manifest_is_refused(store: DatasetStore, tmp_path: Path) -> None:
    fill(store, [4, 3])
    made = store.snapshot("loans", last=5)
    manifest = tmp_path / "datasets" / "loans" / "snapshots" / f"{made.snapshot_id}.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"records":5', b'"records":6'))
    with pytest.raises(SnapshotNotFound, match="corrupted"):
        store.open_snapshot("loans", made.snapshot_id)


def test_torn_last_log_line_is_ignored(store: DatasetStore, tmp_path: Path) -> None:
    ids = fill(store, [4, 3])
    log = tmp_path / "datasets" / "loans" / "log.jsonl"
    with log.open("ab") as out:
        out.write(b'{"digest": "ab12", "cou')  # a writer crashed mid-line
    assert len(store.segments("loans")) == 2
    assert store.size("loans") == 7
    assert [r.record_id for r in store.read(store.snapshot("loans"))] == ids[0] + ids[1]


def test_append_after_a_torn_log_line_is_not_lost(store: DatasetStore, tmp_path: Path) -> None:
    fill(store, [4])
    log = tmp_path / "datasets" / "loans" / "log.jsonl"
    with log.open("ab") as out:
        out.write(b'{"digest": "ab12", "cou')  # a writer crashed mid-line, then restarted
    later = validated_rows(3, first_sequence=4, seed=11)
    store.append("loans", later, T0 + timedelta(minutes=5))
    assert store.size("loans") == 7
    assert store.record_ids("loans") >= {r.record_id for r in later}


def test_a_reader_follows_the_log_another_store_writes(store: DatasetStore,
                                                      tmp_path: Path) -> None:
    """Readers parse only the lines added since they last looked: whatever another process
    appends, a torn line in between, or a log replaced by a restore, they see it all."""
    reader = DatasetStore(tmp_path / "datasets")
    assert reader.segments("loans") == []
    fill(store, [4, 3])
    assert [s.count for s in reader.segments("loans")] == [4, 3]
    log = tmp_path / "datasets" / "loans" / "log.jsonl"
    with log.open("ab") as out:
        out.write(b'{"digest": "ab12", "cou')  # a writer crashed mid-line, then restarted
    assert [s.count for s in reader.segments("loans")] == [4, 3]
    store.append("loans", validated_rows(5, first_sequence=7, seed=12), T0)
    assert [s.count for s in reader.segments("loans")] == [4, 3, 5]
    assert reader.segments("loans") == store.segments("loans")

    replaced = log.with_name("restored.jsonl")
    replaced.write_bytes(log.read_bytes().splitlines(keepends=True)[0])
    replaced.replace(log)  # a new file: read from its start
    assert [s.count for s in reader.segments("loans")] == [4]


# -- ArtifactStore --------------------------------------------------------------------------


def test_artifact_round_trip(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)
    ref = artifacts.put(b"model bytes")
    assert ref.digest == hashlib.sha256(b"model bytes").hexdigest()
    assert ref.size_bytes == len(b"model bytes")
    assert artifacts.read_verified(ref) == b"model bytes"
    assert artifacts.put(b"model bytes") == ref  # content-addressed: idempotent

    model = {"weights": [1.0, 2.0], "bias": 0.5}
    assert artifacts.load_model(artifacts.save_model(model)) == model


def test_modified_bytes_are_refused(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)
    ref = artifacts.save_model({"weights": [1.0]})
    artifacts.path(ref.digest).write_bytes(b"not the model")
    with pytest.raises(ArtifactIntegrityError, match=ref.digest):
        artifacts.load_model(ref)


def test_signature_from_another_key_is_refused(tmp_path: Path) -> None:
    ref = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY).save_model({"weights": [1.0]})
    attacker = ArtifactStore(tmp_path / "artifacts", signer=ATTACKER_KEY)
    forged = attacker.save_model({"weights": [6.66]})  # well signed, by a key nobody trusts
    trusted = ArtifactStore(tmp_path / "artifacts", verifier=TRAINING_KEY.verifier())
    assert trusted.load_model(ref) == {"weights": [1.0]}
    with pytest.raises(ArtifactIntegrityError, match="not signed by training"):
        trusted.load_model(forged)


def test_a_verifying_store_cannot_add_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no signing key"):
        ArtifactStore(tmp_path / "a", verifier=TRAINING_KEY.verifier()).put(b"model")


def test_forged_signature_is_refused(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY)
    ref = artifacts.save_model({"weights": [1.0]})
    forged = ref.model_copy(update={"signature": "ab" * 64})
    with pytest.raises(ArtifactIntegrityError):
        artifacts.load_model(forged)


def test_missing_artifact(tmp_path: Path) -> None:
    ref = ArtifactStore(tmp_path / "elsewhere", signer=TRAINING_KEY).put(b"model bytes")
    with pytest.raises(ArtifactNotFound):
        ArtifactStore(tmp_path / "artifacts", signer=TRAINING_KEY).read_verified(ref)
