import pytest

from metalearn.cli.config import ConfigError, load_config
from metalearn.cli.runner import build_run


@pytest.mark.parametrize(
    "override,message",
    [
        ("sede=3", "unknown config key 'sede': did you mean 'seed'"),
        ("protocol.step_per_task=5", "'protocol.step_per_task': did you mean 'steps_per_task'"),
        ("wandb.mod=offline", "'wandb.mod': did you mean 'mode'"),
        ("protocol.batch_size=many", "'protocol.batch_size'.*valid integer"),
        ("scenario=classes", "'scenario'.*'task', 'domain' or 'class'"),
        ("seed", "not of the form key.path=value"),
    ],
)
def test_bad_keys_and_values_are_named_with_a_fix(tiny_config, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(tiny_config(), [override])


@pytest.mark.parametrize(
    "override,message",
    [
        ("learner.options.lrr=0.1", "'learner.options.lrr': did you mean 'lr'"),
        ("benchmark.options.classes_per_tsk=2", "'benchmark.options.classes_per_tsk': did you mean 'classes_per_task'"),
        ("model.options.hiden=[10]", "'model.options.hiden': did you mean 'hidden'"),
        ("learner.name=finetnue", "unknown learner 'finetnue'; did you mean 'finetune'"),
        ("benchmark.name=split_mnst", "unknown benchmark 'split_mnst'"),
    ],
)
def test_component_options_are_checked_against_the_component(tiny_config, override, message):
    config = load_config(tiny_config(), [override])
    with pytest.raises((ConfigError, ValueError), match=message):
        build_run(config)


def test_overrides_reach_every_level(tiny_config):
    config = load_config(tiny_config(), ["learner.options.lr=0.5", "seed=7",
                                         "model.options.hidden=[8, 8]"])
    assert config.learner.options == {"lr": 0.5} and config.seed == 7
    assert config.model.options["hidden"] == [8, 8]


def test_incompatible_learner_is_refused_before_training(tiny_config):
    config = load_config(tiny_config(), ["learner.name=pretrain_finetune", "learner.options={}"])
    with pytest.raises(ValueError, match="pretrain_finetune.*episodic.*classification"):
        build_run(config)


def test_few_shot_benchmark_refuses_a_scenario(tiny_config):
    config = load_config(tiny_config(), ["benchmark.name=mnist_few_shot"])
    with pytest.raises(ConfigError, match="few-shot: remove the scenario"):
        build_run(config)


def test_result_settings_ignore_only_what_leaves_results_unchanged(tiny_config):
    base = load_config(tiny_config()).result_settings()
    same = load_config(tiny_config(), ["output_dir=elsewhere", "wandb.mode=offline",
                                       "protocol.checkpoint_every=20"]).result_settings()
    assert same == base
    assert load_config(tiny_config(), ["learner.options.lr=0.5"]).result_settings() != base
    assert load_config(tiny_config(), ["seed=3"]).result_settings() != base
