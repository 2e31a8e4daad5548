import pytest
import torch

from atelier.gan.sampling import encode_png, generate, interpolate, load_generator, to_hwc, variations
from atelier.gan.training import new_state, state_to_checkpoint, train

from .conftest import CATEGORIES, tiny_config


@pytest.fixture(scope="module", params=["atelier", "dcgan", "style-seeded"])
def generator(request, tiny_dataset):
    if request.param == "style-seeded":
        cfg = tiny_config(generator="style", sample_noise="seeded")
    else:
        cfg = tiny_config(request.param)
    state = new_state(cfg, CATEGORIES, seed=0)
    train(state, tiny_dataset, steps=2)
    with torch.no_grad():  # noise strengths start at 0: make the noise inputs show in the pixels
        for m in state.G_ema.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
    G, cfg, names = load_generator(state_to_checkpoint(state), "cpu")
    assert names == CATEGORIES
    assert (getattr(G, "noise_size", 0) > 0) == (request.param == "style-seeded")
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


def test_per_category_truncation_is_the_default_and_each_image_its_own(generator):
    G = generator
    labels = [0, 1, 2, 1, 0, 2]
    seeds = list(range(10, 16))
    try:
        G.class_truncation = [1.0, 0.5, 0.8]
        mixed = generate(G, seeds=seeds, labels=labels)  # None: the model's own, per category
        for i, (s, y) in enumerate(zip(seeds, labels, strict=True)):
            # each image is what its category's value gives it, alone or beside other categories
            assert torch.equal(mixed[i], generate(G, seeds=[s], labels=[y])[0])
            uniform = generate(G, seeds=[s], labels=[y], truncation=G.class_truncation[y])[0]
            assert (mixed[i].int() - uniform.int()).abs().max() <= 1
        assert torch.equal(mixed, generate(G, seeds=seeds, labels=labels, truncation=[1.0, 0.5, 0.8]))
        # one value asked for applies to every category
        assert not torch.equal(mixed[1], generate(G, seeds=[11], labels=[1], truncation=1.0)[0])
        path = interpolate(G, 5, 6, label=1, steps=3)
        assert torch.equal(path[0], generate(G, seeds=[5], labels=[1])[0])
        assert variations(G, seed=3, label=1, n=2).shape == (2, 3, 16, 16)
        with pytest.raises(ValueError, match="2 values for 3 categories"):
            generate(G, seeds=[0], labels=[0], truncation=[1.0, 0.5])
        with pytest.raises(ValueError, match="must be in"):
            generate(G, seeds=[0], labels=[0], truncation=[1.0, 1.5, 0.5])
    finally:
        G.class_truncation = None


def test_load_generator_reads_the_sweeps_choice(tiny_dataset):
    state = new_state(tiny_config("atelier"), CATEGORIES, seed=0)
    ckpt = state_to_checkpoint(state)
    G, _, _ = load_generator(ckpt, "cpu")
    assert G.default_truncation == 1.0 and G.class_truncation is None  # a checkpoint from before sweeps
    ckpt.update(default_truncation=0.9, class_truncation=[0.9, 0.7, 0.9])
    G, _, _ = load_generator(ckpt, "cpu")
    assert G.default_truncation == 0.9 and G.class_truncation == [0.9, 0.7, 0.9]
