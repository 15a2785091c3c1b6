"""Two ingestion replicas in one consumer group on one dataset store (issue 7, point 5): the
group splits data.labeled's partitions between them, both write the same dataset, and a
record sent again under another key (so it may reach the other replica) is still a
duplicate. Every record is stored exactly once, with one unbroken sequence."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from river.datasets import synth

from cli.platform import Platform
from contracts.events import LabeledRecord
from shared.broker import free_port
from shared.datasets import DatasetStore
from shared.processes import terminate
from tests.fault.trust_helpers import wait_for
from tests.integration.conftest import PROJECT_FILE, running_platform
from tests.integration.test_feedback import publish
from tests.integration.test_online_loop import publish as publish_keyed


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    with running_platform(PROJECT_FILE, tmp_path_factory.mktemp("replicas")) as running:
        yield running


def test_two_ingestion_replicas_store_each_record_once(platform: Platform) -> None:
    port = free_port()
    env = platform.child_env("ingestion") | {"DRIFTLOOP_INGESTION_PORT": str(port)}
    log = (platform.data_dir / "logs" / "ingestion-2.log").open("wb")
    second = subprocess.Popen([sys.executable, "-m", "services.ingestion"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://{platform.host}:{port}/readyz"
        wait_for(lambda: _ready(url), "the second ingestion replica", 60)
        rows = list(synth.Agrawal(seed=11).take(1_500))
        records = [LabeledRecord(dataset="loans", record_id=f"rep-{i}", features=x,
                                 label=int(y)) for i, (x, y) in enumerate(rows)]
        for start in range(0, len(records), 100):  # many small bursts: both replicas busy
            publish(platform, records[start:start + 100])
        # the same records again: as a producer's retry would, and under other keys, so
        # some land on partitions the other replica owns
        publish(platform, [r.model_copy() for r in records[:300]])
        again = [(f"other-key-{r.record_id}", r) for r in records[300:600]]
        publish_keyed(platform, again)

        store = DatasetStore(platform.data_dir / "datasets")

        def ours() -> list[tuple[str, int]]:
            return [(r.record_id, r.sequence) for r in store.records("loans")
                    if r.record_id.startswith("rep-")]

        wait_for(lambda: len(ours()) >= 1_500, "1,500 records in the store", 90)
        ids = [record_id for record_id, _ in ours()]
        assert sorted(ids) == sorted(r.record_id for r in records)  # each exactly once
        sequences = [r.sequence for r in store.records("loans")]
        assert sequences == list(range(len(sequences)))  # one sequence, no clash
        assert second.poll() is None, "the second replica died"
        # both replicas took a share of the partitions and stored some of the records
        first_url = platform.url("ingestion")
        for base in (first_url, f"http://{platform.host}:{port}"):
            assert _accepted(base) > 0, f"{base} stored nothing: the group did not split"
    finally:
        terminate(second, 15)
        log.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _accepted(base: str) -> float:
    """Records this replica accepted, from its own /metrics."""
    for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith('driftloop_ingestion_records_total{outcome="accepted"}'):
            return float(line.split()[-1])
    return 0.0
