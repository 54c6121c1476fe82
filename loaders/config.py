"""Where things are: one place that resolves the project's connections and folders from the environment.

Nothing here is secret on its own; passwords only ever arrive inside the URLs that the user sets
(WAREHOUSE_URL / OPERATIONAL_URL) and are masked whenever a URL is shown.

One switch chooses the warehouse of the whole pipeline (loaders and dbt): `WAREHOUSE=postgres` (the default:
WAREHOUSE_URL, else the embedded PostgreSQL) or `WAREHOUSE=bigquery` (BIGQUERY_PROJECT and friends, see
loaders/destinations.py; the warehouse URL is then `bigquery://<project>?...`). The operational source is
PostgreSQL either way (OPERATIONAL_URL, else the embedded server).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2

from loaders.destinations import BigQueryTarget, ConnectionConfigError, warehouse_from_env
from loaders.embedded_postgres import DEFAULT_PORT, EmbeddedPostgres

PROJECT_DIR = Path(__file__).resolve().parents[1]

__all__ = ["ConnectionConfigError", "Settings", "check_connection", "dbt_env", "load_settings", "mask_url"]


@dataclass(frozen=True)
class Settings:
    configured_warehouse_url: str
    configured_operational_url: str
    embedded: EmbeddedPostgres | None
    state_dir: Path
    bronze_operational_schema: str
    warehouse: str = "postgres"

    @property
    def is_bigquery(self) -> bool:
        return self.warehouse == "bigquery"

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
    """Embedded server unless both URLs are configured; a configured URL always wins over the embedded one.

    With WAREHOUSE=bigquery the warehouse is BigQuery (a bigquery:// WAREHOUSE_URL, else BIGQUERY_* variables)
    and the embedded server, if any, holds only the operational database.
    """
    state_dir = Path(os.environ.get("WAREHOUSE_STATE_DIR", PROJECT_DIR / ".warehouse")).resolve()
    warehouse_url = os.environ.get("WAREHOUSE_URL", "").strip()
    operational_url = os.environ.get("OPERATIONAL_URL", "").strip()
    # WAREHOUSE wins; without it a bigquery:// WAREHOUSE_URL says BigQuery on its own (any other URL is
    # PostgreSQL's, checked by check_connection with a message of its own)
    url_kind = "bigquery" if warehouse_url.startswith("bigquery://") else "postgres"
    warehouse = warehouse_from_env(default=url_kind)
    if warehouse_url and url_kind != warehouse:
        raise ConnectionConfigError(
            f"WAREHOUSE={warehouse} but WAREHOUSE_URL is not a {warehouse} URL ({mask_url(warehouse_url)}): "
            "unset WAREHOUSE_URL or change WAREHOUSE"
        )
    if warehouse == "bigquery" and not warehouse_url:
        warehouse_url = BigQueryTarget.from_env().url
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
        warehouse=warehouse,
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
    if url.startswith("bigquery://"):
        BigQueryTarget.from_url(url).check(what)
        return
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
    """The variables profiles.example.yml reads, derived from a warehouse URL.

    BigQuery: the project, location, auth method, key file and endpoint of the loaders, so dbt reads what they
    wrote; a token (BIGQUERY_TOKEN) is never put here, dbt reads it from the environment like the loaders.
    """
    if url.startswith("bigquery://"):
        target = BigQueryTarget.from_url(url)
        env = {
            "WAREHOUSE": "bigquery",
            "BIGQUERY_PROJECT": target.project,
            "BIGQUERY_LOCATION": target.location,
            "BIGQUERY_AUTH_METHOD": target.auth,
        }
        if target.keyfile:
            env["BIGQUERY_KEYFILE"] = target.keyfile
        if target.api_endpoint:
            env["BIGQUERY_API_ENDPOINT"] = target.api_endpoint
        return env
    parts = urlsplit(url)
    env = {
        "WAREHOUSE_PG_HOST": parts.hostname or "127.0.0.1",
        "WAREHOUSE_PG_PORT": str(parts.port or 5432),
        "WAREHOUSE_PG_USER": unquote(parts.username or "postgres"),
        "WAREHOUSE_PG_PASSWORD": unquote(parts.password or ""),
        "WAREHOUSE_PG_DATABASE": parts.path.lstrip("/") or "warehouse",
    }
    return env
