"""Tokens at rest: settings hold digests only, the local admin token file is the owner's alone,
clients find their token by themselves, and `driftloop token create` prints what is needed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from cli.platform import Platform
from shared.auth import Authenticator
from shared.errors import ConfigError, Unauthenticated
from shared.settings import CommonSettings
from shared.tokens import (
    LOCAL_ADMIN_NAME,
    Role,
    admin_token_path,
    client_token,
    digest,
    ensure_local_admin_token,
    load_tokens,
    local_admin_env,
    new_token,
)

ALICE = "dl_alice-token-0123456789abcdef0123456789"
ALICE_ENTRY = {"name": "alice", "role": "operator", "sha256": digest(ALICE)}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DRIFTLOOP_TOKEN", "DRIFTLOOP_AUTH_TOKENS", "DRIFTLOOP_AUTH_TOKENS_FILE",
                 "DRIFTLOOP_AUTH_LOCAL_ADMIN_SHA256", "DRIFTLOOP_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_tokens_come_from_the_environment_as_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_AUTH_TOKENS", json.dumps([ALICE_ENTRY]))
    principal = Authenticator.from_settings(CommonSettings()).authenticate(ALICE)
    assert (principal.name, principal.role) == ("alice", Role.OPERATOR)
    assert ALICE not in repr(CommonSettings())


def test_tokens_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([ALICE_ENTRY]))
    assert [e.name for e in load_tokens(CommonSettings(auth_tokens_file=path))] == ["alice"]


@pytest.mark.parametrize(("content", "words"), [
    (None, "cannot read"),
    ("{nope", "not a JSON list"),
    (json.dumps([{"name": "bob", "role": "root", "sha256": "ab" * 32}]), "not a JSON list"),
    (json.dumps([{"name": "bob", "role": "viewer", "token": ALICE}]), "not a JSON list"),
])
def test_a_bad_tokens_file_fails_at_start_saying_which(tmp_path: Path, content: str | None,
                                                        words: str) -> None:
    path = tmp_path / "tokens.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=words) as error:
        load_tokens(CommonSettings(auth_tokens_file=path))
    assert "DRIFTLOOP_AUTH_TOKENS_FILE" in str(error.value) and ALICE not in str(error.value)


def test_a_digest_with_two_owners_is_refused() -> None:
    with pytest.raises(ConfigError, match="same sha256"):
        load_tokens(CommonSettings(auth_tokens=[ALICE_ENTRY, {**ALICE_ENTRY, "name": "eve"}]))


def test_a_raw_token_in_place_of_a_digest_is_refused_without_printing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLOOP_AUTH_TOKENS", json.dumps([{**ALICE_ENTRY, "sha256": ALICE}]))
    with pytest.raises(ValueError, match="sha256") as error:
        CommonSettings()
    assert ALICE not in str(error.value)


def test_tokens_are_random_and_long() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 40 for t in tokens)


def test_the_local_admin_token_is_the_owners_alone_and_reused(tmp_path: Path) -> None:
    path = ensure_local_admin_token(tmp_path)
    assert path == admin_token_path(tmp_path) == tmp_path / "secrets" / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text().strip()
    assert ensure_local_admin_token(tmp_path) == path and path.read_text().strip() == token


def test_a_local_admin_token_others_can_read_is_refused(tmp_path: Path) -> None:
    path = ensure_local_admin_token(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_local_admin_token(tmp_path)


def test_the_platform_passes_only_the_digest_of_the_local_admin_token(tmp_path: Path) -> None:
    env = Platform(config=Path("driftloop.toml"), data_dir=tmp_path).child_env("registry")
    token = admin_token_path(tmp_path).read_text().strip()
    assert env["DRIFTLOOP_AUTH_LOCAL_ADMIN_SHA256"] == digest(token)
    assert token not in "".join(env.values())
    settings = CommonSettings(auth_local_admin_sha256=env["DRIFTLOOP_AUTH_LOCAL_ADMIN_SHA256"])
    principal = Authenticator.from_settings(settings).authenticate(token)
    assert (principal.name, principal.role) == (LOCAL_ADMIN_NAME, Role.ADMIN)


def test_a_client_presents_its_token_else_the_local_admin_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client_token(CommonSettings(data_dir=tmp_path)) is None
    token = ensure_local_admin_token(tmp_path).read_text().strip()
    assert client_token(CommonSettings(data_dir=tmp_path)) == token
    monkeypatch.setenv("DRIFTLOOP_TOKEN", ALICE)
    assert client_token(CommonSettings(data_dir=tmp_path)) == ALICE


def test_token_create_prints_the_token_once_and_the_entry_of_its_digest() -> None:
    result = CliRunner().invoke(cli, ["token", "create", "carol", "--role", "admin"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    token = lines[1].strip()
    assert token.startswith("dl_") and result.output.count(token) == 1
    setting = next(line.strip() for line in lines if "DRIFTLOOP_AUTH_TOKENS=" in line)
    entries = json.loads(setting.split("=", 1)[1].strip("'"))
    assert entries == [{"name": "carol", "role": "admin", "sha256": digest(token)}]
    principal = Authenticator.from_settings(CommonSettings(auth_tokens=entries)).authenticate(
        token)
    assert (principal.name, principal.role) == ("carol", Role.ADMIN)


def test_a_token_refused_says_why_without_the_token() -> None:
    auth = Authenticator.from_settings(CommonSettings(auth_tokens=[ALICE_ENTRY]))
    with pytest.raises(Unauthenticated) as error:
        auth.authenticate(ALICE + "x")
    assert ALICE not in str(error.value)


def test_an_empty_local_admin_token_file_is_refused(tmp_path: Path) -> None:
    path = ensure_local_admin_token(tmp_path)
    path.write_text("\n")
    with pytest.raises(ConfigError, match="no usable token"):
        local_admin_env(tmp_path)
