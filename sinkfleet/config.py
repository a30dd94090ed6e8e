"""Settings from the environment (prefix ``SINKFLEET_``) and an optional TOML file.

Passwords are ``SecretStr``: they never appear in ``repr``, logs or CLI output.
When no password is set, the local stack's generated secrets under
``.sinkfleet/secrets/`` are used, so a developer never types one.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _home() -> Path:
    return Path(os.environ.get("SINKFLEET_HOME", ".")).resolve()


class Settings(BaseSettings):
    """Every knob of sinkfleet. See the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="SINKFLEET_",
        extra="ignore",
        toml_file=os.environ.get("SINKFLEET_CONFIG_FILE", "sinkfleet.toml"),
    )

    home: Path = Field(default_factory=_home, description="Catalogue root (schemas/, topics/ …)")
    state_dir: Path | None = Field(None, description="Local stack state; default HOME/.sinkfleet")

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_heap: str = "512m"
    schema_registry_url: str | None = None

    pg_host: str = "127.0.0.1"
    pg_port: int = 15432
    pg_user: str = "sinkfleet"
    pg_password: SecretStr | None = None
    pg_database: str = "sinkfleet"
    pg_sslmode: str = "prefer"

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # a worker's /metrics port; unset = pick a free one

    redis_host: str = "127.0.0.1"
    redis_port: int = 16379
    redis_password: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the optional TOML file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    def model_post_init(self, __context: Any) -> None:
        if self.state_dir is None:
            self.state_dir = self.home / ".sinkfleet"
        secrets = self.state / "secrets"
        if self.pg_password is None and (secrets / "pg_password").is_file():
            self.pg_password = SecretStr((secrets / "pg_password").read_text().strip())
        if self.redis_password is None and (secrets / "redis_password").is_file():
            self.redis_password = SecretStr((secrets / "redis_password").read_text().strip())

    @property
    def state(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port)

    @cached_property
    def pg_connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` / ``create_pool``."""
        kwargs: dict[str, Any] = {
            "host": self.pg_host,
            "port": self.pg_port,
            "user": self.pg_user,
            "database": self.pg_database,
        }
        if self.pg_password is not None:
            kwargs["password"] = self.pg_password.get_secret_value()
        if self.pg_sslmode != "prefer":
            kwargs["ssl"] = self.pg_sslmode
        return kwargs

    def redis_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": self.redis_host, "port": self.redis_port}
        if self.redis_password is not None:
            kwargs["password"] = self.redis_password.get_secret_value()
        return kwargs


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, the optional file and ``overrides``."""
    return Settings(**overrides)
