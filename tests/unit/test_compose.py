"""The deployment files against the code: docker-compose.yml, deploy/prometheus.yml, the
Dockerfile and .dockerignore.

No Docker engine runs here, so nothing is started: the files are parsed and every name and
port in them is checked against what the services really read — the pydantic-settings
classes in services/<name>/settings.py. Renaming a setting, a port variable or a service
without updating the deployment files fails these tests.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from cli.main import SERVICE_NAMES
from shared.project import load_project
from shared.service import build_app
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_FILE = ROOT / "deploy" / "prometheus.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

SERVICES = ("ingestion", "training", "registry", "serving", "monitoring")
INFRASTRUCTURE = ("kafka", "postgres", "prometheus")
ENV_PREFIX = "DRIFTLOOP_"
DRIFTLOOP_NAME = re.compile(r"\bDRIFTLOOP_[A-Z0-9_]+")
INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
TEST_TOKENS = '[{"name": "alice", "role": "operator", "sha256": "' + "ab" * 32 + '"}]'
# What .env must hold: compose refuses to start without each (no default for a secret).
REQUIRED_SECRETS = {"POSTGRES_PASSWORD": "pg-secret", "DRIFTLOOP_AUTH_TOKENS": TEST_TOKENS}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|SIGNING_KEY$|AUTH_TOKENS$|_TOKEN$")


# --- what the code reads --------------------------------------------------------------

def settings_classes(service: str) -> list[type[BaseSettings]]:
    """The settings classes defined in services/<service>/settings.py."""
    module = importlib.import_module(f"services.{service}.settings")
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseSettings) and cls.__module__ == module.__name__]


def env_names(cls: type[BaseSettings]) -> set[str]:
    """Environment variables a settings class accepts (case-insensitive, so upper-cased)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    assert prefix == ENV_PREFIX, f"{cls.__name__} reads env prefix {prefix!r}"
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add((prefix + field_name).upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(choice.upper() for choice in alias.choices if isinstance(choice, str))
    return names


def service_env_names(service: str) -> set[str]:
    return set().union(*(env_names(cls) for cls in settings_classes(service)))


def settings_class(service: str) -> type[BaseSettings]:
    """The class `driftloop run <service>` builds (cli/main.py looks it up by this name)."""
    classes = {cls.__name__: cls for cls in settings_classes(service)}
    name = f"{service.capitalize()}Settings"
    assert name in classes, f"services/{service}/settings.py defines no {name}"
    return classes[name]


def port_variable(service: str) -> str:
    """The env name of the service's HTTP port, as its settings class declares it."""
    alias = settings_class(service).model_fields["port"].validation_alias
    assert isinstance(alias, str), f"{service}: port has no single validation_alias"
    return alias.upper()


# --- the deployment files -------------------------------------------------------------

def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A compose service's environment, in either the mapping or the list form."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in raw.items()}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} interpolation."""
    def replace(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"] or ""
        present = env.get(name, "") != "" if op and op.startswith(":") else name in env
        if present:
            return env[name]
        if op and op.endswith("?"):
            raise LookupError(f"{name}: {arg}")
        return arg if op else ""

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def published_bindings(service: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(host interface, host port, container port) of a service, short or long syntax; an
    interface left out is compose's default, every interface (0.0.0.0)."""
    bindings: list[tuple[str, int, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            bindings.append((str(entry.get("host_ip", "0.0.0.0")), int(entry["published"]),
                             int(entry["target"])))
        else:
            *interface, host, container = str(entry).split("/")[0].split(":")
            bindings.append((interface[0] if interface else "0.0.0.0", int(host),
                             int(container)))
    return bindings


def published_ports(service: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs of a service."""
    return [(host, container) for _, host, container in published_bindings(service)]


def scrape_targets() -> dict[str, tuple[str, list[str]]]:
    """Prometheus job name -> (metrics path, targets)."""
    jobs: dict[str, tuple[str, list[str]]] = {}
    for job in load_yaml(PROMETHEUS_FILE)["scrape_configs"]:
        targets = [t for static in job.get("static_configs", []) for t in static["targets"]]
        jobs[job["job_name"]] = (job.get("metrics_path", "/metrics"), targets)
    return jobs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
             if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(parts[0].upper(), parts[1] if len(parts) > 1 else "")
            for parts in (line.strip().split(None, 1) for line in joined.splitlines())
            if parts]


# --- services and commands ------------------------------------------------------------

def test_every_service_and_its_infrastructure_is_defined(services: dict[str, Any]) -> None:
    missing = set(SERVICES + INFRASTRUCTURE) - services.keys()
    assert not missing, f"docker-compose.yml lacks {sorted(missing)}"
    packages = {path.parent.name for path in (ROOT / "services").glob("*/__main__.py")}
    assert packages == set(SERVICES), "a runnable service package is missing from compose"


@pytest.mark.parametrize("name", SERVICES)
def test_command_runs_a_real_service(services: dict[str, Any], name: str) -> None:
    command = services[name]["command"]
    assert isinstance(command, list) and command[:2] == ["driftloop", "run"], command
    target = command[2]
    assert target == name, f"compose service {name} runs {target}"
    assert (ROOT / "services" / target / "__main__.py").is_file()
    assert target in SERVICE_NAMES, f"`driftloop run {target}` is refused by the CLI"
    assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "build" in services[name], f"{name} is not built from the project's Dockerfile"


# --- environment variables ------------------------------------------------------------

def test_every_driftloop_variable_in_compose_is_a_real_setting() -> None:
    known = set().union(*(service_env_names(name) for name in SERVICES))
    named = set(DRIFTLOOP_NAME.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    assert named, "docker-compose.yml names no DRIFTLOOP_ variable"
    unknown = named - known
    assert not unknown, f"no settings class reads {sorted(unknown)}"


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_gets_only_variables_it_reads(services: dict[str, Any], name: str) -> None:
    given = {key.upper() for key in environment(services[name]) if key.startswith(ENV_PREFIX)}
    unread = given - service_env_names(name)
    assert not unread, f"{name}'s settings ignore {sorted(unread)}"


@pytest.mark.parametrize("name", SERVICES)
def test_settings_built_from_compose_env(services: dict[str, Any], name: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own settings class, fed the container's environment, sees the values."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    env = {key: interpolate(value, REQUIRED_SECRETS)
           for key, value in environment(services[name]).items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    settings: Any = settings_class(name)()
    assert settings.port == int(env[port_variable(name)])
    assert settings.host == "0.0.0.0", "a service bound to loopback is unreachable in a container"
    assert settings.signing_key is None  # the removed HMAC key would stop the service
    assert settings.kafka_bootstrap == env["DRIFTLOOP_KAFKA_BOOTSTRAP"]
    assert str(settings.data_dir) == env["DRIFTLOOP_DATA_DIR"]
    assert [e.model_dump(mode="json") for e in settings.auth_tokens] == json.loads(TEST_TOKENS)
    assert settings.auth_open_reads and settings.auth_open_predict


@pytest.mark.parametrize("variable", ["DRIFTLOOP_AUTH_TOKENS"])
def test_tokens_are_required(services: dict[str, Any], variable: str) -> None:
    for name in SERVICES:
        value = environment(services[name])[variable]
        with pytest.raises(LookupError, match=variable):
            interpolate(value, {})  # compose refuses to start without them
        assert interpolate(value, {variable: "k"}) == "k"


def test_no_secret_is_written_in_the_file(services: dict[str, Any]) -> None:
    """Every password, key and token comes from the environment (.env): required with no
    default, or optional with an empty one (DRIFTLOOP_TOKEN, needed only for closed reads)."""
    required = 0
    for name, service in services.items():
        for key, value in environment(service).items():
            secret_values = [value] if SECRET_NAME.search(key) else []
            in_url = re.search(r"://[^:/@]+:(.+)@[^@]+$", value)  # a URL's password
            if in_url:
                secret_values.append(in_url[1])
            for secret in filter(None, secret_values):
                assert INTERPOLATION.fullmatch(secret), f"{name}: {key} is written in the file"
                try:
                    assert interpolate(secret, {}) == "", f"{name}: {key} has a default"
                except LookupError:
                    required += 1
    assert required >= len(SERVICES) + 2


def test_each_service_holds_only_the_keys_it_may(compose: dict[str, Any],
                                                 services: dict[str, Any]) -> None:
    """Private keys only where they sign, as compose secrets (never an image or a variable)."""
    from shared.signing import ALL_KEY_VARIABLES, KEY_VARIABLES

    declared = compose["secrets"]
    for name in SERVICES:
        env = environment(services[name])
        given = {key for key in env if key in ALL_KEY_VARIABLES}
        assert given <= set(KEY_VARIABLES[name]), f"{name} holds {sorted(given)}"
        mounted = set(services[name].get("secrets", []))
        for key in given:
            secret = env[key].removeprefix("/run/secrets/")
            assert secret in mounted and secret in declared, f"{name}: {key} not mounted"
        assert all("signing_key" not in s or s.startswith(name) for s in mounted), name
    for name in ("training", "registry"):
        assert f"DRIFTLOOP_{name.upper()}_SIGNING_KEY_FILE" in environment(services[name])
    assert "DRIFTLOOP_SIGNING_KEY" not in {k for s in SERVICES for k in environment(services[s])}


def test_addresses_point_at_the_services_that_answer(services: dict[str, Any]) -> None:
    kafka_env = environment(services["kafka"])
    advertised = {urlsplit(listener).netloc
                  for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    registry_port = int(environment(services["registry"])[port_variable("registry")])
    for name in SERVICES:
        env = environment(services[name])
        assert env["DRIFTLOOP_KAFKA_BOOTSTRAP"] in advertised, f"{name}: bootstrap not advertised"
        registry = urlsplit(env["DRIFTLOOP_REGISTRY_URL"])
        assert (registry.hostname, registry.port) == ("registry", registry_port), name

    url = make_url(interpolate(environment(services["registry"])["DRIFTLOOP_DATABASE_URL"],
                               REQUIRED_SECRETS))
    postgres_env = {key: interpolate(value, REQUIRED_SECRETS)
                    for key, value in environment(services["postgres"]).items()}
    assert url.drivername == "postgresql+psycopg2" and url.host == "postgres"
    assert (url.username, url.password, url.database) == (
        postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"])
    assert services["registry"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])


def test_data_dir_is_one_shared_volume_and_the_project_file_is_mounted(
        compose: dict[str, Any], services: dict[str, Any]) -> None:
    sources: set[str] = set()
    for name in SERVICES:
        env = environment(services[name])
        mounts: dict[str, str] = {}
        for volume in services[name].get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = source
        data_dir = env["DRIFTLOOP_DATA_DIR"]
        assert data_dir in mounts, f"{name}: {data_dir} is not a volume"
        sources.add(mounts[data_dir])
        config = env["DRIFTLOOP_CONFIG"]
        assert config in mounts, f"{name}: project file {config} is not mounted"
        load_project(ROOT / mounts[config])  # the mounted file exists and is a valid project
    assert len(sources) == 1, f"services do not share one data volume: {sources}"
    assert sources.pop() in compose["volumes"], "the data volume is not a named volume"


# --- ports and scraping ---------------------------------------------------------------

# What a user reaches from the host; ingestion has no API (health and metrics only).
PUBLISHED = {"serving", "registry", "training", "monitoring"}


@pytest.mark.parametrize("name", SERVICES)
def test_port_is_published_health_checked_and_scraped(services: dict[str, Any],
                                                      name: str) -> None:
    port = int(environment(services[name])[port_variable(name)])
    published = published_ports(services[name])
    if name in PUBLISHED:
        assert published == [(port, port)], f"{name} does not publish {port}"
    else:
        assert published == [], f"{name} is published though no user needs it"
    assert f"127.0.0.1:{port}/healthz" in str(services[name]["healthcheck"]["test"])
    scraping = {job: path for job, (path, targets) in scrape_targets().items()
                if f"{name}:{port}" in targets}
    assert scraping, f"Prometheus does not scrape {name}:{port}"
    assert set(scraping.values()) == {"/metrics"}
    other = [t for _, targets in scrape_targets().values() for t in targets
             if t.split(":")[0] == name and t != f"{name}:{port}"]
    assert not other, f"Prometheus scrapes {name} on a port it does not serve: {other}"


def test_ports_are_published_on_loopback_only(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if published_bindings(service)}
    assert published == PUBLISHED | {"kafka", "prometheus"}, "postgres must stay unpublished"
    for name, service in services.items():
        for interface, host, _ in published_bindings(service):
            assert interface == "127.0.0.1", f"{name} publishes {host} on {interface}"


def test_scraped_paths_are_served() -> None:
    async def nothing(_: object) -> None:
        return None

    app, _ = build_app("probe", CommonSettings(), nothing)
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {"/metrics", "/healthz"} <= paths


def test_prometheus_and_its_config_are_wired(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert str(prometheus["image"]).startswith("prom/prometheus")
    assert (9090, 9090) in published_ports(prometheus)
    mounts = [str(volume).split(":") for volume in prometheus["volumes"]]
    config_source = next(source for source, target, *_ in mounts
                         if target == "/etc/prometheus/prometheus.yml")
    assert (ROOT / config_source).resolve() == PROMETHEUS_FILE


def test_kafka_is_a_single_kraft_node(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = environment(kafka)
    assert str(kafka["image"]).startswith("apache/kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node}@")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka


# --- the image ------------------------------------------------------------------------

def test_dockerfile_installs_the_project_and_runs_as_a_user() -> None:
    instructions = dockerfile_instructions()
    kinds = [kind for kind, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(kind == "RUN" and re.search(r"\bpip install\s+(\S+\s+)*\.(\s|$)", args)
               for kind, args in instructions), "the Dockerfile does not `pip install .`"

    copied: set[str] = set()
    for kind, args in instructions:
        if kind == "COPY" and "--from" not in args:
            *sources, _ = [word for word in shlex.split(args) if not word.startswith("--")]
            copied.update(source.rstrip("/") for source in sources)
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    packages = {pattern.rstrip("*.") for pattern
                in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = packages | {"pyproject.toml", project["project"]["readme"]}
    assert "." in copied or needed <= copied, f"not copied into the image: {needed - copied}"
    ignored = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    assert not [n for n in needed if any(fnmatch(n, pattern) for pattern in ignored)]

    users = [args.split(":")[0] for kind, args in instructions if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image runs as root"
    assert kinds.index("USER") > max(i for i, kind in enumerate(kinds) if kind == "RUN")
    cmd = [args for kind, args in instructions if kind == "CMD"]
    assert cmd and json.loads(cmd[-1]) == ["driftloop", "run", "serving"]
    assert project["project"]["scripts"]["driftloop"] == "cli.main:main"

    image_env = [word.split("=", 1)[0] for kind, args in instructions if kind == "ENV"
                 for word in shlex.split(args) if word.startswith(ENV_PREFIX)]
    assert set(image_env) <= env_names(CommonSettings), "the image sets an unread variable"


def test_dockerignore_keeps_local_state_out() -> None:
    entries = {line.strip().removeprefix("**/").rstrip("/")
               for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}
    wanted = {".venv", ".git", ".driftloop", "__pycache__", ".pytest_cache", ".mypy_cache",
              ".ruff_cache"}
    assert wanted <= entries, f".dockerignore lacks {sorted(wanted - entries)}"
