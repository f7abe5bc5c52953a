"""A suite spec: the whole comparison behind the README's learner table, as YAML validated by
pydantic (docs/report.md), and the sweep trials it stands for at one budget.

A suite is a list of benchmark sections. A section lists its entries (one run config each:
the learner joins the comparison by its entry, never by code naming it), the scenarios they run
in (each entry in those its learner supports), the published numbers and tuned options beside
the configs, and its budgets: for each budget (``smoke``, ``cpu``, ``paper``) the overrides
that size its runs, to which an entry may add its own. Runs made outside the suite join the
report from their own folders or results files, labelled with their schedule.

Every trial's config is built and checked before any trial starts, as ``metalearn sweep``
does, so a bad entry is refused up front, naming the section and the entry.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pydantic
import yaml

from metalearn.cli.config import ConfigError, RunConfig, load_config
from metalearn.learners import get_learner
from metalearn.sweep.spec import Resources, SpecError, Trial, check_names, override_value, read_spec
from metalearn.tasks import Scenario


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class Entry(_Strict):
    """One learner's config in a section, with what the README's table says of it."""

    config: Path  # an ordinary run config; its stem labels the rows (published numbers too)
    paper: str = ""  # the paper it reproduces, as the README's table names it
    docs: Path | None = None  # its page, linked from the README's table and the report
    scenarios: list[Scenario] | None = None  # in place of the section's
    overrides: list[str] = []  # key.path=value at every budget
    budgets: dict[str, list[str]] = {}  # budget -> overrides added to the section's

    @property
    def label(self) -> str:
        return self.config.stem


class External(_Strict):
    """Finished runs made outside the suite (a longer schedule, say), read from their run
    folders or results files (glob patterns); ``schedule`` says how they were trained."""

    schedule: str = pydantic.Field(min_length=1)
    runs: list[str] = pydantic.Field(min_length=1)
    label: str | None = None  # default: the config's stem in the file name, else the learner

    def paths(self) -> list[Path]:
        return [Path(path) for pattern in self.runs for path in sorted(glob.glob(pattern))]


class Section(_Strict):
    """One benchmark's part of the comparison: a table, heatmaps and curves per scenario."""

    name: str = pydantic.Field(min_length=1)
    title: str = pydantic.Field(min_length=1)  # the benchmark, as the README's table names it
    about: str = ""  # a line under the title: the setup, its source
    published: Path | None = None  # published.yaml: label -> scenario (or fewshot) -> ACC %
    tuned: Path | None = None  # tuned.yaml: label -> scenario -> learner options
    scenarios: list[Scenario] = []  # empty: each config's own (few-shot: none)
    budgets: dict[str, list[str]]  # budget -> overrides of every entry
    entries: list[Entry] = []
    external: list[External] = []


class Suite(_Strict):
    budgets: dict[str, str] = pydantic.Field(min_length=1)  # name -> what it is for
    seeds: list[int] = pydantic.Field(min_length=1)
    overrides: list[str] = []  # every trial at every budget
    resources: Resources = Resources()
    output_dir: Path  # run folders go to output_dir/<budget>/<benchmark>/...
    sections: list[Section] = pydantic.Field(min_length=1)

    @pydantic.model_validator(mode="after")
    def _known_budgets(self) -> Suite:
        """Every section sizes its runs for every budget; no entry names one the suite lacks."""
        known = set(self.budgets)
        for index, section in enumerate(self.sections):
            where = f"sections.{index} ({section.name})"
            if set(section.budgets) != known:
                missing, unknown = sorted(known - set(section.budgets)), sorted(set(section.budgets) - known)
                raise ValueError(f"{where}: budgets must be exactly the suite's {sorted(known)}"
                                 + (f"; missing {missing}" if missing else "")
                                 + (f"; unknown {unknown}" if unknown else ""))
            for number, entry in enumerate(section.entries):
                unknown = sorted(set(entry.budgets) - known)
                if unknown:
                    raise ValueError(f"{where}, entries.{number} ({entry.config}): unknown budget "
                                     f"{unknown[0]!r}; the suite's budgets are {sorted(known)}")
            labels = [entry.label for entry in section.entries]
            twice = sorted({label for label in labels if labels.count(label) > 1})
            if twice:
                raise ValueError(f"{where}: two entries have the config stem {twice[0]!r}, which "
                                 "labels their rows: give each its own config file")
        return self


class SuiteTrial(Trial):
    """A sweep trial with the section it belongs to."""

    section: str


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite spec's structure (its trials are checked by :func:`suite_trials`)."""
    return read_spec(path, Suite, "suite spec")


def suite_trials(suite: Suite, budget: str, path: Path) -> list[SuiteTrial]:
    """Every run of ``suite`` at ``budget``, each config built and checked, and every external
    pattern matching a file: nothing has started when a bad entry is refused."""
    if budget not in suite.budgets:
        raise SpecError(f"suite spec {path} has the budgets {sorted(suite.budgets)}, not {budget!r}")
    # relative to the folder the suite runs in (the repository), so that each run's recorded
    # command names it as anyone can rerun it
    output = f"output_dir={suite.output_dir / budget}"
    trials = []
    for index, section in enumerate(suite.sections):
        tuned = _read(section.tuned)
        for number, entry in enumerate(section.entries):
            where = f"suite spec {path}, sections.{index} ({section.name}), entries.{number} ({entry.config})"
            base = [*suite.overrides, *section.budgets[budget], *entry.overrides,
                    *entry.budgets.get(budget, []), output]
            for scenario in _scenarios(entry, section, base, where):
                options = tuned.get(entry.label, {}).get(scenario.value if scenario else "fewshot", {})
                settings = [*(f"learner.options.{key}={override_value(value)}" for key, value in options.items()),
                            *([f"scenario={scenario.value}"] if scenario else [])]
                for seed in suite.seeds:
                    trial = SuiteTrial(config=entry.config.absolute(), label=entry.label, settings={},
                                       overrides=[*settings, *base, f"seed={seed}"], section=section.name)
                    _build(trial.config, trial.overrides, where)
                    trials.append(trial)
        for number, external in enumerate(section.external):
            if not external.paths():
                raise SpecError(f"suite spec {path}, sections.{index} ({section.name}), external."
                                f"{number}: no run folder or results file matches {external.runs}")
    return trials


def _scenarios(entry: Entry, section: Section, overrides: list[str], where: str) -> list[Scenario | None]:
    """The entry's scenarios (else the section's) that its learner supports; its config's own
    scenario (None for few-shot) where neither names any."""
    config = _build(entry.config, overrides, where)
    wanted = entry.scenarios if entry.scenarios is not None else section.scenarios
    if not wanted:
        return [config.scenario]
    try:
        supported = get_learner(config.learner.name).scenarios
    except ValueError as error:
        raise SpecError(f"{where}: learner.name: {error}") from None
    chosen = [scenario for scenario in wanted if scenario in supported]
    if not chosen:
        raise SpecError(f"{where}: {config.learner.name} supports {sorted(s.value for s in supported)} "
                        f"only, none of {[s.value for s in wanted]}: give the entry its own scenarios")
    return chosen


def _build(config: Path, overrides: list[str], where: str) -> RunConfig:
    try:
        built = load_config(config, overrides)
        check_names(built)
    except ConfigError as error:
        raise SpecError(f"{where}: {error}") from None
    return built


def _read(path: Path | None) -> dict:
    return yaml.safe_load(path.read_text()) or {} if path is not None else {}
