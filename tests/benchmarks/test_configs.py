"""The benchmark configs that ship are valid, and the files compare.py reads beside them
(published numbers, tuned options) name configs that exist and options their learners accept:
a typo there would otherwise surface hours into a run, or as a silently empty column."""

from pathlib import Path

import pytest
import yaml

from metalearn.cli.config import load_config
from metalearn.cli.runner import build_run

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
FILES = sorted(BENCHMARKS.glob("*/*.yaml"))
RUN_CONFIGS = [p for p in FILES if "learner" in yaml.safe_load(p.read_text())]
PUBLISHED = [p for p in FILES if p.name == "published.yaml"]
TUNED = [p for p in FILES if p not in RUN_CONFIGS and p not in PUBLISHED]  # learner -> scenario -> options


def relative(path: Path) -> str:
    return str(path.relative_to(BENCHMARKS))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=relative)
def test_every_benchmark_config_builds(path):
    stream, _, learner, _ = build_run(load_config(path))
    assert len(stream) > 0 and learner is not None


@pytest.mark.parametrize("path", PUBLISHED, ids=relative)
def test_published_numbers_name_configs_beside_them(path):
    published = yaml.safe_load(path.read_text())
    assert published["source"]
    for learner, by_scenario in published["accuracy"].items():
        assert (path.parent / f"{learner}.yaml").exists(), f"{learner}: no {learner}.yaml"
        for scenario, accuracy in by_scenario.items():
            assert scenario in {"task", "domain", "class", "fewshot"}
            assert 0 < accuracy <= 100  # percent


@pytest.mark.parametrize("path", TUNED, ids=relative)
def test_tuned_options_are_options_of_the_configs_they_name(path):
    tuned = yaml.safe_load(path.read_text())
    assert tuned
    for learner, by_scenario in tuned.items():
        for scenario, options in by_scenario.items():
            overrides = [f"scenario={scenario}",
                         *(f"learner.options.{key}={value}" for key, value in options.items())]
            config = load_config(path.parent / f"{learner}.yaml", overrides)
            built = build_run(config)[2]
            assert all(getattr(built.options, key) == value for key, value in options.items())
