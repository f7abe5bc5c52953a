import pytest

from metalearn.tasks import omniglot_few_shot, split_mnist


@pytest.fixture(scope="session")
def omniglot(data_root):
    """The MAML-split Omniglot benchmark (train pool with rotations) on the CPU."""
    return omniglot_few_shot("maml", data_root=data_root)[0]


@pytest.fixture(scope="session")
def split(data_root):
    return split_mnist(data_root=data_root)
