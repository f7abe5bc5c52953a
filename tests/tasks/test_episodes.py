import pytest
import torch

from metalearn.tasks import ClassPool, EpisodeSampler, EvaluationEpisodes
from metalearn.tasks.episodes import gather_episodes, sample_episode_indices


def class_of(pool: ClassPool, flat: torch.Tensor) -> torch.Tensor:
    ends = torch.cumsum(pool.sizes, 0)
    return torch.searchsorted(ends, flat, right=True)


@pytest.fixture
def ragged_pool():
    """Classes of very different sizes; every image holds its own flat index."""
    sizes = torch.tensor([3, 50, 7, 4, 12])
    total = int(sizes.sum())
    images = torch.arange(total, dtype=torch.uint8).view(total, 1, 1).expand(total, 2, 2).clone()
    return ClassPool(images, sizes, tuple(f"c{i}" for i in range(len(sizes))))


@pytest.mark.parametrize("n_way,k_shot,q_query", [(5, 1, 15), (20, 5, 15), (20, 1, 19)])
def test_episode_invariants_on_omniglot(omniglot, n_way, k_shot, q_query):
    pool = omniglot.train
    indices = sample_episode_indices(pool, n_way, k_shot + q_query, 64, torch.Generator().manual_seed(3))
    assert indices.shape == (64, n_way, k_shot + q_query)
    classes = class_of(pool, indices)
    # Every example of a row comes from one class; N distinct classes per episode.
    assert (classes == classes[:, :, :1]).all()
    assert all(len(set(row.tolist())) == n_way for row in classes[:, :, 0])
    # Support and query are disjoint: no image appears twice in an episode.
    assert all(len(set(e.flatten().tolist())) == e.numel() for e in indices)


def test_batch_shapes_labels_and_pixels(omniglot):
    pool = omniglot.train
    indices = sample_episode_indices(pool, 5, 4, 8, torch.Generator().manual_seed(0))
    batch = gather_episodes(pool, indices, k_shot=1)
    assert batch.support_x.shape == (8, 5, 1, 28, 28) and batch.query_x.shape == (8, 15, 1, 28, 28)
    assert batch.support_y[0].tolist() == [0, 1, 2, 3, 4]
    assert batch.query_y[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    expected = pool.images[indices[2, 3, 1]].float() / 255  # episode 2, class 3, first query
    assert torch.equal(batch.query_x[2, 9, 0], expected)
    assert 0.0 <= batch.support_x.min() and batch.support_x.max() <= 1.0


def test_exactly_k_and_q_per_class(omniglot):
    batch = EpisodeSampler(omniglot.test, 20, 5, 15, seed=1).sample(4)
    for y, per_class in ((batch.support_y, 5), (batch.query_y, 15)):
        assert (torch.stack([row.bincount(minlength=20) for row in y]) == per_class).all()


def test_classes_come_from_the_requested_split(omniglot):
    pool = omniglot.test
    indices = sample_episode_indices(pool, 5, 2, 200, torch.Generator().manual_seed(0))
    assert indices.min() >= 0 and indices.max() < len(pool.images)
    drawn = {pool.names[c] for c in class_of(pool, indices).unique().tolist()}
    assert drawn <= set(pool.names) and not any("@" in name for name in drawn)


def test_unequal_class_sizes_never_read_past_a_class(ragged_pool):
    indices = sample_episode_indices(ragged_pool, 3, 3, 500, torch.Generator().manual_seed(0))
    assert (class_of(ragged_pool, indices) == class_of(ragged_pool, indices)[:, :, :1]).all()
    batch = gather_episodes(ragged_pool, indices, k_shot=1)
    pixels = (batch.support_x[:, :, 0, 0, 0] * 255).round().long()
    assert torch.equal(pixels, indices[:, :, 0])
    # The 3-image class is drawn, and then all three of its images are used.
    smallest = class_of(ragged_pool, indices)[:, :, 0] == 0
    assert smallest.any()


def test_same_seed_same_episodes_regardless_of_global_state(omniglot):
    torch.manual_seed(1)
    first = EpisodeSampler(omniglot.train, 5, 1, 15, seed=7).sample(4)
    torch.manual_seed(2)
    torch.rand(100)
    second = EpisodeSampler(omniglot.train, 5, 1, 15, seed=7).sample(4)
    other = EpisodeSampler(omniglot.train, 5, 1, 15, seed=8).sample(4)
    assert torch.equal(first.support_x, second.support_x) and torch.equal(first.query_x, second.query_x)
    assert not torch.equal(first.support_x, other.support_x)


def test_sampler_state_resumes_the_sequence(omniglot):
    sampler = EpisodeSampler(omniglot.train, 5, 1, 5, seed=0)
    sampler.sample(2)
    state = sampler.state_dict()
    expected = sampler.sample(2)
    resumed = EpisodeSampler(omniglot.train, 5, 1, 5, seed=99)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(2).query_x, expected.query_x)


def test_batch_slices_shard_the_tasks(omniglot):
    batch = EpisodeSampler(omniglot.train, 5, 1, 1, seed=0).sample(6)
    shards = [batch[rank::2] for rank in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert torch.equal(shards[1].support_x, batch.support_x[1::2])


@pytest.mark.parametrize(
    "n_way,k_shot,q_query,message",
    [
        (500, 1, 1, "500-way episodes need 500 classes but the test split has 423; use n_way <= 423"),
        (5, 10, 11, "need 21 examples per class but the smallest class of the test split has 20; "
                    "use k_shot \\+ q_query <= 20"),
        (5, 0, 1, "at least 1"),
    ],
)
def test_impossible_requests_state_the_limits(omniglot, n_way, k_shot, q_query, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(omniglot.test, n_way, k_shot, q_query, seed=0, name="the test split")
    with pytest.raises(ValueError, match=message):
        EvaluationEpisodes(omniglot.test, n_way, k_shot, q_query, seed=0, name="the test split")


def test_evaluation_episodes_are_fixed_and_complete(omniglot):
    first = EvaluationEpisodes(omniglot.test, 5, 1, 15, seed=0)
    second = EvaluationEpisodes(omniglot.test, 5, 1, 15, seed=0)
    assert len(first) == 600
    batches = list(first.batches(256))
    assert [len(b) for b in batches] == [256, 256, 88]
    again = list(second.batches(256))
    assert all(torch.equal(a.query_x, b.query_x) for a, b in zip(batches, again))


@pytest.mark.parametrize("batch_size", [0, -4])
def test_a_meta_batch_below_one_episode_is_refused(ragged_pool, batch_size):
    sampler = EpisodeSampler(ragged_pool, 2, 1, 1, seed=0, name="the ragged pool")
    with pytest.raises(ValueError, match=f"batch_size must be at least 1, got {batch_size} "
                                         "\\(batches of episodes from the ragged pool\\)"):
        sampler.sample(batch_size)
    episodes = EvaluationEpisodes(ragged_pool, 2, 1, 1, seed=0, n_episodes=3, name="the ragged pool")
    with pytest.raises(ValueError, match="at least 1.*evaluation episodes from the ragged pool"):
        episodes.batches(batch_size)
