"""GCS payload files -> bronze: see pipeline.py (the loader), payload_types.py (configuration),
bucket.py (GCS or a local folder), leases.py, reader.py, samples.py, and docs/gcs_loader.md."""

from loaders.gcs.pipeline import (
    BRONZE_SCHEMA_ENV,
    BUCKET_URL_ENV,
    DEFAULT_BRONZE_SCHEMA,
    GcsLoadResult,
    bucket_url_from_env,
    load_gcs,
    requeue_failed,
)
from loaders.gcs.samples import write_sample_files

__all__ = [
    "BRONZE_SCHEMA_ENV",
    "BUCKET_URL_ENV",
    "DEFAULT_BRONZE_SCHEMA",
    "GcsLoadResult",
    "bucket_url_from_env",
    "load_gcs",
    "requeue_failed",
    "write_sample_files",
]
