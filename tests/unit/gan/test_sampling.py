import pytest
import torch

from workers.gan.sampling import encode_png, generate, interpolate, load_generator, to_hwc, variations
from workers.gan.training import new_state, state_to_checkpoint, train

from .conftest import CATEGORIES, tiny_config


@pytest.fixture(scope="module", params=["atelier", "dcgan"])
def generator(request, tiny_dataset):
    state = new_state(tiny_config(request.param), CATEGORIES, seed=0)
    train(state, tiny_dataset, steps=2)
    G, cfg, names = load_generator(state_to_checkpoint(state), "cpu")
    assert names == CATEGORIES
    return G


def test_same_seed_same_image_whatever_the_batch(generator):
    G = generator
    alone = generate(G, seeds=[42], labels=[1])
    batch = generate(G, seeds=[7, 42, 9, 10], labels=[0, 1, 2, 0])
    assert alone.dtype == torch.uint8 and alone.shape == (1, 3, 16, 16)
    assert torch.equal(alone[0], batch[1])  # position and neighbours do not matter
    many = generate(G, seeds=list(range(100)), labels=[i % 3 for i in range(100)])  # spans two micro-batches
    assert torch.equal(many[42], generate(G, seeds=[42], labels=[0])[0])
    assert torch.equal(generate(G, seeds=[42], labels=[1]), alone)
    assert not torch.equal(generate(G, seeds=[43], labels=[1]), alone)
    # Another micro-batch size may move a pixel by one level (float summation order), never more.
    other = generate(G, seeds=[7, 42, 9, 10], labels=[0, 1, 2, 0], batch_size=3)
    assert (other.int() - batch.int()).abs().max() <= 1


def test_per_category_output_and_helpers(generator):
    G = generator
    labels = [c for c in range(3) for _ in range(2)]
    imgs = generate(G, seeds=list(range(6)), labels=labels, truncation=0.7)
    assert imgs.shape == (6, 3, 16, 16)
    assert to_hwc(imgs).shape == (6, 16, 16, 3)
    assert encode_png(imgs[0], text={"seed": 0}).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="labels"):
        generate(G, seeds=[0], labels=[3])


def test_interpolation_ends_match_the_seeds(generator):
    G = generator
    path = interpolate(G, 5, 6, label=2, steps=4)
    assert path.shape == (4, 3, 16, 16)
    assert torch.equal(path[0], generate(G, seeds=[5], labels=[2])[0])
    assert torch.equal(path[-1], generate(G, seeds=[6], labels=[2])[0])


def test_variations_are_reproducible_and_near(generator):
    G = generator
    a = variations(G, seed=3, label=0, n=3, strength=0.2)
    assert torch.equal(a, variations(G, seed=3, label=0, n=3, strength=0.2))
    assert torch.equal(
        variations(G, seed=3, label=0, n=1, strength=0.0)[0], generate(G, seeds=[3], labels=[0])[0]
    )
