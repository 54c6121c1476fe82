"""Where things are: one place that resolves the project's connections and folders from the environment.

Nothing here is secret on its own; passwords only ever arrive inside the URLs that the user sets
(WAREHOUSE_URL / OPERATIONAL_URL) and are masked whenever a URL is shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2

from loaders.embedded_postgres import DEFAULT_PORT, EmbeddedPostgres

PROJECT_DIR = Path(__file__).resolve().parents[1]


class ConnectionConfigError(RuntimeError):
    """A configured database cannot be reached; the message says which one and why, without secrets."""


@dataclass(frozen=True)
class Settings:
    configured_warehouse_url: str
    configured_operational_url: str
    embedded: EmbeddedPostgres | None
    state_dir: Path
    bronze_operational_schema: str

    @property
    def warehouse_url(self) -> str:
        # read on use: the embedded server's password exists only once it has been initialised
        return self.configured_warehouse_url or self._embedded().url("warehouse")

    @property
    def operational_url(self) -> str:
        return self.configured_operational_url or self._embedded().url("operational")

    def _embedded(self) -> EmbeddedPostgres:
        assert self.embedded is not None, "no URL configured and no embedded server"
        return self.embedded

    @property
    def dlt_pipelines_dir(self) -> Path:
        return self.state_dir / "dlt"

    @property
    def is_default_state(self) -> bool:
        return self.state_dir == PROJECT_DIR / ".warehouse"

    @property
    def dbt_target_dir(self) -> Path:
        """dbt's artifacts: target/ for the main job, inside the state folder for tests and parallel runs."""
        return PROJECT_DIR / "target" if self.is_default_state else self.state_dir / "target"


def load_settings() -> Settings:
    """Embedded server unless both URLs are configured; a configured URL always wins over the embedded one."""
    state_dir = Path(os.environ.get("WAREHOUSE_STATE_DIR", PROJECT_DIR / ".warehouse")).resolve()
    warehouse_url = os.environ.get("WAREHOUSE_URL", "").strip()
    operational_url = os.environ.get("OPERATIONAL_URL", "").strip()
    embedded = None
    if not (warehouse_url and operational_url):
        port = int(os.environ.get("WAREHOUSE_PG_PORT", DEFAULT_PORT))
        embedded = EmbeddedPostgres(state_dir / "postgres", port=port)
    return Settings(
        configured_warehouse_url=warehouse_url,
        configured_operational_url=operational_url,
        embedded=embedded,
        state_dir=state_dir,
        bronze_operational_schema=os.environ.get("BRONZE_OPERATIONAL_SCHEMA", "bronze_operational"),
    )


def mask_url(url: str) -> str:
    """The URL with its password replaced, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@")
    return urlunsplit(parts._replace(netloc=netloc))


def check_connection(url: str, what: str) -> None:
    """Fail early with a message a person can act on, instead of a stack trace from deep inside a loader."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConnectionConfigError(
            f"the {what} URL must look like postgresql://user:password@host:port/database, got {mask_url(url)!r}"
        )
    try:
        psycopg2.connect(url, connect_timeout=5).close()
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionConfigError(
            f"cannot connect to the {what} database at {mask_url(url)}: {reason}"
        ) from None


def dbt_env(url: str) -> dict[str, str]:
    """The variables profiles.example.yml reads, derived from a warehouse URL."""
    parts = urlsplit(url)
    env = {
        "WAREHOUSE_PG_HOST": parts.hostname or "127.0.0.1",
        "WAREHOUSE_PG_PORT": str(parts.port or 5432),
        "WAREHOUSE_PG_USER": unquote(parts.username or "postgres"),
        "WAREHOUSE_PG_PASSWORD": unquote(parts.password or ""),
        "WAREHOUSE_PG_DATABASE": parts.path.lstrip("/") or "warehouse",
    }
    return env
