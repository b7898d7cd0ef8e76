"""Typed configuration: one JSON file, command-line overrides, strict validation.

A service describes its configuration as frozen dataclasses with snake_case fields; the JSON
keys are the same names in camelCase (`listen_address` <-> `listenAddress`), mirroring the
NixOS options. `load()` reads the file, applies the overrides, and converts the result,
raising one `ConfigError` that names the file, the field path and what was expected.

Supported field types: str, int, float, bool, Path, `Secret`, Literal, Enum, nested
dataclasses, `list[T]`, `dict[str, T]`, `T | None`, `typing.Any` (kept as parsed), and
`Annotated[T, check, ...]` where each check is a callable returning a problem or None.
A dataclass may raise `FieldProblem` from `__post_init__` to reject a combination of fields.

Whatever the schema, hostile input is refused the same way (one `ConfigError`, exit 78):
a config file that is not a regular file or is larger than 4 MiB, NaN and Infinity, a
number beyond +/-2^53 (floats beyond 1e15), a NUL byte in any string or key, and nesting
deeper than 32 levels.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import ipaddress
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

from hydra_fleet.core.errors import ConfigError
from hydra_fleet.core.files import FileProblem, read_small_file
from hydra_fleet.core.secrets import read_secret

T = TypeVar("T")

Check = Callable[[Any], str | None]


@dataclasses.dataclass(frozen=True)
class Secret:
    """The contents of a secret file (a `…File` key), read at start and never shown."""

    path: Path
    value: str = dataclasses.field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Secret(path={str(self.path)!r}, value=<redacted>)"

    def __str__(self) -> str:
        return f"<secret from {self.path}>"


class FieldProblem(ValueError):  # noqa: N818 - reads as "raise FieldProblem(key, problem)"
    """Raised from a config dataclass's `__post_init__` to reject one field's value."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def camel(name: str) -> str:
    """`listen_address` -> `listenAddress`."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def key_of(field: dataclasses.Field[Any]) -> str:
    """The JSON key of a dataclass field: `metadata["key"]`, or its name in camelCase."""
    return str(field.metadata.get("key", camel(field.name)))


# Checks for Annotated fields -------------------------------------------------------------


def in_range(low: float | None = None, high: float | None = None) -> Check:
    def check(value: Any) -> str | None:
        if (low is not None and value < low) or (high is not None and value > high):
            lo = "" if low is None else f"from {low:g} "
            hi = "" if high is None else f"to {high:g}"
            return f"expected a value {lo}{hi}".rstrip() + f", got {value!r}"
        return None

    return check


def non_empty(value: Any) -> str | None:
    return None if len(value) else "expected a non-empty value"


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host_problem(value: str) -> str | None:  # noqa: PLR0911 - one return per reason
    """Why `value` is neither an IP address nor a valid host name (IDNA), or None."""
    if not value:
        return "expected a host name or IP address, got an empty string"
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return None
    shown = _kind(value)
    if ":" in text or text.startswith("["):
        return f"expected a host name or IP address, got {shown} (not a valid IPv6 address)"
    name = text.removesuffix(".")
    for label in name.split("."):
        if not label or len(label) > 63:
            why = "an empty label" if not label else "a label longer than 63 characters"
            return f"expected a host name or IP address, got {shown} ({why})"
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return f"expected a host name or IP address, got {shown} (not a valid IDNA name)"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"expected a host name or IP address, got {shown}"
    if labels[-1].isdigit():
        return f"expected a host name or IP address, got {shown} (not a valid IPv4 address)"
    return None


def url_problem(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why `value` is not a `scheme://host[:port]/...` URL with a valid host, or None."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    shown = _kind(value)
    expected = "URL (" + " or ".join(f"{scheme}://" for scheme in schemes) + ")"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        return f"expected a {expected}, got {shown} ({err})"
    del port
    if parts.scheme not in schemes or not parts.hostname:
        return f"expected a {expected} with a host, got {shown}"
    problem = host_problem(parts.hostname)
    return None if problem is None else f"{problem} in the URL {shown}"


def http_url(value: Any) -> str | None:
    """Annotated check: an http:// or https:// URL whose host is valid."""
    return url_problem(value)


def hostname(value: Any) -> str | None:
    """Annotated check: an IP address or a host name that resolves can be asked for."""
    return host_problem(value)


Port = typing.Annotated[int, in_range(1, 65535)]
Host = typing.Annotated[str, hostname]
HttpUrl = typing.Annotated[str, http_url]

# Bounds that hold for every field, whatever the schema says.
MAX_CONFIG_BYTES = 4 << 20
MAX_DEPTH = 32
MAX_INT = 2**53
MAX_FLOAT = 1e15


# Loading ---------------------------------------------------------------------------------


def load(
    schema: type[T],
    file: Path | None,
    overrides: Mapping[str, object] | None = None,
    *,
    read_secrets: bool = True,
) -> T:
    """Read `file` (or start from `{}` when None), apply `overrides`, convert to `schema`.

    `overrides` maps dotted camelCase key paths (`"listenAddress"`, `"gate.timeout"`) to
    values from the command line; None values are skipped (flag not given). Without
    `read_secrets` (a build-time check, where no secret exists yet) a `Secret` keeps its
    path and an empty value.
    """
    source = str(file) if file is not None else "(no config file)"
    data = read_json(file) if file is not None else {}
    given = {path: value for path, value in (overrides or {}).items() if value is not None}
    for dotted, value in given.items():
        _set_path(data, dotted.split("."), value)
    result: T = _Converter(source, set(given), read_secrets=read_secrets).convert(schema, data, "")
    return result


class _JsonRefusedError(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _JsonRefusedError(f"{name} is not a number a config may hold")


def _bounded_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > 16 or int(text) > MAX_INT or int(text) < -MAX_INT:
        shown = text if len(text) <= 20 else f"{text[:12]}... ({len(digits)} digits)"
        raise _JsonRefusedError(f"the integer {shown} is beyond +/-2^53")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_FLOAT:
        shown = text if len(text) <= 24 else text[:20] + "..."
        raise _JsonRefusedError(f"the number {shown} is beyond +/-1e15")
    return value


def parse_json_text(text: str, source: str) -> Any:
    """`json.loads` that refuses NaN, Infinity, unbounded numbers and deep nesting."""
    depth = _max_depth(text)
    if depth > MAX_DEPTH:
        raise ConfigError(
            source, "", f"nested {depth} levels deep; a config has at most {MAX_DEPTH}"
        )
    try:
        return json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise ConfigError(source, where, f"not valid JSON: {err.msg}") from err
    except (_JsonRefusedError, ValueError, RecursionError) as err:
        raise ConfigError(source, "", f"not accepted: {err}") from err


def _max_depth(text: str) -> int:
    """How deep `[`/`{` nest outside strings; stops counting once past the limit."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def read_json(file: Path) -> dict[str, Any]:
    source = str(file)
    try:
        raw = read_small_file(file, MAX_CONFIG_BYTES)
    except FileProblem as err:
        raise ConfigError(source, "", f"cannot read the file: {err.reason}") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(source, "", "expected UTF-8 text") from err
    data = parse_json_text(text, source)
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"expected a JSON object, got {_kind(data)}")
    return data


def _set_path(data: dict[str, Any], keys: list[str], value: object) -> None:
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and len(value) > 60:
        value = value[:60]  # never serialise a 50 MB value only to cut it
        return json.dumps(value)[:-1] + '..."'
    shown = json.dumps(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def describe(tp: Any) -> str:  # noqa: PLR0911 - one return per kind of type
    """How a type reads in an error message: 'an integer', 'one of "a", "b"', ..."""
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return describe(get_args(tp)[0])
    if origin in (types.UnionType, typing.Union):
        return " or ".join(describe(arg) for arg in get_args(tp) if arg is not type(None))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(arg) for arg in get_args(tp))
    if origin is list:
        return f"a list of {_plural(describe(get_args(tp)[0]))}"
    if origin is dict:
        return f"an object of {_plural(describe(get_args(tp)[1]))}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(json.dumps(member.value) for member in tp)
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        Path: "a path",
        Secret: "the path of a readable secret file",
    }
    if tp in names:
        return names[tp]
    return "an object"


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s"
    return text


class _Converter:
    def __init__(self, source: str, overridden: set[str], *, read_secrets: bool = True) -> None:
        self.read_secrets = read_secrets
        self.source = source
        self.overridden = overridden

    def fail(self, path: str, problem: str) -> ConfigError:
        for key in self.overridden:
            if path == key or path.startswith((key + ".", key + "[")):
                return ConfigError("command line", path, problem)
        return ConfigError(self.source, path, problem)

    def convert(self, tp: Any, value: Any, path: str) -> Any:  # noqa: PLR0911, PLR0912 - one branch per kind of type
        origin = get_origin(tp)
        if origin is typing.Annotated:
            inner, *checks = get_args(tp)
            result = self.convert(inner, value, path)
            for check in checks:
                problem = check(result)
                if problem:
                    raise self.fail(path, problem)
            return result
        if tp is Any:
            self._no_nul(value, path)
            return value
        if origin in (types.UnionType, typing.Union):
            return self._union(tp, value, path)
        if origin is typing.Literal:
            if value in get_args(tp) and not isinstance(value, bool):
                return value
            raise self._expected(tp, value, path)
        if origin is list:
            if not isinstance(value, list):
                raise self._expected(tp, value, path)
            (item,) = get_args(tp)
            return [self.convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            if not isinstance(value, dict):
                raise self._expected(tp, value, path)
            _, item = get_args(tp)
            for k in value:
                if "\0" in k:
                    raise self.fail(_join(path, k), "a key may not contain a NUL byte")
            return {k: self.convert(item, v, _join(path, k)) for k, v in value.items()}
        if dataclasses.is_dataclass(tp) and isinstance(tp, type) and tp is not Secret:
            return self._dataclass(tp, value, path)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                raise self._expected(tp, value, path) from None
        return self._scalar(tp, value, path)

    def _no_nul(self, value: Any, path: str) -> None:
        """A value kept as parsed (`Any`) still may not hide a NUL byte in a string or key."""
        stack = [(value, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, str) and "\0" in item:
                raise self.fail(where, "a string may not contain a NUL byte")
            if isinstance(item, list):
                stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
            elif isinstance(item, dict):
                for k, v in item.items():
                    if "\0" in k:
                        raise self.fail(_join(where, k), "a key may not contain a NUL byte")
                    stack.append((v, _join(where, k)))

    def _scalar(self, tp: Any, value: Any, path: str) -> Any:
        if isinstance(value, str) and "\0" in value:
            raise self.fail(path, "a string may not contain a NUL byte")
        if tp is bool and isinstance(value, bool):
            return value
        if tp is int and isinstance(value, int) and not isinstance(value, bool):
            if not -MAX_INT <= value <= MAX_INT:
                raise self.fail(path, f"expected an integer within +/-2^53, got {_kind(value)}")
            return value
        if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not (math.isfinite(value) and abs(value) <= MAX_FLOAT):
                raise self.fail(path, f"expected a finite number within +/-1e15, got {value!r}")
            return float(value)
        if tp is str and isinstance(value, str):
            return value
        if tp is Path and isinstance(value, str) and value:
            return Path(value)
        if tp is Secret and isinstance(value, str) and value:
            return self._secret(Path(value), path) if self.read_secrets else Secret(Path(value), "")
        raise self._expected(tp, value, path)

    def _secret(self, file: Path, path: str) -> Secret:
        source = self.source
        for key in self.overridden:
            if path == key:
                source = "command line"
        return Secret(file, read_secret(file, source, path))

    def _union(self, tp: Any, value: Any, path: str) -> Any:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        candidates = [arg for arg in args if arg is not type(None)]
        if len(candidates) == 1:
            return self.convert(candidates[0], value, path)
        for candidate in candidates:
            try:
                return self.convert(candidate, value, path)
            except ConfigError:
                continue
        raise self._expected(tp, value, path)

    def _dataclass(self, tp: type[Any], value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self._expected(tp, value, path)
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {key_of(f): f for f in dataclasses.fields(tp) if f.init}
        for key in value:
            if key not in fields:
                raise self.fail(_join(path, key), _unknown(key, fields))
        kwargs: dict[str, Any] = {}
        for key, field in fields.items():
            if key in value:
                kwargs[field.name] = self.convert(hints[field.name], value[key], _join(path, key))
            elif (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                expected = describe(hints[field.name])
                raise self.fail(_join(path, key), f"missing; expected {expected}")
        try:
            return tp(**kwargs)
        except FieldProblem as problem:
            raise self.fail(_join(path, problem.key), problem.problem) from None

    def _expected(self, tp: Any, value: Any, path: str) -> ConfigError:
        return self.fail(path, f"expected {describe(tp)}, got {_kind(value)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unknown(key: str, known: Mapping[str, object]) -> str:
    close = difflib.get_close_matches(key[:100], list(known), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"unknown key{hint}; known keys: {', '.join(sorted(known))}"


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse `HOST:PORT`, `[IPV6]:PORT` or `:PORT` (all addresses); raise ValueError.

    The port is 1 to 65535 in ASCII digits (Python's `isdigit` would take `٣٤٥٦`), and the
    host an IP address or a valid (IDNA) host name, so a typo is an error here, not later.
    """
    shown = _kind(text)
    host, sep, port_text = text.rpartition(":")
    if (
        not sep
        or not (port_text.isascii() and port_text.isdigit())
        or len(port_text) > 5
        or not 0 < int(port_text) < 65536
    ):
        raise ValueError(f"expected HOST:PORT with a port from 1 to 65535, got {shown}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise ValueError(f"expected an IPv6 address inside [...], got {shown}")
    if not host:
        return "0.0.0.0", int(port_text)  # noqa: S104 - ":PORT" asks for every address
    problem = host_problem(host)
    if problem:
        raise ValueError(f"{problem} in --listen")
    return host, int(port_text)
