"""Payload types are configuration, not code: one YAML file per type in loaders/gcs/payload_types/.

A new type needs a new YAML file and nothing else. The format (see docs/gcs_loader.md):

    name: customer_interactions          # = the folder under pending/ and the bronze table name
    description: ...
    primary_key: [interaction_id]        # merge key in bronze: a newer record supersedes an older one
    required: [interaction_id, channel]  # present and not null, else the record is rejected
    unknown_fields: record               # record (default) | reject | fail -- what schema drift does
    timezone: UTC                        # for timestamps written without an offset
    columns:                             # typed bronze columns, extracted from each record
      interaction_id: text
      resolved: boolean
      supplier_cnpj: {type: text, path: supplier.cnpj}
    json_schema: {...}                   # optional, inline; or json_schema_file: x.schema.json

Column types: text, bigint, double, decimal (precision / scale), boolean, timestamp, date, json (any nested
value, stored as JSON). A value of the wrong JSON type (a string where a number is declared, a number for
a text) rejects the record: nothing is coerced silently.

Field names are matched after name normalisation (accents folded, then dlt's snake_case: `customerId` and
`Customer ID` both find the column `customer_id`). Two keys of one record that normalise to the same
declared field (`Email` and `email`) are ambiguous: the record is rejected. Keys that no column and no JSON
Schema property declare are schema drift: counted per file in the processing log (`details.new_fields`),
and the record still loads (its raw JSON keeps everything), unless the type says `unknown_fields: reject`
(the record is rejected) or `fail` (the whole file goes to failed/).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import yaml

CONFIG_DIR = Path(__file__).with_name("payload_types")
TYPE_NAMES = ("text", "bigint", "double", "decimal", "boolean", "timestamp", "date", "json")
UNKNOWN_FIELD_POLICIES = ("record", "reject", "fail")
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,62}")
_INT64 = (-(2**63), 2**63 - 1)
_KEY_CACHE_LIMIT = 4096


class PayloadTypeError(ValueError):
    """A payload type's configuration is invalid; the message names the file and the problem."""


class InvalidRecord(ValueError):
    """One record does not satisfy its payload type; the message is the reject reason."""


class DriftFailure(ValueError):
    """A record has undeclared fields and the type's contract is `unknown_fields: fail`."""


@lru_cache(maxsize=65536)
def normalize_name(name: str) -> str:
    """Accents folded to ASCII, then dlt's snake_case naming (the same names dlt would give columns)."""
    from dlt.common.normalizers.naming.snake_case import NamingConvention

    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return NamingConvention().normalize_identifier(folded or name)


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    path: tuple[str, ...]
    precision: int = 38
    scale: int = 9
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return {
            "text": pa.string(),
            "bigint": pa.int64(),
            "double": pa.float64(),
            "decimal": pa.decimal128(self.precision, self.scale),
            "boolean": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC"),
            "date": pa.date32(),
            "json": pa.string(),
        }[self.type]

    def dlt_hint(self, nullable: bool) -> dict[str, Any]:
        hint: dict[str, Any] = {"data_type": "bool" if self.type == "boolean" else self.type}
        if self.type == "text":
            hint["data_type"] = "text"
        if self.type == "decimal":
            hint.update(precision=self.precision, scale=self.scale)
        if self.type == "timestamp":
            hint["timezone"] = True
        hint["nullable"] = nullable
        if self.description:
            hint["description"] = self.description
        return hint


@dataclass
class PayloadType:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    required: tuple[str, ...]
    description: str = ""
    unknown_fields: str = "record"
    timezone: str = "UTC"
    json_schema: dict[str, Any] | None = None
    source: str = ""
    _validator: Any = field(default=None, repr=False)

    @property
    def table_name(self) -> str:
        return self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def processor(self) -> RecordProcessor:
        return RecordProcessor(self)


# -- loading -----------------------------------------------------------------------------------


def load_payload_types(config_dir: Path | str | None = None) -> dict[str, PayloadType]:
    """Every `*.yml` / `*.yaml` of the folder, by name. Raises PayloadTypeError on the first bad file."""
    folder = Path(config_dir) if config_dir else CONFIG_DIR
    if not folder.is_dir():
        raise PayloadTypeError(f"payload type folder {folder} does not exist")
    types: dict[str, PayloadType] = {}
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        payload_type = parse_payload_type(path)
        if payload_type.name in types:
            raise PayloadTypeError(f"{path}: payload type {payload_type.name!r} is declared twice")
        types[payload_type.name] = payload_type
    if not types:
        raise PayloadTypeError(f"no payload types (*.yml) in {folder}")
    return types


def parse_payload_type(path: Path) -> PayloadType:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PayloadTypeError(f"{path}: cannot read: {exc}") from None
    return payload_type_from_dict(doc, source=str(path))


def payload_type_from_dict(doc: Mapping[str, Any], *, source: str = "<dict>") -> PayloadType:
    def fail(problem: str) -> PayloadTypeError:
        return PayloadTypeError(f"{source}: {problem}")

    if not isinstance(doc, Mapping):
        raise fail("expected a mapping at the top level")
    allowed = {
        "name", "description", "primary_key", "required", "columns", "json_schema", "json_schema_file",
        "unknown_fields", "timezone",
    }  # fmt: skip
    extra = set(doc) - allowed
    if extra:
        raise fail(f"unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    name = doc.get("name")
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise fail("`name` must be a snake_case identifier (it names the folder and the bronze table)")
    columns = _parse_columns(doc.get("columns"), fail)
    names = [c.name for c in columns]
    primary_key = _name_list(doc.get("primary_key"), "primary_key", fail)
    if not primary_key:
        raise fail("`primary_key` must list at least one column")
    required = _name_list(doc.get("required", []), "required", fail)
    for key in (*primary_key, *required):
        if key not in names:
            raise fail(f"{key!r} (primary_key / required) is not a declared column")
    required = tuple(dict.fromkeys([*primary_key, *required]))  # a key is always required
    policy = doc.get("unknown_fields", "record")
    if policy not in UNKNOWN_FIELD_POLICIES:
        raise fail(f"`unknown_fields` must be one of {UNKNOWN_FIELD_POLICIES}")
    timezone = doc.get("timezone", "UTC")
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise fail(f"unknown timezone {timezone!r}") from None
    schema = doc.get("json_schema")
    if doc.get("json_schema_file"):
        if schema is not None:
            raise fail("give json_schema or json_schema_file, not both")
        schema_path = Path(source).parent / str(doc["json_schema_file"])
        try:
            schema = orjson.loads(schema_path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise fail(f"cannot read json_schema_file {schema_path}: {exc}") from None
    validator = None
    if schema is not None:
        import jsonschema

        try:
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise fail(f"invalid json_schema: {exc.message}") from None
        validator = _FastValidator(cls(schema), schema)
    return PayloadType(
        name=name,
        columns=columns,
        primary_key=primary_key,
        required=required,
        description=str(doc.get("description") or "").strip(),
        unknown_fields=policy,
        timezone=timezone,
        json_schema=schema,
        source=source,
        _validator=validator,
    )


def _parse_columns(raw: Any, fail: Callable[[str], PayloadTypeError]) -> tuple[Column, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise fail("`columns` must map column names to types")
    columns = []
    for name, spec in raw.items():
        if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
            raise fail(f"column {name!r}: names are snake_case identifiers (no leading _)")
        spec = {"type": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping):
            raise fail(f"column {name!r}: expected a type name or a mapping")
        kind = spec.get("type")
        if kind not in TYPE_NAMES:
            raise fail(f"column {name!r}: type must be one of {', '.join(TYPE_NAMES)}")
        extra = set(spec) - {"type", "path", "precision", "scale", "description"}
        if extra:
            raise fail(f"column {name!r}: unknown keys {sorted(extra)}")
        path = tuple(normalize_name(part) for part in str(spec.get("path", name)).split("."))
        precision, scale = int(spec.get("precision", 38)), int(spec.get("scale", 9))
        if kind == "decimal" and not (1 <= precision <= 38 and 0 <= scale <= precision):
            raise fail(f"column {name!r}: decimal needs 1 <= precision <= 38 and 0 <= scale <= precision")
        columns.append(Column(name, kind, path, precision, scale, str(spec.get("description") or "")))
    return tuple(columns)


def _name_list(raw: Any, what: str, fail: Callable[[str], PayloadTypeError]) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, Sequence) or not all(isinstance(x, str) for x in raw):
        raise fail(f"`{what}` must be a list of column names")
    return tuple(raw)


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyPlan:
    """What a record with exactly these top-level keys means: computed once per distinct key set."""

    by_name: dict[str, str]  # normalised name -> original key
    ambiguous: str | None  # reject reason, if declared fields collide
    drift: tuple[str, ...]  # undeclared top-level fields (normalised), collisions among them included


class RecordProcessor:
    """Validates one parsed record and extracts its typed column values. Not thread-safe (caches)."""

    def __init__(self, payload_type: PayloadType) -> None:
        self.type = payload_type
        self.tz = zoneinfo.ZoneInfo(payload_type.timezone)
        self.validator = payload_type._validator
        schema_props = (payload_type.json_schema or {}).get("properties") or {}
        self.known = {c.path[0] for c in payload_type.columns} | {normalize_name(k) for k in schema_props}
        self.nested_schemas = {  # only containers can hide undeclared nested fields
            normalize_name(k): v
            for k, v in schema_props.items()
            if isinstance(v, Mapping) and ("properties" in v or "items" in v)
        }
        self.required = payload_type.required
        self._plans: dict[tuple[str, ...], _KeyPlan] = {}
        self._extract = [(c, _CONVERTERS[c.type]) for c in payload_type.columns]

    def _plan(self, keys: tuple[str, ...]) -> _KeyPlan:
        plan = self._plans.get(keys)
        if plan is not None:
            return plan
        by_name: dict[str, str] = {}
        collisions: dict[str, list[str]] = {}
        for key in keys:
            name = normalize_name(key)
            if name in by_name:
                collisions.setdefault(name, [by_name[name]]).append(key)
                if key == name:  # the exactly-named key is the one columns read
                    by_name[name] = key
            else:
                by_name[name] = key
        ambiguous = None
        drift = [n for n in by_name if n not in self.known and n not in collisions]
        for name, originals in collisions.items():
            listed = " and ".join(repr(k) for k in originals)
            if name in self.known:
                ambiguous = f"keys {listed} collide after name normalisation (both mean {name!r})"
                break
            drift.append(f"{name} (colliding keys {listed})")
        plan = _KeyPlan(by_name, ambiguous, tuple(drift))
        if len(self._plans) < _KEY_CACHE_LIMIT:
            self._plans[keys] = plan
        return plan

    def process(self, record: Any) -> tuple[list[Any], tuple[str, ...]]:
        """(column values in column order, drift paths). Raises InvalidRecord / DriftFailure."""
        if not isinstance(record, dict):
            raise InvalidRecord(f"a record must be a JSON object, got {_json_type(record)}")
        plan = self._plan(tuple(record))
        if plan.ambiguous:
            raise InvalidRecord(plan.ambiguous)
        named = {name: record[key] for name, key in plan.by_name.items()}
        values = []
        for column, convert in self._extract:
            value = named.get(column.path[0])
            if len(column.path) > 1:
                value = _descend(value, column.path[1:])
            if value is None:
                if column.name in self.required:
                    where = ".".join(column.path)
                    if len(column.path) == 1 and where not in named:
                        raise InvalidRecord(f"missing required field {where!r}")
                    raise InvalidRecord(f"required field {where!r} is missing or null")
                values.append(None)
                continue
            try:
                values.append(convert(value, column, self.tz))
            except InvalidRecord as exc:
                raise InvalidRecord(f"field {'.'.join(column.path)!r}: {exc}") from None
        if self.validator is not None:
            error = _first_error(self.validator, named)
            if error:
                raise InvalidRecord(error)
        drift = plan.drift
        if self.nested_schemas:
            nested: list[str] = []
            for name, schema in self.nested_schemas.items():
                if name in named:
                    _nested_drift(named[name], schema, name, nested)
            if nested:
                drift = (*drift, *nested)
        if drift:
            if self.type.unknown_fields == "reject":
                raise InvalidRecord(f"undeclared fields: {', '.join(drift)}")
            if self.type.unknown_fields == "fail":
                raise DriftFailure(f"undeclared fields {', '.join(drift)} (unknown_fields: fail)")
        return values, drift


def _descend(value: Any, path: Iterable[str]) -> Any:
    for part in path:
        if not isinstance(value, dict):
            return None
        if part in value:
            value = value[part]
            continue
        matches = [k for k in value if normalize_name(k) == part]
        value = value[matches[0]] if len(matches) == 1 else None
    return value


def _nested_drift(value: Any, schema: Mapping[str, Any], path: str, out: list[str]) -> None:
    if isinstance(value, dict) and isinstance(schema.get("properties"), Mapping):
        props = schema["properties"]
        known = {normalize_name(k) for k in props}
        by_norm = {normalize_name(k): v for k, v in props.items()}
        for key, item in value.items():
            name = normalize_name(key)
            if name not in known:
                if f"{path}.{name}" not in out:
                    out.append(f"{path}.{name}")
            elif isinstance(by_norm[name], Mapping):
                _nested_drift(item, by_norm[name], f"{path}.{name}", out)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            _nested_drift(item, schema["items"], f"{path}[]", out)


class _FastValidator:
    """fastjsonschema (compiled to Python: ~20x faster than jsonschema) decides; jsonschema explains.

    Validation runs for every record, so it must be cheap; the readable reason is only computed for the
    few records that fail. Schemas fastjsonschema cannot compile are validated by jsonschema alone.
    """

    def __init__(self, explainer: Any, schema: Mapping[str, Any]) -> None:
        import fastjsonschema

        self.explainer = explainer
        try:
            self._fast = fastjsonschema.compile(dict(schema), use_default=False)
        except Exception:  # a keyword or draft fastjsonschema does not know: slow but correct
            self._fast = None
        self._errors = fastjsonschema.JsonSchemaException

    def is_valid(self, instance: Any) -> bool:
        if self._fast is None:
            return bool(self.explainer.is_valid(instance))
        try:
            self._fast(instance)
        except self._errors:
            return False
        return True

    def iter_errors(self, instance: Any) -> Any:
        return self.explainer.iter_errors(instance)


def _first_error(validator: Any, instance: Any) -> str | None:
    if validator.is_valid(instance):
        return None
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(instance))
    if error is None:  # the two validators disagree: trust the one that explains
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(record)"
    if error.validator in ("anyOf", "oneOf") and isinstance(error.validator_value, list):
        options = [
            " and ".join(alt["required"]) if isinstance(alt, Mapping) and alt.get("required") else "?"
            for alt in error.validator_value
        ]
        message = f"needs one of: {' | '.join(options)}"
    elif error.validator in ("required", "enum", "type", "pattern", "minimum", "maximum", "minLength"):
        message = error.message
    else:
        message = f"fails '{error.validator}' ({str(error.validator_value)[:80]})"
    return f"JSON Schema: {message[:300]} at {where}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _expected(kind: str, value: Any) -> InvalidRecord:
    shown = repr(value) if not isinstance(value, (dict, list)) else _json_type(value)
    return InvalidRecord(f"expected {kind}, got {_json_type(value)} {shown[:60]}")


def _text(value: Any, column: Column, tz: Any) -> str:
    if not isinstance(value, str):
        raise _expected("a string", value)
    if "\x00" in value:
        raise InvalidRecord("contains a NUL character (\\u0000), which the warehouse cannot store")
    return value


def _bigint(value: Any, column: Column, tz: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _expected("an integer", value)
    if not _INT64[0] <= value <= _INT64[1]:
        raise InvalidRecord(f"integer {value} is out of the 64-bit range")
    return value


def _double(value: Any, column: Column, tz: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("a number", value)
    result = float(value)
    if not math.isfinite(result):
        raise InvalidRecord(f"number {value!r} is not finite")
    return result


def _decimal(value: Any, column: Column, tz: Any) -> decimal.Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expected("a number", value)
    number = decimal.Decimal(str(value))
    if not number.is_finite():
        raise InvalidRecord(f"number {value!r} is not finite")
    quantum = decimal.Decimal(1).scaleb(-column.scale)
    rounded = number.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN)
    if rounded != number:
        raise InvalidRecord(f"{value} has more than {column.scale} decimal places")
    if len(rounded.as_tuple().digits) > column.precision:
        raise InvalidRecord(f"{value} does not fit decimal({column.precision}, {column.scale})")
    return rounded


def _boolean(value: Any, column: Column, tz: Any) -> bool:
    if not isinstance(value, bool):
        raise _expected("true or false", value)
    return value


def _timestamp(value: Any, column: Column, tz: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise _expected("an ISO-8601 timestamp string", value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"{value[:60]!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(dt.UTC)


def _date(value: Any, column: Column, tz: Any) -> dt.date:
    if not isinstance(value, str):
        raise _expected("a YYYY-MM-DD date string", value)
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"{value[:60]!r} is not a YYYY-MM-DD date") from None


def _json(value: Any, column: Column, tz: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits (parsed by the fallback parser)
        import json

        text = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in text:
        raise InvalidRecord("contains a NUL character (\\u0000), which the warehouse cannot store")
    return text


_CONVERTERS: dict[str, Callable[[Any, Column, Any], Any]] = {
    "text": _text,
    "bigint": _bigint,
    "double": _double,
    "decimal": _decimal,
    "boolean": _boolean,
    "timestamp": _timestamp,
    "date": _date,
    "json": _json,
}
