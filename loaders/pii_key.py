"""The pseudonymisation key (LGPD): where it comes from and how dbt gets it without writing it anywhere.

Gold carries personal columns only as HMAC-SHA256 pseudonyms keyed with WAREHOUSE_PII_KEY (macros/pii.sql).
A plain hash of an e-mail or a phone is reversed by hashing every candidate; a keyed hash is not, as long
as the key stays out of the warehouse readers' reach. So the key is never put in SQL text, dbt vars,
target/, logs or readable tables:

- PostgreSQL: the CLI hands dbt the two HMAC padded keys as session settings through PGOPTIONS, which libpq
  sends at connection time; only dbt's own sessions have them.
- BigQuery: the CLI writes them with a load job (no SQL text, no query parameters in job metadata) into
  `<ops dataset>.pii_key`, a dataset BI principals are never granted.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Any

KEY_ENV = "WAREHOUSE_PII_KEY"
KEY_FILE_NAME = "pii.key"
MIN_KEY_LENGTH = 32
BLOCK_SIZE = 64  # SHA-256 block size in bytes


class PiiKeyError(RuntimeError):
    """The key is missing or too weak; the message says what to do."""


def load_key(state_dir: Path) -> bytes:
    """WAREHOUSE_PII_KEY, else a random key generated once in the state folder (owner-only file).

    Production must set WAREHOUSE_PII_KEY from its secret store, so every machine computes the same
    pseudonyms; the generated file only spares the demo and the tests a manual step.
    """
    value = os.environ.get(KEY_ENV)
    if value is not None:
        if len(value) < MIN_KEY_LENGTH:
            raise PiiKeyError(
                f"{KEY_ENV} must be at least {MIN_KEY_LENGTH} characters (e.g. `openssl rand -hex 32`)"
            )
        return value.encode("utf-8")
    key_file = state_dir / KEY_FILE_NAME
    if not key_file.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return key_file.read_text().strip().encode("utf-8")


def hmac_pads(key: bytes) -> tuple[str, str]:
    """(K xor ipad, K xor opad) as hex, RFC 2104: with them HMAC needs only sha256 and concatenation."""
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK_SIZE, b"\0")
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return inner.hex(), outer.hex()


def pseudonym(key: bytes, value: str) -> str:
    """What macros/pii.sql computes, in Python (tests and the erasure register use it)."""
    import hmac

    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def postgres_options(key: bytes, existing: str = "") -> str:
    """PGOPTIONS carrying the padded keys as custom settings of every dbt session (hex: no escaping)."""
    inner, outer = hmac_pads(key)
    settings = f"-c warehouse_pii.inner_pad={inner} -c warehouse_pii.outer_pad={outer}"
    return f"{existing} {settings}".strip()


def write_bigquery_key(key: bytes, target: Any, dataset: str) -> None:
    """Replace <dataset>.pii_key with the padded keys, by a load job (the values never enter SQL text).

    `target` is a loaders.destinations.BigQueryTarget: its client has the loaders' credentials and endpoint.
    """
    from google.cloud import bigquery

    client = target.client()
    client.create_dataset(bigquery.Dataset(f"{target.project}.{dataset}"), exists_ok=True)
    inner, outer = hmac_pads(key)
    job = client.load_table_from_json(
        [{"inner_pad": inner, "outer_pad": outer}],
        f"{target.project}.{dataset}.pii_key",
        job_config=bigquery.LoadJobConfig(
            schema=[
                bigquery.SchemaField("inner_pad", "STRING", mode="REQUIRED"),
                bigquery.SchemaField("outer_pad", "STRING", mode="REQUIRED"),
            ],
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        ),
    )
    job.result()


def dbt_key_env(state_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """Environment additions that make the key available to the dbt run described by `env`."""
    key = load_key(state_dir)
    if env.get("WAREHOUSE", "postgres") == "bigquery":
        from loaders.destinations import BigQueryTarget

        write_bigquery_key(key, BigQueryTarget.from_env(env), dataset=env.get("OPS_SCHEMA", "ops"))
        return {}
    return {"PGOPTIONS": postgres_options(key, env.get("PGOPTIONS", ""))}
