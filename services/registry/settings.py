"""Settings of the registry service."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import CommonSettings


class RegistrySettings(CommonSettings):
    """Registry reads DRIFTLOOP_* plus the fields below."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLOOP_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(default=8001, validation_alias="DRIFTLOOP_REGISTRY_PORT")
    """HTTP port of the API."""
    database_url: str | None = Field(default=None, validation_alias="DRIFTLOOP_DATABASE_URL")
    """SQLAlchemy URL; unset: SQLite at <data_dir>/registry.db. PostgreSQL:
    postgresql+psycopg2://user:pass@host/db."""
    group_id: str = Field(default="registry", validation_alias="DRIFTLOOP_REGISTRY_GROUP")
    """Consumer group on models.trained."""

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"
