"""`driftloop token create`, `promote`, `rollback` and `train`: the CLI's calls that change
state, each over HTTP with a bearer token (DRIFTLOOP_TOKEN, else the local admin token that
`driftloop up` wrote to <data_dir>/secrets/admin.token)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import httpx
import typer

from shared.settings import CommonSettings
from shared.tokens import Role, auth_headers, digest, new_token

token_app = typer.Typer(help="Create API tokens.", no_args_is_help=True)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _fail(text: str) -> typer.Exit:
    sys.stderr.write(text + "\n")
    return typer.Exit(1)


def _connect_host(host: str) -> str:
    """Where a client reaches a service bound to `host` (a wildcard bind means loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def training_url(settings: CommonSettings) -> str:
    from services.training.settings import TrainingSettings

    return f"http://{_connect_host(settings.host)}:{TrainingSettings().port}"


def post(settings: CommonSettings, service: str, url: str, body: dict[str, Any]) -> Any:
    """POST with the token; the answer's JSON, or exit 1 with the service's reason."""
    headers = auth_headers(settings)
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {service} at {url}: {exc} (is `driftloop up` running?)") \
            from None
    if response.is_success:
        return response.json()
    try:
        reason = response.json().get("detail", response.text)
    except ValueError:
        reason = response.text[:500]
    hint = ""
    if response.status_code == 401 and not headers:
        hint = (" — no token: set DRIFTLOOP_TOKEN, or run `driftloop up` with the same "
                "DRIFTLOOP_DATA_DIR so its local admin token is found")
    raise _fail(f"{service} answered {response.status_code}: {reason}{hint}")


@token_app.command("create")
def token_create(name: Annotated[str, typer.Argument(help="Owner of the token (the audit "
                                                          "log's actor).")],
                 role: Annotated[Role, typer.Option(help="viewer, operator or admin.")]
                 = Role.OPERATOR) -> None:
    """Print a fresh random token once, and the entry the services need (its sha256 only)."""
    from shared.tokens import TokenEntry

    token = new_token()
    entry = TokenEntry(name=name, role=role, sha256=digest(token))
    line = json.dumps(entry.model_dump(mode="json"))
    _out(f"token for {name} ({role.value}); it is shown once, store it now:")
    _out(f"  {token}")
    _out("services accept it with this entry in DRIFTLOOP_AUTH_TOKENS (a JSON list) or in the "
         "file DRIFTLOOP_AUTH_TOKENS_FILE names:")
    _out(f"  DRIFTLOOP_AUTH_TOKENS='[{line}]'")
    _out("clients send it as 'Authorization: Bearer <token>'; the CLI reads DRIFTLOOP_TOKEN.")


def promote(model: Annotated[str, typer.Argument(help="Model name.")],
            version: Annotated[int, typer.Argument(help="Version to make champion.")],
            reason: Annotated[str, typer.Option(help="Why, for the audit log.")]) -> None:
    """Make a version champion by hand (needs an operator token)."""
    settings = CommonSettings()
    view = post(settings, "registry", f"{settings.registry_url.rstrip('/')}/v1/models/"
                f"{model}/promote", {"version": version, "reason": reason})
    _out(f"{model} v{view['version']} is champion")


def rollback(model: Annotated[str, typer.Argument(help="Model name.")],
             reason: Annotated[str, typer.Option(help="Why, for the audit log.")]) -> None:
    """Restore the previous champion (needs an operator token)."""
    settings = CommonSettings()
    view = post(settings, "registry", f"{settings.registry_url.rstrip('/')}/v1/models/"
                f"{model}/rollback", {"reason": reason})
    _out(f"{model} rolled back to v{view['version']}")


def train(model: Annotated[str, typer.Argument(help="Model name from the project file.")],
          last: Annotated[int | None, typer.Option(help="Train on the newest N records.")] = None,
          reason: Annotated[str | None, typer.Option(help="Why, kept with the request.")]
          = None) -> None:
    """Request a training run by hand (needs an operator token)."""
    settings = CommonSettings()
    body: dict[str, Any] = {"last": last}
    if reason:
        body["reason"] = reason
    accepted = post(settings, "training", f"{training_url(settings)}/v1/models/{model}/train",
                    body)
    _out(f"requested {accepted['request_id']} (as {accepted['requested_by']})")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    for command in (promote, rollback, train):
        app.command()(command)
