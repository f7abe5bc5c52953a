"""A sweep spec (YAML, validated by pydantic) and the ordinary run configs it stands for.

Every trial's config is built and checked before any trial starts, with the same
``load_config`` as ``metalearn run``, so a bad key, learner or benchmark in any grid point is
refused up front, naming the spec entry.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml

from metalearn.cli.config import ConfigError, RunConfig, check_options, load_config
from metalearn.learners import get_learner
from metalearn.models import CONV4_BLOCKS, MODELS
from metalearn.nas import ArchitectureSpace, DartsOptions, SearcherOptions
from metalearn.tasks import BENCHMARKS


Model = TypeVar("Model", bound=pydantic.BaseModel)
VALIDATION_METRIC = "val_acc"  # what a run's validation points score (and its results' metric)
BLOCKS_KEY = "model.options.blocks"  # what an architecture search varies
CANDIDATE_MODEL = "searchable"  # the model of an architecture search's candidates


class SpecError(ValueError):
    """A sweep spec is invalid; the message names the entry and the fix."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class Distribution(_Strict):
    """One key of a search space: exactly one of Tune's ``uniform``, ``loguniform`` (both
    ``[low, high]``) or ``choice`` (a list of values)."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    choice: list[Any] | None = pydantic.Field(None, min_length=1)

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [kind for kind in ("uniform", "loguniform", "choice") if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform: [low, high], loguniform: [low, high] "
                             f"or choice: [values], not {given or 'none'}")
        bounds = self.uniform or self.loguniform
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"the low bound must be below the high one, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform bounds must be positive, got {list(self.loguniform)}")
        return self

    def examples(self) -> list[Any]:
        """Values a trial may get, to check against the run config before searching."""
        return list(self.choice if self.choice is not None else (self.uniform or self.loguniform))

    def tune_domain(self) -> Any:
        from ray import tune

        if self.choice is not None:
            return tune.choice(self.choice)
        return tune.uniform(*self.uniform) if self.uniform else tune.loguniform(*self.loguniform)


class Search(_Strict):
    """Sample ``samples`` points of ``space`` with Optuna's TPE (through Tune)."""

    space: dict[str, Distribution] = pydantic.Field(min_length=1)
    samples: int = pydantic.Field(ge=1)
    searcher: Literal["optuna"] = "optuna"


class ArchitectureSearch(_Strict):
    """Search the backbone (docs/architecture_search.md): ``searcher`` proposes ``candidates``
    architectures of ``space``, ``batch`` at a time (as many as train side by side); each is a
    trial of the spec's config with its blocks, scored on validation data only."""

    searcher: SearcherOptions | DartsOptions = pydantic.Field(discriminator="name")
    candidates: int = pydantic.Field(ge=1)
    space: ArchitectureSpace = ArchitectureSpace()
    batch: int = pydantic.Field(2, ge=1)


class Resources(_Strict):
    """What one trial (one run) holds while it runs: Ray places as many side by side as fit."""

    cpus: float = pydantic.Field(1, gt=0)
    gpus: float = pydantic.Field(0, ge=0)


class Scheduler(_Strict):
    """ASHA (Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning"): at
    ``grace_period`` x ``reduction_factor``^k training steps, a trial whose validation score is
    below the best 1/``reduction_factor`` of those that reached that step before it is stopped."""

    name: Literal["asha"]
    grace_period: int = pydantic.Field(gt=0)  # training steps every trial runs before a stop
    reduction_factor: float = pydantic.Field(4, gt=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class SweepSpec(_Strict):
    """A grid (every combination of ``grid`` x ``configs`` x ``seeds``) or a search."""

    configs: list[Path] = pydantic.Field(min_length=1)  # ordinary run configs
    overrides: list[str] = []  # key.path=value, applied to every trial
    grid: dict[str, list[Any]] = {}
    search: Search | None = None
    architecture: ArchitectureSearch | None = None
    seeds: list[int] = pydantic.Field([0], min_length=1)
    metric: str = "val_acc"  # a key of results.json's metrics
    mode: Literal["max", "min"] = "max"
    resources: Resources = Resources()
    output_dir: Path  # the run folders and the sweep's summary
    best: Path | None = None  # where the best setting is written (tuned.yaml's format)
    scheduler: Scheduler | None = None  # early stopping on the runs' validation points

    @pydantic.field_validator("grid")
    @classmethod
    def _grid_lists(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [key for key, values in grid.items() if not values]
        if empty:
            raise ValueError(f"grid key {empty[0]!r} has no values: give a list of at least one")
        return grid

    @pydantic.model_validator(mode="after")
    def _grid_or_search(self) -> SweepSpec:
        if self.search is not None and self.architecture is not None:
            raise ValueError("give search (of settings) or architecture (of the backbone), not both")
        if self.searches() and (self.grid or len(self.configs) > 1 or len(self.seeds) > 1):
            raise ValueError("a search samples one config at one seed: give one entry in configs "
                             "and seeds and no grid (run one search per config)")
        return self

    def searches(self) -> bool:
        """Whether the trials are proposed by a searcher (of settings or architectures)."""
        return self.search is not None or self.architecture is not None


class Trial(pydantic.BaseModel):
    """One run of a sweep: a config file and its overrides, as ``metalearn run`` takes them."""

    config: Path  # absolute: trials run in Ray's own folders
    overrides: list[str]
    label: str  # the config file's stem: rows of the summary and of the best-setting file
    settings: dict[str, Any]  # the grid or search keys this trial varies

    def run_config(self) -> RunConfig:
        return load_config(self.config, self.overrides)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file: its structure, then every trial's run config."""
    spec = read_spec(path, SweepSpec, "sweep spec")
    check_trials(spec, Path(path))
    return spec


def read_spec(path: str | Path, model: type[Model], kind: str) -> Model:
    """A YAML file validated as ``model``; the error names the file and the entry (``kind``
    says what the file is: sweep spec, suite spec)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{kind} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{kind} {path} is not valid YAML: {error}") from None
    try:
        return model.model_validate(data or {})
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        entry = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise SpecError(f"{kind} {path}, entry {entry!r}: {message}") from None


def trials(spec: SweepSpec, settings: dict[str, Any] | None = None) -> list[Trial]:
    """The grid's trials, or (for a search) the trial of one sampled point ``settings``."""
    points = [settings or {}] if spec.searches() else [
        dict(zip(spec.grid, values)) for values in itertools.product(*spec.grid.values())]
    output = [f"output_dir={spec.output_dir.absolute()}"]
    if spec.architecture is not None:  # candidates are scored on validation data only
        output.append("protocol.test=false")
    return [Trial(config=config.absolute(), label=config.stem, settings=point,
                  overrides=[*spec.overrides, *output, f"seed={seed}",
                             *(f"{key}={override_value(value)}" for key, value in point.items())])
            for config, point, seed in itertools.product(spec.configs, points, spec.seeds)]


def check_trials(spec: SweepSpec, path: Path) -> None:
    """Build every trial's config (for a search: at each bound and choice) and check its names
    and options, so that no trial fails on a config error after others have run."""
    if (spec.searches() or spec.best is not None) and not spec.metric.startswith("val_"):
        raise SpecError(f"sweep spec {path}, entry 'metric': {spec.metric!r} is measured on the "
                        "test set; a setting is chosen on validation data only (val_acc)")
    if spec.scheduler is not None and spec.metric != VALIDATION_METRIC:
        raise SpecError(f"sweep spec {path}, entry 'metric': the {spec.scheduler.name} scheduler "
                        f"stops trials on their validation points, which score {VALIDATION_METRIC}: "
                        f"set metric: {VALIDATION_METRIC}, or drop the scheduler")
    if spec.architecture is not None:
        candidates = trials(spec, {BLOCKS_KEY: CONV4_BLOCKS})
    elif spec.search is not None:
        candidates = [trial for key, distribution in spec.search.space.items()
                      for value in distribution.examples() for trial in trials(spec, {key: value})]
    else:
        candidates = trials(spec)
    for trial in candidates:
        try:
            config = trial.run_config()
            check_names(config)
        except ConfigError as error:
            varied = ", ".join(f"{key}={value}" for key, value in trial.settings.items())
            raise SpecError(f"sweep spec {path}: the trial of {trial.config.name}"
                            f"{f' at {varied}' if varied else ''}: {error}") from None
        if spec.architecture is not None and config.model.name != CANDIDATE_MODEL:
            raise SpecError(f"sweep spec {path}, entry 'architecture': candidates are models "
                            f"{CANDIDATE_MODEL!r}, but {trial.config.name} trains {config.model.name!r}: "
                            f"set model.name: {CANDIDATE_MODEL} in it")
        if config.protocol.validate_every == 0 and (why := _validation_reader(spec)):
            raise SpecError(
                f"sweep spec {path}: {why}, and runs of {trial.config.name} do not validate; add "
                "to overrides protocol.validate_every=N and a validation split "
                "(benchmark.options.validation=0.1 for MNIST streams): tuning on the test set "
                "would overstate every result")


def _validation_reader(spec: SweepSpec) -> str | None:
    """What in ``spec`` reads the runs' validation data, if anything does."""
    if spec.searches() or spec.best is not None:
        return f"choosing a setting reads {spec.metric!r} on validation data"
    if spec.scheduler is not None:
        return f"the {spec.scheduler.name} scheduler stops trials on their runs' validation points"
    return None


def check_names(config: RunConfig) -> None:
    """The learner, benchmark and model exist and take the given options (what ``metalearn run``
    checks while building them, here without loading any data)."""
    try:
        learner = get_learner(config.learner.name)
    except ValueError as error:
        raise ConfigError(f"learner.name: {error}") from None
    check_options("learner.options", config.learner.options, learner.Options)
    if config.scenario is not None and config.scenario not in learner.scenarios:
        raise ConfigError(f"scenario: {config.learner.name} supports "
                          f"{sorted(s.value for s in learner.scenarios)} only, not {config.scenario.value}-IL")
    if config.benchmark.name not in BENCHMARKS:
        raise ConfigError(f"benchmark.name: unknown benchmark {config.benchmark.name!r}; "
                          f"known benchmarks: {sorted(BENCHMARKS)}")
    check_options("benchmark.options", config.benchmark.options, BENCHMARKS[config.benchmark.name],
                  skip=("data_root", "device"))
    if config.model.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {config.model.name!r}; choose one of "
                          f"{sorted(MODELS)}")


def override_value(value: Any) -> str:
    """A value as the override syntax reads it back (YAML), e.g. 1e-05 rather than 1e-5."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
