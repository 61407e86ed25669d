import pytest
import torch

from genprior.baselines import BASELINES, herding_select, kcenter_select, make_baseline, random_real
from genprior.data import load_dataset
from genprior.errors import GenpriorError, UnknownNameError

from conftest import subset


@pytest.fixture(scope="module")
def train():
    return load_dataset("digits", "train")


def _rows_in(images, pool):
    flat = pool.flatten(1)
    return all(bool((flat == img.flatten()).all(1).any()) for img in images)


def test_random_picks_real_images_per_class(train):
    s = random_real(train, ipc=3, seed=0)
    assert s.labels.tolist() == [c for c in range(10) for _ in range(3)]
    for c in range(10):
        assert _rows_in(s.images[s.labels == c], train.images_of_class(c))
    assert torch.equal(random_real(train, ipc=3, seed=0).images, s.images)
    assert not torch.equal(random_real(train, ipc=3, seed=1).images, s.images)
    assert len(set(s.config["train_indices"])) == 30


def test_herding_tracks_the_mean_better_than_random():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(500, 16, generator=g) * torch.linspace(0.2, 3, 16)
    mu = feats.mean(0)
    herd = feats[herding_select(feats, 10)].mean(0)
    rand_err = torch.stack([((feats[torch.randperm(500, generator=g)[:10]].mean(0) - mu) ** 2).sum() for _ in range(50)])
    assert ((herd - mu) ** 2).sum() < rand_err.min()
    assert len(set(herding_select(feats, 10).tolist())) == 10


def test_kcenter_covers_every_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10], [5, 20]])
    feats = torch.cat([c + 0.1 * torch.randn(40, 2, generator=g) for c in centres])
    picked = kcenter_select(feats, 5)
    assert sorted((picked // 40).tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", ["herding", "kcenter"])
def test_embedding_baselines_write_valid_sets(train, name):
    small = subset(train, 20)
    s = make_baseline(name, small, ipc=2, seed=0, embed_epochs=1)
    assert s.ipc == 2 and s.method == name and "embedding" in s.config
    for c in range(10):
        assert _rows_in(s.images[s.labels == c], small.images_of_class(c))


def test_bad_ipc_and_name(train):
    with pytest.raises(GenpriorError, match="at least 1"):
        random_real(train, ipc=0)
    with pytest.raises(GenpriorError, match="exceeds the smallest class"):
        random_real(train, ipc=100000)
    with pytest.raises(UnknownNameError, match="herding"):
        BASELINES.get("best")
