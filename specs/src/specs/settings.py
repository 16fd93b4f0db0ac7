"""Typed configuration files: the base of the daemons' and deployments' models, one-line
errors, and the reference page generated from the models.

A model derives from `Settings`: unknown keys are errors (with a "did you mean" hint
when a known key is close), types are strict (`"5"` is not a number, `1` is not `true`,
a string is not a list), and each field's docstring is its description on the
reference page. `validate_file(model, raw, source)` returns the model or raises
`SettingsError` whose message is one line naming the file, the key path
(`pools[1].restart.max_backoff_s`) and what was expected. The value written is shown
(shortened) except under a key-like name (`key`, `token`, `secret`, `password`) or for a
pattern mismatch: a raw key pasted where its digest belongs is never repeated.

`reference(model, title)` renders a model as Markdown tables (one per nested section);
`docs/configuration.md` is made of them by `ci/gen-config-doc`.
"""

from __future__ import annotations

import difflib
import json
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = [
    "Settings",
    "SettingsError",
    "error_line",
    "read_yaml",
    "reference",
    "validate_file",
]

MAX_ERRORS_SHOWN = 3
M = TypeVar("M", bound=BaseModel)


class SettingsError(ValueError):
    """A configuration file that cannot be used; the message is one line."""


class Settings(BaseModel):
    """Base of every configuration model: strict types, no unknown keys."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_take_defaults(cls, data: Any) -> Any:
        """`pools:` with nothing under it (YAML null) means the default, as an empty
        section does; only for lists and sections, never for a scalar."""
        if not isinstance(data, dict):
            return data
        return {
            key: value
            for key, value in data.items()
            if not (
                value is None
                and key in cls.model_fields
                and cls.model_fields[key].default_factory is not None
            )
        }


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; SettingsError (one line) when unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML: {_one_line(str(exc))}") from exc


def validate_file(model: type[M], raw: Any, source: str, at: tuple[Any, ...] = ()) -> M:
    """`raw` (from YAML) as `model`, or SettingsError naming `source`, the key path
    (below `at`, where `raw` sits in the file) and what was expected."""
    if raw is None:
        raw = {}
    try:
        return model.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise SettingsError(error_line(exc, model, source, at)) from None


def error_line(
    exc: ValidationError, model: type[BaseModel], source: str, at: tuple[Any, ...] = ()
) -> str:
    """The first errors of `exc` in one line: `SOURCE: KEY.PATH: what was expected`."""
    errors = exc.errors(include_url=False)
    shown = [_describe(error, model, at) for error in errors[:MAX_ERRORS_SHOWN]]
    more = len(errors) - len(shown)
    tail = f" (and {more} more)" if more else ""
    prefix = f"{source}: " if source else ""
    return _one_line(prefix + "; ".join(shown) + tail)


def _describe(error: Any, model: type[BaseModel], at: tuple[Any, ...]) -> str:
    loc = tuple(error["loc"])
    where = key_path(at + loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = sorted(_fields_at(model, loc[:-1]))
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"{where}: unknown setting{suggestion}"
    if kind == "missing":
        return f"{where}: required, missing"
    if kind == "string_pattern_mismatch" or _secret_like(loc):
        return f"{where}: {_expected(error)}"  # what was written may be a secret
    return f"{where}: {_expected(error)}, got {_shown(error.get('input'))}"


def _secret_like(loc: tuple[Any, ...]) -> bool:
    name = str(loc[-1]).lower() if loc else ""
    return any(word in name for word in ("key", "token", "secret", "password"))


def _expected(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    fixed = {
        "int_type": "expected a whole number",
        "int_from_float": "expected a whole number",
        "float_type": "expected a number",
        "bool_type": "expected true or false",
        "string_type": "expected a string",
        "list_type": "expected a list",
        "tuple_type": "expected a list",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
    }
    if kind in fixed:
        return fixed[kind]
    bounds = {
        "greater_than": "gt",
        "greater_than_equal": "ge",
        "less_than": "lt",
        "less_than_equal": "le",
    }
    if kind in bounds:
        words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[bounds[kind]]
        return f"expected a value {words} {ctx.get(bounds[kind])}"
    if kind == "literal_error":
        return f"expected {ctx.get('expected', '')}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern', '')}"
    message = str(error["msg"])
    return message.replace("Input should be", "expected", 1)


def _shown(value: Any) -> str:
    text = repr(value)
    if isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    return text if len(text) <= 40 else text[:37] + "..."


def key_path(loc: tuple[Any, ...]) -> str:
    """`('pools', 1, 'restart', 'x')` → `pools[1].restart.x`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation holds (through Optional, list, tuple, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """The keys the model accepts at `loc` (list indexes skipped)."""
    current: list[type[BaseModel]] = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        nested: list[type[BaseModel]] = []
        for candidate in current:
            field = candidate.model_fields.get(str(part))
            if field is not None:
                nested.extend(_models_in(field.annotation))
        current = nested
    return {name for candidate in current for name in candidate.model_fields}


# -- the reference page ----------------------------------------------------------------


def reference(
    model: type[BaseModel],
    title: str,
    intro: str = "",
    descriptions: dict[str, str] | None = None,
    defaults: dict[str, str] | None = None,
) -> str:
    """Markdown: one table per section of `model` (the top level first, then each
    nested model once). `descriptions`/`defaults` (keyed `Model.field`) fill in for
    models whose fields carry no docstring or whose default is computed."""
    descriptions = descriptions or {}
    defaults = defaults or {}
    sections: list[tuple[str, type[BaseModel]]] = []
    _collect(model, "", sections)
    out = [f"## {title}", ""]
    if intro:
        out += [intro.strip(), ""]
    for where, section in sections:
        if where:
            out += [f"### `{where}`", ""]
            doc = (section.__doc__ or "").strip()
            if doc and section.__doc__ is not BaseModel.__doc__:
                out += [_one_line(doc), ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in section.model_fields.items():
            qualified = f"{section.__name__}.{name}"
            text = descriptions.get(qualified) or field.description or ""
            if not text:
                raise ValueError(f"{qualified} has no description")
            default = defaults.get(qualified) or _default(field)
            kind = _type_name(field.annotation) + _bounds(field)
            out.append(f"| `{name}` | {kind} | {default} | {_cell(text)} |")
        out.append("")
    return "\n".join(out)


def _collect(model: type[BaseModel], where: str, out: list[tuple[str, type[BaseModel]]]) -> None:
    if any(seen is model for _, seen in out):
        return
    out.append((where, model))
    for name, field in model.model_fields.items():
        for nested in _models_in(field.annotation):
            if _is_root_model(nested):
                continue
            many = get_origin(_strip_none(field.annotation)) in (list, tuple)
            path = f"{where}.{name}" if where else name
            _collect(nested, f"{path}[]" if many else path, out)


def _is_root_model(model: type[BaseModel]) -> bool:
    return "root" in model.model_fields and len(model.model_fields) == 1


def _strip_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = get_args(annotation)
        names = [_type_name(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " or ".join(names) + suffix
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (list, tuple):
        inner = get_args(annotation)
        return f"list of {_type_name(inner[0])}" if inner else "list"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if _is_root_model(annotation):
            return _type_name(annotation.model_fields["root"].annotation)
        return "mapping"
    simple = {int: "integer", float: "number", str: "string", bool: "boolean"}
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(field: FieldInfo) -> str:
    """`, > 0`, `, 16 to 1048576`, `, matching ^…$`: the field's constraints."""
    words: list[str] = []
    for item in field.metadata:
        for attribute, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attribute, None)
            if value is not None:
                words.append(f"{sign} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            words.append(f"matching `{pattern}`")
        length = getattr(item, "max_length", None)
        if length is not None:
            words.append(f"at most {length} long")
    return (", " + ", ".join(words)) if words else ""


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "see below"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return _one_line(text).replace("|", "\\|")
