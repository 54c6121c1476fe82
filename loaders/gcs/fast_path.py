"""Bulk acceptance of payload records: one DuckDB query per chunk instead of Python per record.

Why: validating and converting record by record in Python (RecordProcessor.process) costs tens of
microseconds per record, which capped the GCS loader at a few percent of the engines' own bulk path. Most
records of a file are alike and valid, so a chunk of them is checked at once, vectorised, by DuckDB's JSON
functions, and only the records it cannot prove valid go through the per-record path.

The rule that keeps the two paths equal: **the fast path only ever accepts; it never rejects.** A record
is accepted in bulk only when every check the per-record path would make provably passes (the same
declared types, required fields, the same JSON Schema keywords with the same semantics, no ambiguous or
duplicate keys, no schema drift the type treats as an error). Anything else, including every case where
the two engines might disagree (integers beyond 64 bits, numbers in text columns, keys that need name
normalisation, regular expressions outside a conservative subset), falls back to the per-record path,
which decides and writes the reject reason. tests/python/test_gcs_fast_path.py runs both paths over
the same records, valid and invalid, and requires identical rows.

Payload types whose configuration uses anything outside the subset (JSON Schema keywords such as
`format` or `additionalProperties`, nested schemas that can hide undeclared fields) are not eligible at
all: their records go record by record, as before; `bulk_validator()` says why, and the processing log
records it per file (`details.validation`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loaders.gcs.payload_types import (
    _CONVERTERS,
    Column,
    InvalidRecord,
    PayloadType,
    RecordProcessor,
)

# DuckDB's json_type() names for each JSON Schema type (integers written with a fraction or an exponent,
# which JSON Schema may still call integers, are left to the per-record path).
_SCHEMA_TYPES = {
    "string": ("VARCHAR",),
    "integer": ("BIGINT", "UBIGINT"),
    "number": ("BIGINT", "UBIGINT", "DOUBLE"),
    "boolean": ("BOOLEAN",),
    "null": ("NULL",),
    "array": ("ARRAY",),
    "object": ("OBJECT",),
}
_NUMERIC = ("BIGINT", "UBIGINT", "DOUBLE")
_IGNORED_KEYWORDS = frozenset({"description", "title", "$comment", "$schema", "$id", "examples"})
_PROPERTY_KEYWORDS = frozenset(
    {"type", "enum", "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
     "exclusiveMaximum", "items"}
)  # fmt: skip
_ROOT_KEYWORDS = frozenset({"type", "properties", "required", "anyOf", "oneOf"})
# Regular expressions both engines read the same way: RE2 (DuckDB) accepts a subset of what Python's re
# (fastjsonschema) accepts for these constructs, so a match in DuckDB is a match in Python.
_SAFE_PATTERN = re.compile(r"(?:[A-Za-z0-9 _\-:/@#,.*+?^$|(){}\[\]]|\\[dsw.\-+*?()\[\]{}/|^$])*")
_FLOAT_EXACT = 2**52  # bounds and values beyond this are compared record by record


@dataclass
class ChunkResult:
    """What the fast path made of one chunk of raw records."""

    accepted: pa.Table  # typed columns in column order + _raw_json + _record_number, accepted rows only
    rest: list[int]  # positions (in the chunk) of the records left to the per-record path
    drift: Counter[str]  # undeclared fields of the accepted records, as the per-record path counts them


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_path(path: Sequence[str]) -> str:
    return _sql_string("$" + "".join(f'."{part}"' for part in path))


class _Ineligible(Exception):
    pass


def _numeric_bound(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) >= _FLOAT_EXACT:
        raise _Ineligible(f"numeric bound {value!r} outside the exactly comparable range")
    return float(value)


def _property_predicate(t: str, s: str, schema: Any) -> str:
    """SQL that is true when the property (json_type t, text s) satisfies its sub-schema, or is absent."""
    if not isinstance(schema, Mapping):
        raise _Ineligible("a property schema that is not an object")
    unknown = set(schema) - _PROPERTY_KEYWORDS - _IGNORED_KEYWORDS
    if unknown:
        raise _Ineligible(f"JSON Schema keyword(s) {sorted(unknown)}")
    checks: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if any(name not in _SCHEMA_TYPES for name in names):
            raise _Ineligible(f"type {kinds!r}")
        allowed = sorted({t_name for name in names for t_name in _SCHEMA_TYPES[name]})
        checks.append(f"{t} in ({', '.join(map(_sql_string, allowed))})")
    if "enum" in schema:
        values = schema["enum"]
        strings = [v for v in values if isinstance(v, str)]
        if len(strings) + values.count(None) != len(values):
            raise _Ineligible("enum with values other than strings and null")
        options = (
            [f"({t} = 'VARCHAR' and {s} in ({', '.join(map(_sql_string, strings))}))"] if strings else []
        )
        if None in values:
            options.append(f"{t} = 'NULL'")
        checks.append("(" + " or ".join(options or ["false"]) + ")")
    if "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str) or not _SAFE_PATTERN.fullmatch(pattern):
            raise _Ineligible(f"pattern {pattern!r} outside the subset both regex engines agree on")
        checks.append(f"({t} <> 'VARCHAR' or regexp_matches({s}, {_sql_string(pattern)}))")
    for keyword, op in (("minLength", ">="), ("maxLength", "<=")):
        if keyword in schema:
            checks.append(f"({t} <> 'VARCHAR' or length({s}) {op} {int(schema[keyword])})")
    for keyword, op in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("exclusiveMinimum", ">"),
        ("exclusiveMaximum", "<"),
    ):
        if keyword in schema:
            bound = _numeric_bound(schema[keyword])
            checks.append(
                f"({t} not in ('BIGINT', 'UBIGINT', 'DOUBLE') or "
                f"(abs(try_cast({s} as double)) < {_FLOAT_EXACT} and try_cast({s} as double) {op} {bound!r}))"
            )
    if "items" in schema:
        items = schema["items"]
        if not isinstance(items, Mapping) or set(items) - {"type"} - _IGNORED_KEYWORDS:
            raise _Ineligible("array items with keywords other than type")
        item_types = items.get("type")
        names = [item_types] if isinstance(item_types, str) else list(item_types or [])
        if not names or any(name not in _SCHEMA_TYPES for name in names):
            raise _Ineligible(f"array items of type {item_types!r}")
        allowed = ", ".join(_sql_string(x) for name in names for x in _SCHEMA_TYPES[name])
        checks.append(f"({t} <> 'ARRAY' or len(list_filter({{items}}, lambda x: x not in ({allowed}))) = 0)")
    if not checks:
        return "true"
    return f"({t} is null or ({' and '.join(checks)}))"


def _required_predicate(required: Any, present: Mapping[str, str]) -> str:
    if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
        raise _Ineligible("required must list property names")
    if not required:
        return "true"
    for key in required:
        if key not in present:
            raise _Ineligible(f"required property {key!r} is not a declared property")
    return "(" + " and ".join(f"{present[k]} is not null" for k in required) + ")"


class ChunkValidator:
    """Compiled once per payload type; `accept()` runs one query per chunk. Not thread-safe."""

    def __init__(self, payload_type: PayloadType, processor: RecordProcessor) -> None:
        self.type = payload_type
        self.processor = processor
        self.columns = payload_type.columns
        self._eligible_keys: dict[str, tuple[bool, tuple[str, ...]]] = {}
        self.sql = self._compile()

    # compilation ----------------------------------------------------------------------------------

    def _compile(self) -> str:
        if self.processor.nested_schemas and any(
            _can_hide_fields(schema) for schema in self.processor.nested_schemas.values()
        ):
            raise _Ineligible("nested schemas that can hold undeclared fields")
        schema = self.type.json_schema or {}
        unknown = set(schema) - _ROOT_KEYWORDS - _IGNORED_KEYWORDS
        if unknown:
            raise _Ineligible(f"JSON Schema keyword(s) {sorted(unknown)} at the root")
        if schema.get("type", "object") != "object":
            raise _Ineligible("root schema that is not type object")
        properties = schema.get("properties") or {}
        # every path the query needs: one per column, one per top-level schema property
        paths: list[tuple[str, ...]] = []
        for column in self.columns:
            if column.path not in paths:
                paths.append(column.path)
        for name in properties:
            if (name,) not in paths:
                paths.append((name,))
        slot = {path: k + 1 for k, path in enumerate(paths)}
        t = {path: f"t{slot[path]}" for path in paths}
        s = {path: f"s{slot[path]}" for path in paths}
        typed = ", ".join(f"tl[{k}] as t{k}, sl[{k}] as s{k}" for k in slot.values())
        array_items = {
            name: f"json_type(raw, {_json_path((name,))[:-1]}[*]')"
            for name, sub in properties.items()
            if isinstance(sub, Mapping) and "items" in sub
        }
        # every record was already parsed by the strict reader, so validity is not checked again
        checks = ["root_type = 'OBJECT'"]
        values = []
        for column in self.columns:
            col_t, col_s = t[column.path], s[column.path]
            missing = f"({col_t} is null or {col_t} = 'NULL')"
            if column.name in self.processor.required:
                checks.append(f"not {missing}")
            if len(column.path) > 1:  # a nested key found only after name normalisation: per record
                checks.append(f"{col_t} is not null")
            valid, value = self._column_sql(column, col_t, col_s)
            checks.append(f"({missing} or ({valid}))")
            values.append(f"case when {missing} then null else {value} end as c_{column.name}")
        for name, sub in properties.items():
            predicate = _property_predicate(t[(name,)], s[(name,)], sub)
            if name in array_items:
                predicate = predicate.replace("{items}", f"items_{_identifier(name)}")
            checks.append(predicate)
        present = {name: t[(name,)] for name in properties}
        if "required" in schema:
            checks.append(_required_predicate(schema["required"], present))
        for keyword in ("anyOf", "oneOf"):
            if keyword not in schema:
                continue
            branches = schema[keyword]
            if not isinstance(branches, list) or not all(
                isinstance(b, Mapping) and set(b) == {"required"} for b in branches
            ):
                raise _Ineligible(f"{keyword} other than a list of required-only branches")
            predicates = [_required_predicate(b["required"], present) for b in branches]
            if keyword == "anyOf":
                checks.append("(" + " or ".join(predicates) + ")")
            else:
                checks.append("((" + ") + (".join(f"cast({p} as integer)" for p in predicates) + ")) = 1")
        paths_sql = "[" + ", ".join(_json_path(path) for path in paths) + "]"
        items_sql = "".join(f", {expr} as items_{_identifier(name)}" for name, expr in array_items.items())
        return (
            "with parsed as (\n"
            "    select i, json_type(raw) as root_type, to_json(json_keys(raw)) as keys,\n"
            f"        json_type(raw, {paths_sql}) as tl, json_extract_string(raw, {paths_sql}) as sl{items_sql}\n"
            "    from chunk\n"
            "),\n"
            f"typed as (select *, {typed} from parsed)\n"
            f"select i, keys, coalesce({' and '.join(checks)}, false) as ok, {', '.join(values)}\n"
            "from typed order by i"
        )

    @staticmethod
    def _column_sql(column: Column, t: str, s: str) -> tuple[str, str]:
        """(SQL true when the present, non-null value converts exactly as the per-record path would,
        SQL of the value; for types converted in Python afterwards, the JSON text)."""
        if column.type == "text":
            return f"{t} = 'VARCHAR' and not contains({s}, chr(0))", s
        if column.type == "bigint":
            return f"{t} in ('BIGINT', 'UBIGINT') and try_cast({s} as bigint) is not null", (
                f"try_cast({s} as bigint)"
            )
        if column.type == "double":
            # integer literals beyond 64 bits are DOUBLE to DuckDB but exact ints to Python: per record
            return (
                f"({t} in ('BIGINT', 'UBIGINT') or ({t} = 'DOUBLE' and regexp_matches({s}, '[.eE]')))"
                f" and isfinite(try_cast({s} as double))"
            ), f"try_cast({s} as double)"
        if column.type == "boolean":
            return f"{t} = 'BOOLEAN'", f"{s} = 'true'"
        if column.type in ("timestamp", "date"):
            return f"{t} = 'VARCHAR'", s
        if column.type == "decimal":
            return f"{t} in {_NUMERIC}", s
        return "true", s  # json: the sub-value is re-read from the record in Python

    # running --------------------------------------------------------------------------------------

    def _key_set(self, keys_json: str) -> tuple[bool, tuple[str, ...]]:
        """(eligible, drift) for one distinct list of top-level keys."""
        known = self._eligible_keys.get(keys_json)
        if known is not None:
            return known
        keys = tuple(orjson.loads(keys_json))
        plan = self.processor._plan(keys)
        eligible = (
            len(set(keys)) == len(keys)  # duplicate keys: DuckDB reads the first, Python the last
            and plan.ambiguous is None
            and all(name == key for name, key in plan.by_name.items())
            and (not plan.drift or self.type.unknown_fields == "record")
        )
        result = (eligible, plan.drift)
        self._eligible_keys[keys_json] = result
        return result

    def accept(self, raws: Sequence[bytes], numbers: Sequence[int]) -> ChunkResult:
        """Accept what can be accepted in bulk; the positions of the rest are returned for the slow path."""
        raw_array = pa.array(raws, pa.binary()).view(pa.string())  # UTF-8 already checked by the parser
        whole = pa.table({"i": pa.array(range(len(raws)), pa.int64()), "raw": raw_array})
        chunk = pa.Table.from_batches(whole.to_batches(max_chunksize=4096))  # batches: scanned in parallel
        con = _connection().cursor()
        con.register("chunk", chunk)
        try:
            result = con.sql(self.sql).to_arrow_table()
        except Exception:  # anything DuckDB cannot evaluate is decided record by record
            return ChunkResult(pa.table([]), list(range(len(raws))), Counter())
        finally:
            con.close()
        keys = result.column("keys").combine_chunks().dictionary_encode()
        verdicts = [self._key_set(k) for k in keys.dictionary.to_pylist()]
        eligible = pc.take(pa.array([v[0] for v in verdicts], pa.bool_()), keys.indices)
        mask = pc.and_(result.column("ok"), eligible).combine_chunks()
        accepted = result.filter(mask)
        positions = accepted.column("i").to_numpy()
        columns, failed = self._typed_columns(accepted, raws, positions)
        if failed:
            keep = pa.array([k not in failed for k in range(accepted.num_rows)], pa.bool_())
            columns = [c.filter(keep) for c in columns]
            positions = positions[keep.to_numpy(zero_copy_only=False)]
            accepted_keys = pc.take(keys.indices, pa.array(positions))
        else:
            accepted_keys = pc.filter(keys.indices, mask)
        drift: Counter[str] = Counter()
        if any(v[1] for v in verdicts):
            for index, count in zip(*_counts(accepted_keys), strict=True):
                for name in verdicts[index][1]:
                    drift[name] += count
        is_accepted = np.zeros(len(raws), dtype=bool)
        is_accepted[positions] = True
        rest = np.nonzero(~is_accepted)[0].tolist()
        take = pa.array(positions, pa.int64())
        columns.append(pc.take(raw_array, take))
        columns.append(pc.take(pa.array(numbers, pa.int64()), take))
        names = [c.name for c in self.columns] + ["_raw_json", "_record_number"]
        return ChunkResult(pa.table(columns, names=names), rest, drift)

    def _typed_columns(
        self, accepted: pa.Table, raws: Sequence[bytes], positions: Any
    ) -> tuple[list[pa.Array], set[int]]:
        """Arrow columns in the bronze types; values the query cannot convert exactly (timestamps with
        their zone rules, dates, decimals, JSON) are converted here by the per-record path's own
        converters, so the two paths cannot differ. Rows whose conversion fails are returned."""
        failed: set[int] = set()
        columns: list[pa.Array] = []
        records: dict[int, Any] = {}  # parsed once per record, whatever its number of JSON columns
        for column in self.columns:
            values = accepted.column(f"c_{column.name}")
            if column.type in ("text", "bigint", "double", "boolean"):
                columns.append(values.cast(column.arrow_type).combine_chunks())
                continue
            convert = _CONVERTERS[column.type]
            if column.type in ("timestamp", "date"):
                vectorised, done = _vector_time(values, column.type, self.processor.tz)
            else:
                vectorised, done = None, [False] * accepted.num_rows
            texts = values.to_pylist()
            todo = [row for row, text in enumerate(texts) if text is not None and not done[row]]
            if vectorised is not None and not todo:
                columns.append(vectorised if values.null_count == 0 else pc.if_else(done, vectorised, None))
                continue
            out: list[Any] = vectorised.to_pylist() if vectorised is not None else [None] * len(texts)
            for row in range(len(texts)):
                if not done[row]:
                    out[row] = None
            for row in todo:
                try:
                    value = self._python_value(column, texts[row], raws, positions[row], records)
                    out[row] = convert(value, column, self.processor.tz)
                except (InvalidRecord, ValueError):
                    failed.add(row)
            columns.append(pa.array(out, column.arrow_type))
        return columns, failed

    @staticmethod
    def _python_value(
        column: Column, text: str, raws: Sequence[bytes], position: int, records: dict[int, Any]
    ) -> Any:
        if column.type in ("timestamp", "date"):
            return text
        if column.type == "decimal":  # the number as the per-record path's parser reads it
            return int(text) if not any(c in text for c in ".eE") else float(text)
        if position not in records:  # json: the sub-value exactly as the record's parse gives it
            records[position] = orjson.loads(raws[position])
        value = records[position]
        for part in column.path:
            value = value[part]
        return value


def bulk_validator(
    payload_type: PayloadType, processor: RecordProcessor
) -> tuple[ChunkValidator | None, str]:
    """(the validator, "bulk") or (None, why the type is validated record by record)."""
    try:
        return ChunkValidator(payload_type, processor), "bulk"
    except _Ineligible as exc:
        return None, f"record by record: {exc}"


_ISO_SECONDS = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_HOUR_US = 3_600 * 1_000_000


def _vector_time(values: pa.ChunkedArray, kind: str, tz: Any) -> tuple[pa.Array | None, list[bool]]:
    """The common spellings converted in bulk: `YYYY-MM-DD` dates, `YYYY-MM-DDTHH:MM:SS` local times and
    the same with `Z`. Returns (converted values, which rows it converted); every other spelling (and any
    hour in which the zone's offset changes) is left to the per-record converter, so the result is what
    date.fromisoformat / datetime.fromisoformat + zoneinfo give."""
    strings = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if kind == "date":
        simple = pc.match_substring_regex(strings, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
        converted = _strict_parse(pc.if_else(simple, strings, None), "%Y-%m-%d").cast(pa.date32())
        return converted, converted.is_valid().fill_null(False).to_pylist()
    local = pc.match_substring_regex(strings, _ISO_SECONDS + "$")
    utc = pc.match_substring_regex(strings, _ISO_SECONDS + "Z$")
    text = pc.if_else(utc, pc.utf8_slice_codeunits(strings, 0, 19), pc.if_else(local, strings, None))
    parsed = _strict_parse(text, "%Y-%m-%dT%H:%M:%S").cast(pa.timestamp("us"))
    done = parsed.is_valid().to_numpy(zero_copy_only=False).copy()
    micros = parsed.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False).copy()
    is_local = pc.and_(local, parsed.is_valid()).fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    if is_local.any():
        hours, inverse = np.unique(micros[is_local] // _HOUR_US, return_inverse=True)
        offsets = [_steady_offset_us(int(hour), tz) for hour in hours]
        steady = np.array([offset is not None for offset in offsets])
        shift = np.array([offset or 0 for offset in offsets], dtype="int64")
        rows = np.nonzero(is_local)[0]
        micros[rows] -= shift[inverse]
        done[rows] &= steady[inverse]
    result = pa.array(np.where(done, micros, 0), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return result, done.tolist()


def _strict_parse(text: pa.Array, fmt: str) -> pa.Array:
    """Timestamps (seconds) of ISO strings already matched by a strict pattern; null where the date or
    time does not exist. Arrow's cast is strict and fast but fails the whole array on one impossible
    value; strptime then decides per value, but rolls 2026-02-30 over to March 2 (Python rejects it),
    so its day must be the day written."""
    try:
        return text.cast(pa.timestamp("s"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        parsed = pc.strptime(text, fmt, "s", error_is_null=True)
        same_day = pc.equal(pc.day(parsed), pc.utf8_slice_codeunits(text, 8, 10).cast(pa.int64()))
        return pc.if_else(same_day.fill_null(False), parsed, None)


def _steady_offset_us(hour: int, tz: Any) -> int | None:
    """The zone's UTC offset (fold=0, as the per-record path uses) for a whole local hour, in
    microseconds; None if it changes within the hour."""
    import datetime as dt

    start = dt.datetime(1970, 1, 1) + dt.timedelta(hours=hour)
    end = start + dt.timedelta(minutes=59, seconds=59, microseconds=999_999)
    first, last = start.replace(tzinfo=tz).utcoffset(), end.replace(tzinfo=tz).utcoffset()
    if first is None or first != last:
        return None
    return int(first.total_seconds() * 1_000_000)


_CONNECTION: Any = None


def _connection() -> Any:
    """One in-memory DuckDB per process (a connection costs more than a small file's query)."""
    global _CONNECTION
    if _CONNECTION is None:
        import duckdb

        _CONNECTION = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
    return _CONNECTION


def _identifier(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name)


def _counts(indices: pa.Array) -> tuple[list[int], list[int]]:
    counted = pc.value_counts(indices)
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist()


def _can_hide_fields(schema: Any) -> bool:
    """True if a nested schema declares properties somewhere (the per-record path then reports nested
    undeclared fields as drift, which the fast path does not look for)."""
    if not isinstance(schema, Mapping):
        return False
    if "properties" in schema:
        return True
    return _can_hide_fields(schema.get("items"))
