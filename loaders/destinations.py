"""Which warehouse the loaders write to, and how: the one place that builds dlt destinations.

Why it exists: the pipeline runs unchanged on PostgreSQL (where teams start) and on BigQuery (where they go
when one machine is not enough). Every loader asks this module for its dlt destination, its staging and its
file format, and for a BigQuery client when it needs to read bronze itself, so the choice is made once.

A warehouse is named by a URL, so every loader keeps a single `warehouse_url` argument:

    postgresql://user:password@host:port/database        PostgreSQL: CSV files landed with COPY
    bigquery://<project>?location=US[&auth=...][&keyfile=...][&api_endpoint=...][&staging_bucket=gs://...]

The BigQuery URL carries no secret: a key file is named by its path, and an access token (auth=oauth-secrets)
is read from BIGQUERY_TOKEN only when credentials are built. `warehouse_url_from_env()` builds it from the same
variables the dbt profile reads (BIGQUERY_PROJECT, BIGQUERY_LOCATION, BIGQUERY_AUTH_METHOD, BIGQUERY_KEYFILE,
BIGQUERY_TOKEN, BIGQUERY_API_ENDPOINT) plus BIGQUERY_STAGING_BUCKET.

How loads reach BigQuery: dlt **load jobs** of Parquet files (never streaming inserts: those are billed per row
and their rows cannot be changed for a while). Without a staging bucket dlt uploads each file with the job;
with BIGQUERY_STAGING_BUCKET it writes the files to GCS first (`staging="filesystem"`) and BigQuery loads them
from gs:// URIs, which is the way for large loads. Columns that are JSON on PostgreSQL (jsonb) are STRING
columns holding the same JSON text on BigQuery: BigQuery cannot load JSON columns from Parquet, and its JSON
functions (JSON_VALUE, JSON_QUERY_ARRAY) read JSON text just as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

WAREHOUSE_ENV = "WAREHOUSE"
WAREHOUSES = ("postgres", "bigquery")
AUTH_METHODS = ("oauth", "service-account", "oauth-secrets")
BIGQUERY_SCOPES = (
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/drive.readonly",
)
_CREDENTIALS: dict[tuple[str, str | None, str], Any] = {}
# google-cloud-bigquery's own override of its endpoint: dlt builds its BigQuery client without client
# options, so a configured endpoint reaches dlt through this variable.
_CLIENT_ENDPOINT_ENV = "BIGQUERY_EMULATOR_HOST"


class ConnectionConfigError(RuntimeError):
    """A configured warehouse or database cannot be used; the message says which one and why, without secrets."""


def warehouse_kind(url: str) -> str:
    """postgres or bigquery, from a warehouse URL's scheme."""
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme == "bigquery":
        return "bigquery"
    raise ConnectionConfigError(
        f"unsupported warehouse URL scheme {scheme!r}: expected postgresql://... or bigquery://<project>"
    )


def warehouse_from_env(default: str = "postgres") -> str:
    """The WAREHOUSE switch: postgres (default) or bigquery."""
    value = os.environ.get(WAREHOUSE_ENV, "").strip().lower() or default
    if value not in WAREHOUSES:
        raise ConnectionConfigError(
            f"WAREHOUSE must be postgres or bigquery, not {os.environ.get(WAREHOUSE_ENV)!r}"
        )
    return value


# -- BigQuery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigQueryTarget:
    """A BigQuery project to load into, and how to reach it (no secrets: a token stays in the environment)."""

    project: str
    location: str = "US"
    auth: str = "oauth"
    keyfile: str | None = None
    api_endpoint: str | None = None
    staging_bucket: str | None = None

    def __post_init__(self) -> None:
        if not self.project:
            raise ConnectionConfigError("BigQuery needs a project: set BIGQUERY_PROJECT")
        if self.auth not in AUTH_METHODS:
            raise ConnectionConfigError(
                f"BIGQUERY_AUTH_METHOD must be one of {', '.join(AUTH_METHODS)}, not {self.auth!r}"
            )
        if self.auth == "service-account" and not self.keyfile:
            raise ConnectionConfigError(
                "BIGQUERY_AUTH_METHOD=service-account needs BIGQUERY_KEYFILE (path of a JSON key file)"
            )
        if self.staging_bucket and not self.staging_bucket.startswith("gs://"):
            raise ConnectionConfigError(
                f"BIGQUERY_STAGING_BUCKET must be a gs://bucket[/path] URL, got {self.staging_bucket!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BigQueryTarget:
        env = os.environ if environ is None else environ
        keyfile = _clean(env.get("BIGQUERY_KEYFILE")) or None
        auth = _clean(env.get("BIGQUERY_AUTH_METHOD"))
        if not auth:
            # like dbt's profile would need it spelled out: a key file means service-account, a token
            # oauth-secrets, nothing application default credentials (which read GOOGLE_APPLICATION_CREDENTIALS)
            auth = (
                "service-account"
                if keyfile
                else "oauth-secrets"
                if _clean(env.get("BIGQUERY_TOKEN"))
                else "oauth"
            )
        return cls(
            project=_clean(env.get("BIGQUERY_PROJECT")),
            location=_clean(env.get("BIGQUERY_LOCATION")) or "US",
            auth=auth,
            keyfile=keyfile,
            api_endpoint=_clean(env.get("BIGQUERY_API_ENDPOINT")) or None,
            staging_bucket=_clean(env.get("BIGQUERY_STAGING_BUCKET")).rstrip("/") or None,
        )

    @classmethod
    def from_url(cls, url: str) -> BigQueryTarget:
        parts = urlsplit(url)
        if parts.scheme.lower() != "bigquery":
            raise ConnectionConfigError(f"not a bigquery:// URL: {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - {"location", "auth", "keyfile", "api_endpoint", "staging_bucket"})
        if unknown:
            raise ConnectionConfigError(f"unknown BigQuery URL parameter(s) {', '.join(unknown)} in {url!r}")
        return cls(
            project=parts.netloc,
            location=query.get("location", "US"),
            auth=query.get("auth", "oauth"),
            keyfile=query.get("keyfile") or None,
            api_endpoint=query.get("api_endpoint") or None,
            staging_bucket=query.get("staging_bucket") or None,
        )

    @property
    def url(self) -> str:
        query = {
            "location": self.location,
            "auth": self.auth,
            "keyfile": self.keyfile,
            "api_endpoint": self.api_endpoint,
            "staging_bucket": self.staging_bucket,
        }
        encoded = urlencode({k: v for k, v in query.items() if v}, quote_via=quote, safe="/:")
        return urlunsplit(("bigquery", self.project, "", encoded, ""))

    def table_id(self, dataset: str, table: str) -> str:
        """`project.dataset.table`: always fully qualified (a default dataset is never assumed)."""
        return f"{self.project}.{dataset}.{table}"

    def quoted(self, dataset: str, table: str) -> str:
        return f"`{self.table_id(dataset, table)}`"

    def credentials(self) -> Any:
        """google-auth credentials for the configured method (resolved once per process: they refresh
        themselves); a clear error when there are none."""
        token = _clean(os.environ.get("BIGQUERY_TOKEN")) if self.auth == "oauth-secrets" else ""
        key = (self.auth, self.keyfile, token)
        if key not in _CREDENTIALS:
            _CREDENTIALS[key] = self._resolve_credentials()
        return _CREDENTIALS[key]

    def _resolve_credentials(self) -> Any:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

        try:
            if self.auth == "service-account":  # as dbt-bigquery reads the same key file
                from google.oauth2 import service_account

                return service_account.Credentials.from_service_account_file(
                    str(self.keyfile), scopes=list(BIGQUERY_SCOPES)
                )
            if self.auth == "oauth-secrets":
                from google.oauth2.credentials import Credentials

                token = _clean(os.environ.get("BIGQUERY_TOKEN"))
                if not token:
                    raise ConnectionConfigError(
                        "BIGQUERY_AUTH_METHOD=oauth-secrets needs BIGQUERY_TOKEN (an OAuth access token)"
                    )
                return Credentials(token=token)
            credentials, _ = google.auth.default(scopes=list(BIGQUERY_SCOPES))
            return credentials
        except DefaultCredentialsError as exc:
            if self.keyfile and self.auth == "service-account":
                raise ConnectionConfigError(
                    f"cannot read the BigQuery key file {self.keyfile}: {_first_line(exc)}"
                ) from None
            raise ConnectionConfigError(
                "no Google credentials found for BigQuery: run `gcloud auth application-default login`, "
                "or set BIGQUERY_KEYFILE (service-account key file) or GOOGLE_APPLICATION_CREDENTIALS "
                f"({_first_line(exc)})"
            ) from None
        except (OSError, ValueError, GoogleAuthError) as exc:
            what = f"the BigQuery key file {self.keyfile}" if self.keyfile else "Google credentials"
            raise ConnectionConfigError(f"cannot read {what}: {_first_line(exc)}") from None

    def client(self) -> Any:
        """A google-cloud-bigquery client for this project, location and endpoint."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import bigquery

        options = ClientOptions(api_endpoint=self.api_endpoint) if self.api_endpoint else None
        return bigquery.Client(
            project=self.project,
            credentials=self.credentials(),
            location=self.location,
            client_options=options,
        )

    def check(self, what: str = "warehouse") -> None:
        """Fail early, with something a person can act on, when the project cannot be reached."""
        from google.api_core import exceptions as api_exceptions

        client = self.client()
        try:
            # the cheapest call the loaders' own role allows (job user): a query that reads nothing
            list(client.query("select 1").result(timeout=30))
        except (api_exceptions.GoogleAPIError, OSError) as exc:
            where = f" at {self.api_endpoint}" if self.api_endpoint else ""
            raise ConnectionConfigError(
                f"cannot reach the {what} BigQuery project {self.project!r}{where}: {_first_line(exc)}"
            ) from None
        finally:
            client.close()

    def table_exists(self, client: Any, dataset: str, table: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            client.get_table(self.table_id(dataset, table))
        except NotFound:
            return False
        return True


def bigquery_target(url: str) -> BigQueryTarget:
    return BigQueryTarget.from_url(url)


# -- dlt ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DltDestination:
    """What a loader hands dlt: `dlt.pipeline(**pipeline_kwargs)` and `pipeline.run(..., **run_kwargs)`."""

    kind: str
    destination: Any
    staging: Any | None
    loader_file_format: str

    @property
    def pipeline_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"destination": self.destination}
        if self.staging is not None:
            kwargs["staging"] = self.staging
        return kwargs

    @property
    def run_kwargs(self) -> dict[str, Any]:
        return {"loader_file_format": self.loader_file_format}

    @property
    def json_as_text(self) -> bool:
        """True where JSON columns are landed as text holding JSON (BigQuery, see the module doc)."""
        return self.kind == "bigquery"

    def column_hints(self, columns: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        return column_hints_for(self.kind, columns)


def column_hints_for(kind: str, columns: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """dlt column hints adapted to a warehouse: json -> text on BigQuery (see the module doc), else unchanged."""
    adapted = {name: dict(hint) for name, hint in columns.items()}
    if kind == "bigquery":
        for hint in adapted.values():
            if hint.get("data_type") == "json":
                hint["data_type"] = "text"
    return adapted


def dlt_destination(warehouse_url: str, *, unique_dlt_id: bool = True) -> DltDestination:
    """The dlt destination, staging and file format for a warehouse URL (see the module doc).

    `unique_dlt_id=False`: PostgreSQL tables dlt creates get no UNIQUE index on `_dlt_id` (a loader that
    undoes a replayed COPY itself, and would otherwise pay for the index on every row it appends).
    """
    import dlt

    # The load files live seconds on local disk before COPY reads them: gzip would cost a third of the
    # load's CPU time and save nothing (Parquet compresses inside the file anyway).
    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    kind = warehouse_kind(warehouse_url)
    if kind == "postgres":
        return DltDestination(
            kind=kind,
            destination=dlt.destinations.postgres(credentials=warehouse_url, create_indexes=unique_dlt_id),
            staging=None,
            loader_file_format="csv",
        )
    target = BigQueryTarget.from_url(warehouse_url)
    if target.api_endpoint:
        os.environ[_CLIENT_ENDPOINT_ENV] = target.api_endpoint
    credentials = target.credentials()
    destination = dlt.destinations.bigquery(
        credentials=credentials, project_id=target.project, location=target.location
    )
    staging = None
    if target.staging_bucket:
        staging = dlt.destinations.filesystem(
            bucket_url=target.staging_bucket, credentials=_staging_credentials(target, credentials)
        )
    return DltDestination(kind=kind, destination=destination, staging=staging, loader_file_format="parquet")


def pipeline_warehouse_kind(pipeline: Any) -> str:
    """postgres or bigquery: the warehouse a dlt pipeline built from `dlt_destination` loads into."""
    destination_type = str(pipeline.destination.destination_type)
    return "bigquery" if destination_type.rsplit(".", 1)[-1] == "bigquery" else "postgres"


def pipeline_run_kwargs(pipeline: Any) -> dict[str, Any]:
    """`pipeline.run()` arguments for a pipeline's warehouse (the file format of its bulk path)."""
    return {"loader_file_format": "parquet" if pipeline_warehouse_kind(pipeline) == "bigquery" else "csv"}


def _staging_credentials(target: BigQueryTarget, credentials: Any) -> Any:
    """GCS credentials for the staging bucket: the same key file as BigQuery (its JSON, which dlt hands to
    gcsfs); otherwise the same google-auth credentials, with which gcsfs falls back to its own default
    chain (application default credentials)."""
    if target.auth == "service-account" and target.keyfile:
        try:
            with open(target.keyfile, encoding="utf-8") as handle:
                return handle.read()
        except OSError as exc:
            raise ConnectionConfigError(
                f"cannot read the BigQuery key file {target.keyfile}: {exc}"
            ) from None
    return credentials


# -- helpers -----------------------------------------------------------------------------------


def _clean(value: str | None) -> str:
    return (value or "").strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
