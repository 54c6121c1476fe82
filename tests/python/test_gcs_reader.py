"""Unit tests of the streaming reader and of payload-type configuration (no servers needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random

import pytest

from loaders.gcs.payload_types import (
    InvalidRecord,
    PayloadTypeError,
    load_payload_types,
    normalize_name,
    payload_type_from_dict,
)
from loaders.gcs.reader import VALIDATED, FileDigest, MalformedFile, iter_records


def read(data: bytes, chunk: int = 1 << 20) -> tuple[str, list[bytes]]:
    """(format, raw records), read both ways: values built by orjson, and records only checked by simdjson
    (the bulk loader's way). Both must find the same records at the same offsets, or the same error."""
    outcomes = []
    for parse_values in (True, False):
        digest = FileDigest()
        stream = io.BytesIO(data)
        try:
            records = [
                (number, offset, raw, value is VALIDATED)
                for number, offset, raw, value in iter_records(
                    stream, digest, chunk_bytes=chunk, parse_values=parse_values
                )
            ]
        except MalformedFile as exc:
            outcomes.append(("malformed", str(exc)))
            continue
        assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.stored_bytes == len(data)
        if parse_values:
            assert not any(validated for *_, validated in records)
        outcomes.append((digest.format, [record[:3] for record in records]))
    assert outcomes[0] == outcomes[1]
    kind, found = outcomes[0]
    if kind == "malformed":
        raise MalformedFile(found)
    return kind, [raw for _number, _offset, raw in found]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", ("empty", [])),
        (b" \r\n\t", ("empty", [])),
        (b"[]", ("array", [])),
        (b"[ ]\n", ("array", [])),
        (b"{}", ("object", [b"{}"])),
        (b'{"a": 1}\n', ("object", [b'{"a": 1}'])),
        (b'{"a":1}\r\n{"b":2}\r\n\r\n', ("ndjson", [b'{"a":1}', b'{"b":2}'])),
        (b'[{"a":"],{\\"}"}, 1, "x,y", null]', ("array", [b'{"a":"],{\\"}"}', b"1", b'"x,y"', b"null"])),
        (b'\xef\xbb\xbf[{"a": 1}]', ("array", [b'{"a": 1}'])),
        (b'[{"n": 123456789012345678901234567890}]', ("array", [b'{"n": 123456789012345678901234567890}'])),
        (
            b'{"n": 123456789012345678901234567890}\n{"a":1}\n',  # valid JSON simdjson refuses: parsed instead
            ("ndjson", [b'{"n": 123456789012345678901234567890}', b'{"a":1}']),
        ),
    ],
)
def test_formats_and_exact_record_bytes(data, expected):
    assert read(data) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[", "never closed"),
        (b'[{"a": 1},]', "trailing comma"),
        (b'[{"a": 1} {"b": 2}]', "expected ',' or ']'"),
        (b'[{"a": 1}] []', "after the end of the JSON array"),
        (b'{"a": 1', "unexpected end of file"),
        (b'{"a": "unterminated}', "unexpected end of file"),
        (b'{"a": 1}\n{oops}\n', "invalid JSON in record 2"),
        (b'{"a": NaN}', "invalid JSON in record 1"),
        (b'{"a": 1}\n{"a": Infinity}\n{"a": 3}\n', "invalid JSON in record 2"),
        (b'{"a": 1}\n{"a": 2,}\n{"a": 3}\n', "invalid JSON in record 2"),
        (b'{"a": 1}\n[1, 2,]\n', "invalid JSON in record 2"),
        (b'{"a": 1}\n{"a": 01}\n', "invalid JSON in record 2"),
        (b'{"a": "\x00"}', "invalid JSON"),
        (b'{"a": "\xff"}', "invalid JSON"),
        (b"\x1f\x8b\x08\x00garbage", "not a valid gzip file"),
    ],
)
def test_malformed_files(data, message):
    with pytest.raises(MalformedFile, match=message):
        read(data)


def test_record_boundaries_survive_any_chunk_size():
    rng = random.Random(3)
    records = [
        {"id": i, "s": "".join(rng.choice('ab{}[],"\\ ção😀') for _ in range(rng.randint(0, 40))),
         "nested": {"list": [{"x": [i, {"y": "]}"}]}] * rng.randint(0, 3)}}
        for i in range(60)
    ]  # fmt: skip
    as_array = json.dumps(records, ensure_ascii=False, indent=1).encode()
    as_lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode()
    for data in (as_array, as_lines, gzip.compress(as_array)):
        expected = None
        for chunk in (1, 2, 3, 7, 64, 4096):
            _fmt, raws = read(data, chunk)
            parsed = [json.loads(r) for r in raws]
            assert parsed == records
            expected = expected or raws
            assert raws == expected


def test_record_size_limit_keeps_memory_bounded():
    data = b'[{"blob": "' + b"x" * 5000 + b'"}]'
    with pytest.raises(MalformedFile, match="larger than"):
        list(iter_records(io.BytesIO(data), max_record_bytes=1000, chunk_bytes=256))


def test_shipped_payload_types_are_valid():
    types = load_payload_types()
    assert {"customer_interactions", "inventory_snapshots", "supplier_invoices"} <= set(types)
    assert types["inventory_snapshots"].primary_key == ("snapshot_date", "warehouse_id", "sku")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"name": "Bad-Name", "primary_key": ["id"], "columns": {"id": "bigint"}}, "snake_case"),
        ({"name": "x", "primary_key": ["id"], "columns": {"id": "uuid"}}, "type must be one of"),
        ({"name": "x", "primary_key": ["other"], "columns": {"id": "bigint"}}, "not a declared column"),
        ({"name": "x", "primary_key": [], "columns": {"id": "bigint"}}, "at least one"),
        (
            {"name": "x", "primary_key": ["id"], "columns": {"id": "bigint"}, "unknown_fields": "x"},
            "unknown_fields",
        ),
        (
            {"name": "x", "primary_key": ["id"], "columns": {"id": "bigint"}, "json_schema": {"type": 3}},
            "json_schema",
        ),
        ({"name": "x", "primary_key": ["id"], "columns": {"id": "bigint"}, "colums": {}}, "unknown keys"),
        ({"name": "x", "primary_key": ["id"], "columns": {"_id": "bigint"}}, "snake_case"),
    ],
)
def test_invalid_configuration_is_refused_with_a_clear_message(doc, message):
    with pytest.raises(PayloadTypeError, match=message):
        payload_type_from_dict(doc)


def test_type_conversions_are_strict():
    payload_type = payload_type_from_dict(
        {
            "name": "t",
            "primary_key": ["id"],
            "columns": {
                "id": "bigint",
                "amount": {"type": "decimal", "precision": 6, "scale": 2},
                "flag": "boolean",
                "day": "date",
                "city": {"type": "text", "path": "address.city"},
            },
        }
    )
    processor = payload_type.processor()
    values, drift = processor.process(
        {"id": 1, "amount": 12.5, "flag": False, "day": "2026-06-30", "address": {"City": "Recife"}}
    )
    assert [str(v) for v in values] == ["1", "12.50", "False", "2026-06-30", "Recife"]
    assert drift == ()
    for bad, reason in [
        ({"id": True}, "expected an integer, got boolean"),
        ({"id": 1.5}, "expected an integer"),
        ({"id": 2**64}, "out of the 64-bit range"),
        ({"id": 1, "amount": 1.234}, "more than 2 decimal places"),
        ({"id": 1, "amount": 123456.0}, "does not fit decimal"),
        ({"id": 1, "flag": "yes"}, "expected true or false"),
        ({"id": 1, "day": "30/06/2026"}, "not a YYYY-MM-DD date"),
        ({"id": 1, "address": {"city": 5}}, "expected a string"),
    ]:
        with pytest.raises(InvalidRecord, match=reason):
            processor.process(bad)


def test_name_normalisation():
    assert normalize_name("customerId") == "customer_id"
    assert normalize_name("Código Produto") == "codigo_produto"
    assert normalize_name("Email") == normalize_name("email") == "email"
