"""Deep generative replay: the VAE's loss against torch.distributions, how replayed inputs are
labelled in each scenario, that replay reduces forgetting, and resume."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from metalearn.cli.config import load_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext, get_learner
from metalearn.models import MLP
from metalearn.models.vae import VAE
from metalearn.tasks import ClassificationTask, LabelledImages, Scenario, Stream

SMALL_GENERATOR = {"generator_hidden": [64], "latent": 8, "samples_shown": 16}


def test_vae_loss_is_the_negative_elbo_per_pixel():
    torch.manual_seed(0)
    vae = VAE((1, 4, 5), hidden=(7, 6), latent=3).double()
    x = torch.rand(9, 1, 4, 5, dtype=torch.float64)
    torch.manual_seed(1)
    loss = vae.loss(x)

    torch.manual_seed(1)  # the same reparameterisation noise
    hidden = vae.encoder(x)
    posterior = Normal(vae.to_mean(hidden), torch.exp(0.5 * vae.to_log_variance(hidden)))
    z = posterior.mean + torch.randn_like(posterior.mean) * posterior.stddev
    reconstruction = -Bernoulli(logits=vae.decoder(z), validate_args=False).log_prob(x.flatten(1)).sum(1)
    kl = kl_divergence(posterior, Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(loss, (reconstruction + kl).mean() / 20, rtol=1e-12)


def test_vae_samples_have_the_image_shape_and_repeat_with_the_generator():
    vae = VAE((1, 6, 6), hidden=(8,), latent=4)
    first = vae.sample(5, torch.Generator().manual_seed(3))
    assert first.shape == (5, 1, 6, 6) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, vae.sample(5, torch.Generator().manual_seed(3)))


def tiny_stream(n_tasks=3) -> Stream:
    def task(t):
        images = torch.randint(0, 256, (8, 3, 3), dtype=torch.uint8)
        data = LabelledImages(images, torch.arange(8) % 2)
        return ClassificationTask(f"t{t}", 2, data, data)

    return Stream("tiny", tuple(task(t) for t in range(n_tasks)), frozenset(Scenario))


def learner_at_task(task_index, scenario, **options):
    """A DGR learner on a 3-task stream of 2 classes each, about to train on ``task_index``."""
    stream = tiny_stream()
    context = LearnerContext(stream, scenario, torch.device("cpu"), seed=0)
    learner_class = get_learner("dgr")
    learner = learner_class(MLP(9, stream.n_outputs(scenario), hidden=(4,)),
                            learner_class.Options(**SMALL_GENERATOR, **options), context)
    learner.begin_task(task_index)
    return learner


@pytest.mark.parametrize("scenario,expected", [
    # each previous task in its own outputs, labelled there
    (Scenario.TASK, [([0, 1], [True, True]), ([2, 3], [True, True])]),
    (Scenario.DOMAIN, [([0, 1], [True, True])]),  # the shared head
    # every class seen so far, labelled among the classes seen before task 2
    (Scenario.CLASS, [([0, 1, 2, 3, 4, 5], [True, True, True, True, False, False])]),
])
def test_replayed_inputs_are_scored_now_against_the_labels_known_before(scenario, expected):
    learner = learner_at_task(2, scenario)
    assert [(outputs.tolist(), known.tolist())
            for outputs, known in learner._replay_spaces] == expected


@pytest.mark.parametrize("distill", [False, True])
def test_replay_loss_in_class_il_puts_no_target_mass_on_new_classes(distill):
    learner = learner_at_task(2, Scenario.CLASS, distill=distill, temperature=3.0)
    generator = torch.Generator().manual_seed(0)
    new, old = torch.randn(5, 6, generator=generator), torch.randn(5, 6, generator=generator)
    old[:, 4:] = 100.0  # the previous solver's untrained outputs for task 2: ignored

    if distill:  # T² times the cross-entropy against softened targets, zero on classes 4 and 5
        target = torch.cat([torch.softmax(old[:, :4] / 3, 1), torch.zeros(5, 2)], 1)
        expected = 9 * -(target * torch.log_softmax(new / 3, 1)).sum(1).mean()
    else:
        expected = F.cross_entropy(new, old[:, :4].argmax(1))
    assert torch.allclose(learner._replay_loss(new, old), expected, rtol=1e-6)


def test_replay_loss_in_task_il_averages_the_previous_tasks_heads():
    learner = learner_at_task(2, Scenario.TASK)
    generator = torch.Generator().manual_seed(1)
    new, old = torch.randn(5, 6, generator=generator), torch.randn(5, 6, generator=generator)
    heads = [F.cross_entropy(new[:, h], old[:, h].argmax(1)) for h in ([0, 1], [2, 3])]
    assert torch.allclose(learner._replay_loss(new, old), (heads[0] + heads[1]) / 2, rtol=1e-6)


def test_distillation_of_a_solver_that_agrees_with_its_teacher_has_zero_gradient():
    learner = learner_at_task(1, Scenario.DOMAIN, distill=True)
    old = torch.randn(5, 2, generator=torch.Generator().manual_seed(2))
    agreeing = old.clone().requires_grad_(True)
    learner._replay_loss(agreeing, old).backward()
    assert agreeing.grad.abs().max() < 1e-7


@pytest.mark.parametrize("task_index,weight", [(0, None), (2, 1 / 3)])
def test_a_step_weighs_the_current_task_1_over_t_and_replay_the_rest(task_index, weight,
                                                                     monkeypatch):
    """With the losses replaced by constants, the solver's and the generator's losses are
    (1/t)·current + (1 - 1/t)·replayed after t tasks; the first task replays nothing."""
    learner = learner_at_task(task_index, Scenario.DOMAIN)
    if task_index:
        learner.end_task(task_index - 1)  # the frozen teachers replay comes from
    current, replayed = torch.tensor(1.0), torch.tensor(10.0)
    monkeypatch.setattr("metalearn.learners.dgr.masked_cross_entropy",
                        lambda logits, batch: current + 0 * logits.sum())
    monkeypatch.setattr(learner, "_replay_loss", lambda logits, old: replayed + 0 * logits.sum())
    stream = learner.context.stream
    batch = next(stream.train_batches(Scenario.DOMAIN, [task_index], 4, torch.Generator(), seen=1))
    monkeypatch.setattr(VAE, "loss", lambda self, x: (2 * current if x is batch.x else 2 * replayed)
                        + 0 * self.to_mean.bias.sum())
    values = learner.train_step(batch)
    expected = 1.0 if weight is None else weight * 1.0 + (1 - weight) * 10.0
    assert values["loss"] == pytest.approx(expected)
    assert values["generator_loss"] == pytest.approx(2 * expected)


def test_replay_clearly_reduces_forgetting(tiny_config):
    """Domain-IL: without replay (fine-tuning) the old tasks are overwritten."""
    def forgetting(name, options):
        config = load_config(tiny_config(learner={"name": name, "options": options},
                                         scenario="domain", protocol__steps_per_task=150))
        return run(config).metrics["forgetting"]

    with_replay = forgetting("dgr", SMALL_GENERATOR)
    without = forgetting("finetune", {})
    assert with_replay < without - 0.05, (with_replay, without)


def test_each_task_shows_the_generators_samples(tiny_config, tmp_path):
    config = load_config(tiny_config(learner={"name": "dgr", "options": SMALL_GENERATOR}))
    run(config, run_dir=tmp_path / "run")
    shown = sorted(p.name for p in (tmp_path / "run" / "images").iterdir())
    assert shown == [f"generator_samples_task_{i}.png" for i in range(5)]


def test_resume_after_a_kill_in_task_three_gives_the_uninterrupted_result(tiny_config, tmp_path,
                                                                         killed_and_resumed):
    config = load_config(tiny_config(learner={"name": "dgr", "options": SMALL_GENERATOR},
                                     protocol__steps_per_task=30))
    reference = run(config, run_dir=tmp_path / "reference")
    assert np.array_equal(killed_and_resumed(config).accuracy, reference.accuracy)
