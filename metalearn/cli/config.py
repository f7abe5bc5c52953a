"""Run configs: YAML files validated by pydantic, with ``key.path=value`` overrides.

Every level rejects unknown keys with the nearest valid one suggested, so a typo never
silently falls back to a default; an error names the file (or override) and the line. Options of the chosen benchmark, model and learner are
checked against what that benchmark builder, model or learner actually accepts.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import pydantic
import yaml

from metalearn.protocol import ProtocolSettings
from metalearn.tasks import Scenario


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and how to fix it."""

    key = ""  # the dotted path of the invalid key, where one is to blame


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class NamedComponent(_Section):
    name: str
    options: dict[str, Any] = {}


class WandbSettings(_Section):
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "metalearn"
    tags: list[str] = []


class RunConfig(_Section):
    """A whole run: what to train on, with what, for how long, and where results go."""

    benchmark: NamedComponent
    learner: NamedComponent
    model: NamedComponent
    protocol: ProtocolSettings
    scenario: Scenario | None = None
    task_order: list[int] | Literal["random"] | None = None  # a curriculum; "random": from the seed
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    output_dir: str = "runs"
    wandb: WandbSettings = WandbSettings()

    def result_settings(self) -> str:
        """The config as YAML without what leaves a run's results unchanged (where they go,
        wandb, how often it checkpoints): runs with equal settings may share their results.
        Protocol settings added since runs were named from this text are left out at their
        defaults, so those runs keep their names and resume."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={
            "output_dir": True, "wandb": True,
            "protocol": {"checkpoint_every", *self.protocol.later_settings_at_default()}}))

    def fingerprint(self) -> str:
        """Six hex digits that differ between runs of different result settings."""
        return hashlib.sha256(self.result_settings().encode()).hexdigest()[:6]

    def changes_since(self, started: str) -> list[str]:
        """Each result setting that differs from those of ``started`` (the text of
        :meth:`result_settings` when a run started), as ``key (was OLD, now NEW)``."""
        old, new = yaml.safe_load(started), yaml.safe_load(self.result_settings())
        return [f"{key} (was {_get(old, key)!r}, now {_get(new, key)!r})"
                for key in _changed_keys(old, new)]


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config and apply ``key.path=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    data = _parse_yaml(text, f"config file {path}") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys (benchmark:, learner:, "
                          f"model:, protocol:, ...), not a {type(data).__name__}")
    given = {}  # where each key came from, for errors: an override, else the file
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        _set(data, key.split("."), _parse_yaml(value, f"override {override!r}"))
        given[key] = f"override {override!r}"
    try:
        return validate_config(data)
    except ConfigError as error:
        source = next((where for prefix, where in given.items()
                       if error.key == prefix or error.key.startswith(prefix + ".")), None)
        raise ConfigError(f"{source or _file_line(path, text, error.key)}: {error}") from None


def validate_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise _config_error(error, RunConfig) from None


def check_options(what: str, options: dict[str, Any], accepts: Callable | type[pydantic.BaseModel],
                  skip: Sequence[str] = ()) -> Any:
    """Check ``options`` against a pydantic model (returned validated) or a callable's keywords."""
    if isinstance(accepts, type) and issubclass(accepts, pydantic.BaseModel):
        try:
            return accepts.model_validate(options)
        except pydantic.ValidationError as error:
            raise _config_error(error, accepts, prefix=f"{what}.") from None
    parameters = inspect.signature(accepts).parameters
    valid = [name for name in parameters if name not in skip and name != "self"]
    for key in options:
        if key not in valid:
            raise ConfigError(_unknown(f"{what}.{key}", key, valid))
    return options


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{source}{where} is not valid YAML: {problem}") from None


def _file_line(path: Path, text: str, key: str) -> str:
    """``config file PATH, line N``: the line of ``key`` (a dotted path), or of the deepest
    section of it that the file has."""
    node, line = yaml.compose(text), None
    for part in key.split(".") if key else []:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return f"config file {path}" + (f", line {line}" if line else "")


def _get(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _changed_keys(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for key in sorted(old.keys() | new.keys())
                for changed in _changed_keys(old.get(key), new.get(key), f"{path}{key}.")]
    return [path.removesuffix(".")] if old != new else []


def _set(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(keys)}: {key} is not a section")
        data = child
    data[keys[-1]] = value


def _unknown(path: str, key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown config key {path!r}: {hint}valid keys here: {sorted(valid)}"


def _config_error(error: pydantic.ValidationError, model: type[pydantic.BaseModel],
                  prefix: str = "") -> ConfigError:
    """Pydantic's first error as one sentence naming the key and the fix; the key (a dotted
    path) is kept on the error as ``key``, so the caller can say where it was given."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    path = prefix + ".".join(location)
    if first["type"] == "extra_forbidden":
        message = _unknown(path, location[-1], _fields_at(model, location[:-1]))
    elif first["type"] == "missing":
        message = f"config key {path!r} is required but missing"
    else:
        message = f"config key {path!r}: {first['msg']} (got {first.get('input')!r})"
    config_error = ConfigError(message)
    config_error.key = path
    return config_error


def _fields_at(model: type[pydantic.BaseModel], location: list[str]) -> list[str]:
    for part in location:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
