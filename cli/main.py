"""The `driftloop` command line."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.control import register as register_control_commands
from shared.settings import CommonSettings, client_bootstrap
from shared.tokens import admin_token_path

app = typer.Typer(help="driftloop: Kafka-native MLOps that closes the loop on drift.",
                  no_args_is_help=True)
alerts_app = typer.Typer(help="Follow alerts.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
keys_app = typer.Typer(help="Signing keys of the chain of trust.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

SERVICE_NAMES = ("ingestion", "training", "registry", "serving", "monitoring")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@app.callback()
def main_options(config: Annotated[Path | None, typer.Option(
        help="Project file (default: DRIFTLOOP_CONFIG or ./driftloop.toml).")] = None) -> None:
    if config is not None:
        os.environ["DRIFTLOOP_CONFIG"] = str(config)
    # aiokafka logs each refused connection while a broker starts; the CLI says what matters.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


@app.command()
def run(service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}")],
        ) -> None:
    """Run one service in the foreground (starts an embedded broker if no cluster is set;
    the broker stops with the service, however the service ends)."""
    from shared.broker import port_is_free
    from shared.errors import PortInUse

    if service not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {SERVICE_NAMES}")
    module = importlib.import_module(f"services.{service}.__main__")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    from shared.errors import ConfigError

    try:
        settings = settings_class()
        if not port_is_free(settings.host, settings.port):
            raise PortInUse(port=settings.port, service=service, host=settings.host,
                            variable=f"DRIFTLOOP_{service.upper()}_PORT")
        module.run(settings)
    except ConfigError as exc:  # a setting to fix (a missing key, a taken port): one line
        sys.stderr.write(f"driftloop {service}: {exc}\n")
        raise typer.Exit(2) from None


@app.command()
def up(colour: Annotated[bool, typer.Option(help="Colour the log lines.")] = True) -> None:
    """Start the broker (embedded unless DRIFTLOOP_KAFKA_BOOTSTRAP is set) and all five
    services, as the DRIFTLOOP_* settings say; print where they are; restart a child that
    exits (with backoff); stop everything on Ctrl-C or SIGTERM."""
    from cli.logview import render
    from cli.platform import Platform
    from cli.supervisor import Supervisor, log_to

    lock = threading.Lock()

    def sink(service: str, line: str) -> None:
        with lock:
            _out(render(service, line, colour))

    platform = Platform.from_settings(sink=sink)
    log_to(platform)
    stop = threading.Event()
    # Explicit handlers: a shell that starts us in the background ignores SIGINT, and
    # Python would then never raise KeyboardInterrupt.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    try:
        platform.start()  # refuses taken ports before starting anything; cleans up on failure
    except (RuntimeError, TimeoutError) as exc:
        sys.stderr.write(f"driftloop up failed: {exc}\n")
        raise typer.Exit(1) from None
    code = 0
    try:
        if stop.is_set():
            return
        _out("")
        _out("driftloop is up.")
        _out(f"  Kafka bootstrap  {platform.bootstrap}"
             f"{'  (embedded broker, memory only)' if platform.broker else ''}")
        for name in ("serving", "registry", "ingestion", "training", "monitoring"):
            _out(f"  {name:<16} {platform.url(name)}   (/docs /metrics /healthz /readyz)")
        token = admin_token_path(platform.data_dir).resolve()
        _out(f"  Admin token      {token}  (the CLI uses it by itself; curl -H "
             f"\"Authorization: Bearer $(cat {token})\" …)")
        if platform.registry_url:
            _out(f"  services find the registry at {platform.registry_url}")
        _out("  Try: driftloop produce FILE --dataset loans ; driftloop alerts tail")
        _out("A service that exits is restarted. Press Ctrl-C to stop.")
        code = Supervisor(platform).run(stop)
    finally:
        _out("stopping…")
        platform.stop()
        _out("stopped.")
    if code:
        raise typer.Exit(code)


@app.command()
def demo(keep: Annotated[bool, typer.Option(help="Keep the demo's data directory.")] = False,
         ) -> None:
    """Start a private platform on free ports and play the loop on a drifting stream."""
    from cli.demo import Story, StoryConfig, summary
    from cli.platform import Platform, free_ports
    from shared.broker import free_port

    settings = CommonSettings()
    data_dir = Path(tempfile.mkdtemp(prefix="driftloop-demo-"))
    started = time.monotonic()
    _out(f"driftloop demo — project {settings.config}, data in {data_dir}")
    platform = Platform(config=settings.config, data_dir=data_dir, ports=free_ports(),
                        broker_port=free_port())
    try:
        platform.start()
        _out(f"platform up in {time.monotonic() - started:.1f}s "
             f"(broker {platform.bootstrap}, serving {platform.url('serving')})")
        assert platform.bootstrap is not None
        result = asyncio.run(Story(platform.bootstrap, platform.url("serving"), StoryConfig(),
                                   _out).play())
    finally:
        platform.stop()
        if not keep:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    _out("")
    for line in summary(result):
        _out(line)
    reason = result.why_not_closed()
    if reason:
        _out(f"THE LOOP DID NOT CLOSE: {reason}")
        raise typer.Exit(1)
    _out(f"the loop closed in {time.monotonic() - started:.0f}s: drift → alert → retrain → "
         f"v{result.new_version} promoted and serving.")


@app.command()
def produce(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
            dataset: Annotated[str, typer.Option(help="Dataset the records belong to.")],
            label_column: Annotated[str, typer.Option(help="CSV column of the label.")] = "label",
            ) -> None:
    """Publish a JSONL or CSV file of labeled records to data.labeled."""
    from cli.kafka_io import producer, send_all
    from cli.produce import read_records
    from contracts.topics import Topic

    settings = CommonSettings()
    bootstrap = client_bootstrap(settings)
    records = [(r.message_key, r) for r in read_records(file, dataset, label_column)]

    async def send() -> int:
        async with producer(bootstrap, settings.kafka_client_options()) as client:
            return await send_all(client, Topic.DATA_LABELED.qualified(
                settings.kafka_topic_prefix), records)

    _out(f"published {asyncio.run(send())} records to "
         f"{Topic.DATA_LABELED.qualified(settings.kafka_topic_prefix)} on {bootstrap}")


@alerts_app.command("tail")
def alerts_tail(from_beginning: Annotated[bool, typer.Option(
        help="Replay alerts already on the topic.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON.")] = False) -> None:
    """Print alerts as they are published (Ctrl-C to stop)."""
    from cli.kafka_io import follower
    from contracts.events import AlertRaised
    from contracts.topics import Topic

    settings = CommonSettings()
    bootstrap = client_bootstrap(settings)

    async def follow() -> None:
        async with follower(bootstrap, [Topic.ALERTS], settings.kafka_topic_prefix,
                            from_beginning, settings.kafka_client_options()) as consumer:
            async for message in consumer:
                if as_json:
                    _out(message.value.decode())
                    continue
                alert = AlertRaised.model_validate_json(message.value)
                _out(f"{alert.at.isoformat(timespec='seconds')} {alert.status.value.upper():<8} "
                     f"{alert.severity.value:<8} {alert.kind:<14} {alert.model}: {alert.summary}")

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        pass


@keys_app.command("create")
def keys_create(out: Annotated[Path, typer.Option(
        help="Directory for the PEM files (./keys is where docker-compose looks).")] = Path("keys"),
        signer: Annotated[list[str] | None, typer.Option(
            help="Signer to create a key pair for (training, registry); default both.")] = None,
        ) -> None:
    """Create Ed25519 key pairs for the services that sign, and monitoring's state secret
    (private files are mode 0600)."""
    from shared.signing import SIGNERS, STATE_SECRET, write_key_pair, write_secret

    names = signer or list(SIGNERS)
    for name in names:
        if name not in SIGNERS:
            raise typer.BadParameter(f"unknown signer {name!r}; one of {SIGNERS}")
    for name in names:
        files = write_key_pair(out, name)
        variable = f"DRIFTLOOP_{name.upper()}"
        _out(f"{name}: private {files.private} -> give ONLY the {name} service "
             f"{variable}_SIGNING_KEY_FILE={files.private}")
        _out(f"{name}: public  {files.public} -> {variable}_PUBLIC_KEY_FILE={files.public} "
             f"for {'registry, serving' if name == 'training' else 'serving, monitoring'}")
    if signer is None:
        secret = write_secret(out / STATE_SECRET)
        _out(f"monitoring: secret  {secret} -> give ONLY the monitoring service "
             f"DRIFTLOOP_MONITORING_STATE_KEY_FILE={secret}")


@app.command("export-schemas")
def export_schemas() -> None:
    """Regenerate contracts/schemas/*.json from the pydantic contracts."""
    from contracts.export import main as export

    raise typer.Exit(export())


register_control_commands(app)  # token create, promote, rollback, train: over HTTP, with a token


def main() -> None:
    """Run the CLI; an expected error (a setting, a taken port) is one line and exit 2."""
    from pydantic import ValidationError

    from shared.errors import DriftloopError
    from shared.settings import settings_problem

    try:
        app()
    except DriftloopError as exc:
        sys.stderr.write(f"driftloop: {exc}\n")
        sys.exit(2)
    except ValidationError as exc:
        sys.stderr.write(f"driftloop: {settings_problem(exc)}\n")
        sys.exit(2)
