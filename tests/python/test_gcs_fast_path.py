"""The bulk (DuckDB) path of the GCS loader against the per-record path, on the same records.

The fast path may only accept what the per-record path accepts, with the same values; everything else
must reach the per-record path, which decides and explains. Each test runs both over valid and invalid
records and requires identical rows, rejects and drift, and checks that the valid records really were
accepted in bulk (so a fast path that silently declines everything fails too).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zoneinfo
from collections import Counter
from typing import Any

import orjson
import pyarrow as pa
import pytest
from helpers import interaction

from loaders.gcs.fast_path import ChunkValidator, _vector_time, bulk_validator
from loaders.gcs.payload_types import _CONVERTERS, InvalidRecord, load_payload_types, payload_type_from_dict
from loaders.gcs.pipeline import _data_schema
from loaders.gcs.reader import FileDigest, iter_records, parse_record

TYPES = load_payload_types()


def raw(record: Any) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


Outcome = tuple[list[dict[str, Any]], list[tuple[int, str]], Counter[str]]


def record_by_record(type_name: str, raws: list[bytes], numbers: list[int]) -> Outcome:
    """The per-record path (RecordProcessor), rows typed as the staged Arrow file types them."""
    processor = TYPES[type_name].processor()
    rows, rejects, drift = [], [], Counter()
    for number in numbers:
        data = raws[number - 1]
        try:
            values, undeclared = processor.process(parse_record(data, number, 0))
        except InvalidRecord as exc:
            rejects.append((number, str(exc)))
            continue
        drift.update(undeclared)
        rows.append([*values, data.decode(), number])
    schema = _data_schema(TYPES[type_name])
    table = pa.Table.from_pylist([dict(zip(schema.names, row, strict=True)) for row in rows], schema=schema)
    return table.to_pylist(), rejects, drift


def one_by_one(type_name: str, raws: list[bytes]) -> Outcome:
    return record_by_record(type_name, raws, list(range(1, len(raws) + 1)))


def in_bulk(
    type_name: str, raws: list[bytes]
) -> tuple[list[dict[str, Any]], list[tuple[int, str]], Counter[str], int]:
    """The bulk path, with what it leaves to the per-record path (as stage_file does)."""
    payload_type = TYPES[type_name]
    validator, _why = bulk_validator(payload_type, payload_type.processor())
    assert validator is not None, f"{type_name} should be eligible for the bulk path"
    result = validator.accept(raws, list(range(1, len(raws) + 1)))
    bulk = result.accepted.cast(_data_schema(payload_type)).to_pylist()
    rows, rejects, drift = record_by_record(type_name, raws, [position + 1 for position in result.rest])
    rows = sorted([*bulk, *rows], key=lambda r: r["_record_number"])
    return rows, rejects, drift + Counter(result.drift), len(bulk)


def assert_same(type_name: str, raws: list[bytes], expect_bulk: set[int]) -> None:
    expected_rows, expected_rejects, expected_drift = one_by_one(type_name, raws)
    rows, rejects, drift, bulk = in_bulk(type_name, raws)
    assert rows == expected_rows
    assert rejects == expected_rejects
    assert drift == expected_drift
    accepted_in_bulk = {r["_record_number"] for r in in_bulk_rows(type_name, raws)}
    assert expect_bulk <= accepted_in_bulk, (
        f"records {sorted(expect_bulk - accepted_in_bulk)} went one by one"
    )
    assert bulk == len(accepted_in_bulk)


def in_bulk_rows(type_name: str, raws: list[bytes]) -> list[dict[str, Any]]:
    payload_type = TYPES[type_name]
    validator, _why = bulk_validator(payload_type, payload_type.processor())
    assert validator is not None
    return validator.accept(raws, list(range(1, len(raws) + 1))).accepted.to_pylist()


def test_eligibility_follows_the_configuration():
    for name in ("customer_interactions", "inventory_snapshots"):
        validator, why = bulk_validator(TYPES[name], TYPES[name].processor())
        assert isinstance(validator, ChunkValidator) and why == "bulk"
    # nested schemas with properties can hide undeclared nested fields: record by record, and it says why
    validator, why = bulk_validator(TYPES["supplier_invoices"], TYPES["supplier_invoices"].processor())
    assert validator is None and why == "record by record: nested schemas that can hold undeclared fields"
    with_format = payload_type_from_dict(
        {
            "name": "events",
            "primary_key": ["id"],
            "columns": {"id": "text", "at": "timestamp"},
            "json_schema": {
                "type": "object",
                "properties": {"at": {"type": "string", "format": "date-time"}},
            },
        }
    )
    assert bulk_validator(with_format, with_format.processor()) == (
        None,
        "record by record: JSON Schema keyword(s) ['format']",
    )


INTERACTION_CASES: list[tuple[Any, bool]] = [  # (record or raw bytes, expected to be accepted in bulk)
    (interaction(1), True),
    (interaction(2, customer_id=42, agent_id="atendente-07", tags=["vip", "retorno"]), True),
    (interaction(3, subject="Ñandú — ação", started_at="2026-06-30T09:15:00Z"), True),
    (interaction(4, resolved_at=None, resolved=False, resolution_time_minutes=None), True),
    (interaction(5, unexpected_field="drift", another={"x": 1}), True),  # drift is recorded, not an error
    (
        interaction(6, started_at="2026-06-30T09:15:00-03:00"),
        True,
    ),  # spellings the query leaves to Python: converted in bulk, one value at a time
    (interaction(7, started_at="2026-06-30 09:15:00"), True),
    (interaction(8, started_at="2026-06-30T09:15:00.123456"), True),
    (interaction(9, started_at="2018-11-04T00:30:00"), True),  # a local time that did not exist (DST)
    (interaction(10, started_at="2019-02-16T23:30:00"), True),  # an hour that happened twice
    (interaction(11, started_at="not a time"), False),
    (interaction(12, started_at="2026-02-30T10:00:00"), False),
    (interaction(13, customer_id="42"), False),
    (interaction(14, customer_id=42.0), False),
    (interaction(15, customer_id=2**63), False),
    (interaction(16, customer_id=0), False),
    (interaction(17, customer_id=True), False),
    (interaction(18, channel="fax"), False),
    (interaction(19, channel=None), False),
    (interaction(20, channel=...), False),
    (interaction(21, customer_cnpj="1122233300018"), False),
    (interaction(22, customer_cnpj="11222333000181\n"), False),
    (interaction(23, customer_cnpj=..., customer_id=None), False),  # anyOf: neither identifier
    (interaction(24, customer_cnpj=..., customer_id=7), True),
    (interaction(25, interaction_id=""), False),
    (interaction(26, resolution_time_minutes=-1), False),
    (interaction(27, resolution_time_minutes=3), True),
    (interaction(28, resolution_time_minutes="3"), False),
    (interaction(29, resolved="yes"), False),
    (interaction(30, tags=["ok", 1]), False),
    (interaction(31, tags="vip"), False),
    (interaction(32, agent_id="nul\x00char"), False),
    (interaction(33, agentType="human", agent_type=...), False),  # needs name normalisation
    (interaction(34, Channel="email"), False),  # collides with channel
    ([interaction(35)], False),
    ("just a string", False),
    (
        b'{"interaction_id": "INT-00036", "interaction_id": "INT-99999", "customer_cnpj": "11222333000181", '
        b'"channel": "web", "type": "order", "started_at": "2026-06-30T09:15:00", "agent_type": "ai"}',
        False,
    ),
    (
        b'{"interaction_id": "INT-00037", "customer_id": 123456789012345678901234567890, "channel": "web", '
        b'"type": "order", "started_at": "2026-06-30T09:15:00", "agent_type": "ai"}',
        False,
    ),
    (
        b'{"interaction_id": "INT-00038", "customer_id": 5, "resolution_time_minutes": 1e400, "channel": "web", '
        b'"type": "order", "started_at": "2026-06-30T09:15:00", "agent_type": "ai"}',
        False,
    ),
    (
        b'{"interaction_id": "INT-\\u00e9\\"39", "customer_id": 5, "channel": "web", "type": "order",\n'
        b'  "started_at": "2026-06-30T09:15:00", "agent_type": "human", "resolution_time_minutes": 0.1}',
        True,
    ),
]


def test_customer_interactions_bulk_equals_record_by_record():
    raws = [case if isinstance(case, bytes) else raw(case) for case, _ in INTERACTION_CASES]
    expect_bulk = {n for n, (_, bulk) in enumerate(INTERACTION_CASES, start=1) if bulk}
    assert_same("customer_interactions", raws, expect_bulk)


def test_inventory_snapshots_bulk_equals_record_by_record():
    def snapshot(n: int, **overrides: Any) -> bytes:
        record = {
            "snapshot_date": "2026-06-30",
            "warehouse_id": "CD-SP",
            "sku": f"MED-{n:04d}",
            "product_id": n,
            "quantity_available": 10 * n,
            "quantity_reserved": 1,
            "captured_at": "2026-06-30T23:00:00",
        }
        record.update(overrides)
        return raw({k: v for k, v in record.items() if v is not ...})

    cases = [
        (snapshot(1), True),
        (snapshot(2, quantity_incoming=5), True),
        (snapshot(3, snapshot_date="2026-13-01"), False),
        (snapshot(4, snapshot_date="20260630"), False),
        (snapshot(5, warehouse_id="XX-SP"), False),
        (snapshot(6, quantity_available=-1), False),
        (snapshot(7, quantity_available=1.5), False),
        (snapshot(8, product_id=None), False),  # JSON Schema: null is not an integer
        (snapshot(9, sku=...), False),
        (snapshot(10, captured_at="2026-06-30T23:00:00+00:00"), True),  # converted in Python, in bulk
    ]
    assert_same("inventory_snapshots", [c for c, _ in cases], {n for n, (_, b) in enumerate(cases, 1) if b})


def test_many_records_in_one_chunk_are_accepted_in_bulk():
    raws = [raw(interaction(n, customer_id=n, tags=["a"] * (n % 3))) for n in range(1, 5001)]
    raws[1234] = raw(interaction(1235, channel="pigeon"))
    rows, rejects, _drift, bulk = in_bulk("customer_interactions", raws)
    assert bulk == 4999 and len(rows) == 4999
    assert rejects == [
        (1235, "JSON Schema: 'pigeon' is not one of ['whatsapp', 'email', 'phone', 'web'] at channel")
    ]


@pytest.mark.parametrize("chunk", [7, 64, 1 << 20])
def test_lines_and_bracket_scanning_find_the_same_records(chunk):
    data = (
        b'{"a": 1}\n'
        b'{"b": [1,\n 2]}\n'  # a value over two lines: bracket scanning
        b'{"c": 3} {"d": 4}\n'  # two values on one line
        b'  {"e": "x\\ny"}  \r\n'
        b"123456789012345678901234567890\n"  # beyond 64 bits
        b'"last"'
    )
    records = [
        (offset, raw, value)
        for _n, offset, raw, value in iter_records(io.BytesIO(data), FileDigest(), chunk_bytes=chunk)
    ]
    assert [r[1] for r in records] == [
        b'{"a": 1}', b'{"b": [1,\n 2]}', b'{"c": 3}', b'{"d": 4}', b'{"e": "x\\ny"}',
        b"123456789012345678901234567890", b'"last"',
    ]  # fmt: skip
    assert [data[offset : offset + len(raw)] for offset, raw, _ in records] == [r[1] for r in records]
    assert [r[2] for r in records][:2] == [{"a": 1}, {"b": [1, 2]}]
    assert all(orjson.dumps(r[2]) for r in records[:5])


def test_common_time_spellings_are_converted_without_python():
    texts = pa.chunked_array([[
        "2026-06-30T09:15:00", "2026-06-30T09:15:00Z", "2026-02-30T10:00:00", "2018-11-04T00:30:00",
        "2026-06-30T09:15:00-03:00", None,
    ]])  # fmt: skip
    zone = zoneinfo.ZoneInfo("America/Sao_Paulo")
    converted, done = _vector_time(texts, "timestamp", zone)
    assert done == [True, True, False, True, False, False]  # the rest is left to the per-record converter
    column = TYPES["customer_interactions"].columns[5]
    assert column.name == "started_at"
    for value, text, is_done in zip(converted.to_pylist(), texts.to_pylist(), done, strict=True):
        if is_done:  # exactly what the per-record converter gives (a skipped DST hour included)
            assert value == _CONVERTERS["timestamp"](text, column, zone)
    assert converted.to_pylist()[0] == dt.datetime(2026, 6, 30, 12, 15, tzinfo=dt.UTC)
    dates, done = _vector_time(pa.chunked_array([["2026-06-30", "2026-02-30", "20260630"]]), "date", None)
    assert done == [True, False, False] and dates.to_pylist()[0] == dt.date(2026, 6, 30)


def test_decimal_and_json_columns_bulk_equals_record_by_record():
    TYPES["orders_feed"] = payload_type_from_dict(
        {
            "name": "orders_feed",
            "primary_key": ["id"],
            "columns": {
                "id": "text",
                "amount": {"type": "decimal", "precision": 10, "scale": 2},
                "meta": "json",
                "tags": "json",
            },
        }
    )
    cases = [
        (b'{"id": "a", "amount": 10.5, "meta": {"x": [1, 2.50, "\\u00e9"]}, "tags": ["v"]}', True),
        (b'{"id": "b", "amount": 1e3, "meta": null}', True),
        (b'{"id": "c", "amount": 12, "meta": {"deep": {"n": 123456789012}}, "tags": []}', True),
        (b'{"id": "d", "amount": 10.555}', False),  # more decimals than the scale
        (b'{"id": "e", "amount": 123456789012}', False),  # beyond the precision
        (b'{"id": "f", "amount": "10.50"}', False),
        (b'{"id": "g", "meta": {"nul": "\\u0000"}}', False),
        (b'{"id": "h", "amount": 0.1, "tags": {"a": 1}, "meta": {"a": 1}}', True),
    ]
    assert_same("orders_feed", [c for c, _ in cases], {n for n, (_, b) in enumerate(cases, 1) if b})
