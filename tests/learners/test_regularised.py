"""A continual regulariser composed with a meta-learner: EWC on MAML's initialisation is EWC's
penalty on the same parameters, zero at the anchor; its Fisher is the mean squared meta-gradient
of single episodes; SI's path integral; every meta-learner runs composed through the runner."""

import copy

import pytest
import torch

from metalearn.cli.config import ConfigError, check_options, validate_config
from metalearn.cli.runner import run
from metalearn.learners import LearnerContext
from metalearn.learners.ewc import EWC, EWCOptions
from metalearn.learners.regularised import Regularised, RegularisedOptions
from metalearn.models import Conv4
from metalearn.seeding import derive_seed
from metalearn.tasks import ClassPool, EpisodeSampler, EpisodicTask, Stream

CPU = torch.device("cpu")
STRENGTH = 300.0


def toy_stream():
    """One episodic task of 8 random 12x12 classes of 6 images each."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 6, 12, 12), dtype=torch.uint8, generator=generator)
    pool = ClassPool.from_grouped(images, [f"c{i}" for i in range(8)])
    return Stream("toy", (EpisodicTask("toy", pool, pool),), frozenset())


def composed(regulariser="ewc", learner="maml", **options):
    torch.manual_seed(0)
    options = RegularisedOptions(learner=learner, options=options, regulariser=regulariser,
                                 strength=STRENGTH, fisher_episodes=3)
    return Regularised(Conv4(3, hidden=4), options, LearnerContext(toy_stream(), None, CPU, 0))


def trained_on_the_toy_task(learner, steps=2):
    sampler = EpisodeSampler(learner.context.stream[0].train, 3, 1, 2, seed=1)
    learner.begin_task(0)
    for _ in range(steps):
        learner.train_step(sampler.sample(2))
    learner.end_task(0)
    return sampler


def penalty_and_gradient(learner, scale):
    """The penalty's value and the gradient it adds to zeroed ``.grad``."""
    for p in learner.parameters:
        p.grad = torch.zeros_like(p)
    value = learner.penalty.add_gradient_(scale)
    return value, [p.grad.clone() for p in learner.parameters]


def test_ewc_on_maml_is_ewcs_penalty_on_the_same_parameters_and_zero_at_the_anchor():
    maml = composed(inner_lr=0.4)
    sampler = trained_on_the_toy_task(maml)
    fisher = [f.clone() for f in maml.penalty.precision]
    anchor = [p.detach().clone() for p in maml.parameters]
    assert sum(float(f.sum()) for f in fisher) > 0

    value, gradients = penalty_and_gradient(maml, maml.penalty_scale)
    assert float(value) == 0 and all(not g.any() for g in gradients)
    assert "penalty" in maml.train_step(sampler.sample(2))  # the next step is penalised

    ewc = EWC(copy.deepcopy(maml.model), EWCOptions(strength=STRENGTH),
              LearnerContext(None, None, CPU, 0))
    with torch.no_grad():  # EWC's penalty anchored at the same parameters, with the same Fisher
        for p, a in zip(ewc.parameters, anchor):
            p.copy_(a)
        ewc.penalty.add_term(fisher)
        for p, q in zip(ewc.parameters, maml.parameters):
            p.copy_(q)
    ours, our_gradients = penalty_and_gradient(maml, maml.penalty_scale)
    theirs, their_gradients = penalty_and_gradient(ewc, ewc.penalty_scale)
    by_hand = STRENGTH / 2 * sum(float((f * (p.detach() - a).square()).sum())
                                 for f, p, a in zip(fisher, maml.parameters, anchor))
    assert float(ours) > 1e-3  # one step moved it away from the anchor
    torch.testing.assert_close(float(ours), float(theirs))
    torch.testing.assert_close(float(ours), by_hand, rtol=1e-4, atol=0)
    for a, b in zip(our_gradients, their_gradients):
        torch.testing.assert_close(a, b)


def test_ewc_fisher_is_the_mean_squared_meta_gradient_of_single_episodes():
    maml = composed(inner_lr=0.4)
    trained_on_the_toy_task(maml, steps=1)
    # the same episodes again, each differentiated on its own by MAML alone
    sampler = EpisodeSampler(maml.context.stream[0].train, 3, 1, 2,
                             derive_seed(0, "regularised.fisher_episodes", 0))
    reference = [torch.zeros_like(p) for p in maml.parameters]
    for _ in range(3):
        maml.model.zero_grad(set_to_none=True)
        maml.inner.meta_gradient(sampler.sample(1))
        for r, p in zip(reference, maml.parameters):
            r += p.grad.square() / 3
    for r, f in zip(reference, maml.fisher(0)):
        torch.testing.assert_close(f, r)


def test_si_integrates_minus_gradient_times_update_along_the_path():
    """With plain SGD as the update, the path integral of one step is lr * g^2."""
    protonet = composed("si", "protonet", train_way=None)
    protonet.begin_task(0)
    gradients = [torch.randn_like(p) for p in protonet.parameters]
    for p, g in zip(protonet.parameters, gradients):
        p.grad = g.clone()

    def sgd():
        with torch.no_grad():
            for p in protonet.parameters:
                p -= 0.1 * p.grad

    protonet._regularised_update(sgd)
    for w, g in zip(protonet.path_integral, gradients):
        torch.testing.assert_close(w, 0.1 * g.square())


def test_ewc_with_a_learner_without_meta_gradients_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="use regulariser si"):
        RegularisedOptions(learner="reptile", regulariser="ewc")
    with pytest.raises(ValueError, match="does not meta-learn on episodes"):
        RegularisedOptions(learner="finetune", regulariser="si")


@pytest.mark.slow  # about 20 s each on 2 busy CPU cores
@pytest.mark.parametrize("learner, regulariser, options", [
    ("maml", "ewc", {"first_order": True}),
    ("reptile", "si", {"train_shots": 3, "meta_step_final": 1.0}),
    ("protonet", "ewc", {"train_way": 6, "train_query": 2}),
])
def test_composed_meta_learners_run_on_the_alphabet_stream(tmp_path, data_root, learner,
                                                           regulariser, options):
    config = validate_config({
        "benchmark": {"name": "omniglot_alphabets", "options": {"n_tasks": 2}},
        "learner": {"name": "regularised", "options": {
            "learner": learner, "options": options, "regulariser": regulariser,
            "strength": 10.0, "fisher_episodes": 2}},
        "model": {"name": "conv4", "options": {"hidden": 8}},
        "protocol": {"steps_per_task": 3, "n_way": 3, "k_shot": 1, "q_query": 2,
                     "meta_batch_size": 2, "eval_episodes": 4, "log_every": 1},
        "device": "cpu", "data_root": str(data_root), "wandb": {"mode": "disabled"},
    })
    results = run(config, run_dir=tmp_path / "run")
    assert results.completed_tasks == 2
    assert [value for _, value in results.curves["penalty"]]  # task 1 was penalised


def test_unknown_wrapped_learner_options_are_a_config_error():
    with pytest.raises(ConfigError, match="inner_lrr"):
        check_options("learner.options", {"learner": "maml", "options": {"inner_lrr": 1}},
                      RegularisedOptions)
