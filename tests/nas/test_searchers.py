"""Architecture searchers and their space: proposals stay within the space and its FLOPs cap,
REINFORCE learns from scores, regularised evolution ages out the oldest, and every searcher
proposes the same architectures again from the same seed and scores."""

from __future__ import annotations

import random

import pytest

from metalearn.nas import (
    CONV4,
    ArchitectureSpace,
    EvolutionOptions,
    RandomSearch,
    Reinforce,
    ReinforceOptions,
    RegularisedEvolution,
)

SPACE = ArchitectureSpace()


def in_space(space: ArchitectureSpace, architecture) -> bool:
    return len(architecture) in space.depths and all(
        op in space.operations and width in space.widths and reduce in space.reductions
        for op, width, reduce in architecture)


def test_conv4_is_a_point_of_the_default_space_at_its_flops_cap():
    assert in_space(SPACE, CONV4)
    assert SPACE.flops(CONV4) == SPACE.flops_limit()
    assert SPACE.fits(CONV4)
    wider = tuple((op, 96, reduce) for op, _, reduce in CONV4)
    assert not SPACE.fits(wider)


def test_samples_and_mutations_stay_in_the_space_within_the_cap_and_mutations_change_one_thing():
    rng = random.Random(0)
    limit = SPACE.flops_limit()
    for _ in range(100):
        parent = SPACE.sample(rng)
        child = SPACE.mutate(parent, rng)
        for architecture in (parent, child):
            assert in_space(SPACE, architecture) and SPACE.flops(architecture) <= limit
        assert child != parent
        if len(child) == len(parent):  # one block changed in one of its three choices
            changed = [(a, b) for a, b in zip(parent, child) if a != b]
            assert len(changed) == 1
            assert sum(x != y for x, y in zip(*changed[0])) == 1
        else:  # one block added or removed, the others kept in order
            short, long = sorted((parent, child), key=len)
            assert abs(len(child) - len(parent)) == 1
            assert any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def test_a_cap_no_architecture_meets_is_refused_naming_the_fix():
    space = ArchitectureSpace(max_flops=10, depths=[4], widths=[96], operations=["conv5x5"])
    with pytest.raises(ValueError, match="no architecture within max_flops=10.*raise max_flops"):
        space.sample(random.Random(0))


def toy_score(architecture) -> float:
    """Better with more conv3x3 blocks: a score REINFORCE can learn from in a few steps."""
    return sum(op == "conv3x3" for op, _, _ in architecture) / len(architecture)


def test_reinforce_raises_the_probability_of_the_better_choice_on_a_toy_score():
    space = ArchitectureSpace(depths=[2], operations=["conv3x3", "sep3x3"], widths=[32],
                              reductions=["stride"])
    searcher = Reinforce(space, seed=0, options=ReinforceOptions(lr=0.05))
    best, worst = (("conv3x3", 32, "stride"),) * 2, (("sep3x3", 32, "stride"),) * 2
    before = searcher.probability(best), searcher.probability(worst)
    assert before[0] == pytest.approx(0.25, abs=0.1)  # a fresh controller is near uniform
    for _ in range(60):
        architecture = searcher.propose()
        searcher.observe(architecture, toy_score(architecture))
    assert searcher.probability(best) > before[0] + 0.3
    assert searcher.probability(worst) < before[1]


def test_reinforce_learns_nothing_from_scores_that_are_all_equal():
    searcher = Reinforce(SPACE, seed=0, options=ReinforceOptions(lr=0.05))
    before = searcher.probability(CONV4)
    for _ in range(5):
        searcher.observe(searcher.propose(), 0.5)  # every advantage is 0 against the baseline
    assert searcher.probability(CONV4) == pytest.approx(before)


def test_regularised_evolution_removes_the_oldest_member_not_the_worst():
    searcher = RegularisedEvolution(SPACE, seed=0, options=EvolutionOptions(population=3, sample=2))
    members = [searcher.propose() for _ in range(3)]
    for architecture, score in zip(members, (0.9, 0.1, 0.5)):  # the oldest is the best
        searcher.observe(architecture, score)
    child = searcher.propose()
    searcher.observe(child, 0.2)
    alive = [architecture for architecture, _ in searcher.population]
    assert alive == [members[1], members[2], child]  # the best (oldest) left, the worst stayed


def test_regularised_evolution_mutates_the_tournament_winner_after_the_random_population():
    searcher = RegularisedEvolution(SPACE, seed=1, options=EvolutionOptions(population=4, sample=4))
    members = [searcher.propose() for _ in range(4)]
    for index, architecture in enumerate(members):
        searcher.observe(architecture, float(index == 2))
    child = searcher.propose()  # a tournament of the whole population: member 2 wins
    rng = random.Random(1)
    assert child != members[2]
    assert child in {SPACE.mutate(members[2], rng) for _ in range(2000)}


@pytest.mark.parametrize("make", [
    lambda seed: RandomSearch(SPACE, seed),
    lambda seed: RegularisedEvolution(SPACE, seed, EvolutionOptions(population=3, sample=2)),
    lambda seed: Reinforce(SPACE, seed, ReinforceOptions(lr=0.05)),
], ids=["random", "evolution", "reinforce"])
def test_a_searcher_proposes_the_same_architectures_from_the_same_seed_and_scores(make):
    def proposals(seed: int) -> list:
        searcher, seen = make(seed), []
        for _ in range(8):
            seen.append(searcher.propose())
            searcher.observe(seen[-1], toy_score(seen[-1]))
        return seen
    assert proposals(0) == proposals(0) != proposals(1)
