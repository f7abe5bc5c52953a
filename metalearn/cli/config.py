"""Run configs: YAML files validated by pydantic, with ``key.path=value`` overrides.

Every level rejects unknown keys with the nearest valid one suggested, so a typo never
silently falls back to a default. Options of the chosen benchmark, model and learner are
checked against what that benchmark builder, model or learner actually accepts.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import pydantic
import yaml

from metalearn.protocol import ProtocolSettings
from metalearn.tasks import Scenario


class ConfigError(ValueError):
    """A config file or override is invalid; the message says which key and how to fix it."""


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
        wandb, how often it checkpoints): runs with equal settings may share their results."""
        return yaml.safe_dump(self.model_dump(mode="json", exclude={
            "output_dir": True, "wandb": True, "protocol": {"checkpoint_every"}}))

    def changed_settings(self, other: RunConfig) -> list[str]:
        """The keys (``protocol.steps_per_task``) whose result settings differ in ``other``."""
        return _changed_keys(yaml.safe_load(self.result_settings()),
                             yaml.safe_load(other.result_settings()))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config and apply ``key.path=value`` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    for override in overrides:
        key, separator, value = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} is not of the form key.path=value")
        _set(data, key.split("."), yaml.safe_load(value))
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(_explain(error, RunConfig)) from None


def check_options(what: str, options: dict[str, Any], accepts: Callable | type[pydantic.BaseModel],
                  skip: Sequence[str] = ()) -> Any:
    """Check ``options`` against a pydantic model (returned validated) or a callable's keywords."""
    if isinstance(accepts, type) and issubclass(accepts, pydantic.BaseModel):
        try:
            return accepts.model_validate(options)
        except pydantic.ValidationError as error:
            raise ConfigError(_explain(error, accepts, prefix=f"{what}.")) from None
    parameters = inspect.signature(accepts).parameters
    valid = [name for name in parameters if name not in skip and name != "self"]
    for key in options:
        if key not in valid:
            raise ConfigError(_unknown(f"{what}.{key}", key, valid))
    return options


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


def _explain(error: pydantic.ValidationError, model: type[pydantic.BaseModel], prefix: str = "") -> str:
    """Turn pydantic's first error into one sentence naming the key and the fix."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    path = prefix + ".".join(location)
    if first["type"] == "extra_forbidden":
        return _unknown(path, location[-1], _fields_at(model, location[:-1]))
    if first["type"] == "missing":
        return f"config key {path!r} is required but missing"
    return f"config key {path!r}: {first['msg']} (got {first.get('input')!r})"


def _fields_at(model: type[pydantic.BaseModel], location: list[str]) -> list[str]:
    for part in location:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
