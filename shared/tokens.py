"""Tokens as settings and clients hold them: roles, digests, the local admin token file.

No web framework here: the CLI and the settings import this module; shared/auth.py checks
tokens at the HTTP door.

`driftloop up` writes a local admin token to <data_dir>/secrets/admin.token (mode 0600 in a
0700 directory, reused when present) and passes only its digest to the services it starts;
clients (the CLI) present `DRIFTLOOP_TOKEN`, else that file.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import ConfigError

if TYPE_CHECKING:
    from shared.settings import CommonSettings

TOKEN_PREFIX = "dl_"
LOCAL_ADMIN_NAME = "local-admin"
MAX_TOKEN_LENGTH = 512  # longer is not a token of ours: refused before hashing


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"      # reads (when reads are not open) and predict (when not open)
    OPERATOR = "operator"  # changes state: promote, rollback, manual train
    ADMIN = "admin"        # everything, including what is reserved to admins later

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class TokenEntry(BaseModel):
    """One accepted token as settings hold it: its owner, role and sha256 (never the token)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                      description="Owner, written to the audit log as the actor.")
    role: Role = Field(description="viewer, operator or admin.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the token, hex.")


TOKEN_LIST = TypeAdapter(list[TokenEntry])


@dataclass(frozen=True)
class Principal:
    """Who is calling: the owner of the token presented."""

    name: str
    role: Role


def digest(token: str) -> str:
    """The sha256 of a token, as settings store it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / "secrets" / "admin.token"


def ensure_local_admin_token(data_dir: Path) -> Path:
    """The local admin token file of `driftloop up`, created (mode 0600, in a 0700 directory)
    unless it exists; an existing file is reused so a restart keeps the same token."""
    path = admin_token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            raise ConfigError(detail=f"{path} is readable by other users: run `chmod 600 "
                              f"{path}` (or delete it to get a new token)") from None
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(new_token() + "\n")
    return path


def read_token_file(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


def local_admin_env(data_dir: Path) -> dict[str, str]:
    """Environment that makes the services `up` starts accept its local admin token: only the
    digest travels, the token stays in its file."""
    path = ensure_local_admin_token(data_dir)
    token = read_token_file(path)
    if len(token) < 32:
        raise ConfigError(detail=f"{path} holds no usable token (empty or cut short): delete "
                          "it and start again to get a new one")
    return {"DRIFTLOOP_AUTH_LOCAL_ADMIN_SHA256": digest(token)}


def client_token(settings: CommonSettings) -> str | None:
    """The token a client presents: DRIFTLOOP_TOKEN, else the local admin token in the data
    directory (written by `driftloop up`), else none."""
    if settings.token is not None and settings.token.get_secret_value():
        return settings.token.get_secret_value()
    path = admin_token_path(settings.data_dir)
    return read_token_file(path) if path.is_file() else None


def auth_headers(settings: CommonSettings) -> dict[str, str]:
    token = client_token(settings)
    return {"Authorization": f"Bearer {token}"} if token else {}


def load_tokens(settings: CommonSettings) -> list[TokenEntry]:
    """Every accepted token: the settings' list, the tokens file, and `up`'s local admin."""
    entries = list(settings.auth_tokens)
    if settings.auth_tokens_file is not None:
        path = settings.auth_tokens_file
        try:
            entries += TOKEN_LIST.validate_json(path.read_bytes())
        except OSError as exc:
            raise ConfigError(detail=f"cannot read DRIFTLOOP_AUTH_TOKENS_FILE {path}: "
                              f"{exc.strerror}") from None
        except ValidationError as exc:
            raise ConfigError(detail=f"DRIFTLOOP_AUTH_TOKENS_FILE {path} is not a JSON list of "
                              f'{{"name", "role", "sha256"}}: {exc.error_count()} error(s), '
                              f"first: {exc.errors()[0]['msg']}") from None
    if settings.auth_local_admin_sha256:
        entries.append(TokenEntry(name=LOCAL_ADMIN_NAME, role=Role.ADMIN,
                                  sha256=settings.auth_local_admin_sha256))
    digests = [entry.sha256 for entry in entries]
    if len(set(digests)) != len(digests):
        raise ConfigError(detail="two accepted tokens have the same sha256: each token must "
                          "have one owner (check DRIFTLOOP_AUTH_TOKENS and the tokens file)")
    return entries


