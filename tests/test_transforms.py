from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from catsdogs_helpers import config, datasets, transforms


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (rng.random((150, 200, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("augment", config.AUGMENTS)
def test_pipelines_give_uint8_crops_of_the_requested_size(image, augment):
    out = transforms.PIPELINES[augment](96, 112, seed=0)(image=image)["image"]
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8


def test_augment_names_a_pipeline_or_a_saved_file(image):
    cfg = config.make_config(AUGMENT="tutorial", IMAGE_SIZE=64)
    named = transforms.train_pipeline(cfg)
    wanted = transforms.tutorial_pipeline(64, cfg.cache_size)
    assert transforms.describe_pipeline(named) == transforms.describe_pipeline(wanted)
    mine = transforms.A.Compose([*named.transforms, transforms.A.VerticalFlip(p=0.5)])
    path = transforms.save_pipeline(mine, "mine.json")
    assert path == config.runs_dir() / "mine.json"
    loaded = transforms.train_pipeline(config.make_config(AUGMENT="mine.json"))
    assert transforms.describe_pipeline(loaded) == transforms.describe_pipeline(mine)
    a = transforms.train_pipeline(config.make_config(AUGMENT="mine.json", SEED=3))
    b = transforms.train_pipeline(config.make_config(AUGMENT="mine.json", SEED=3))
    assert np.array_equal(a(image=image)["image"], b(image=image)["image"]), "seeded by SEED"
    with pytest.raises(FileNotFoundError, match="AUGMENT='gone.json': there is no pipeline file"):
        transforms.train_pipeline(config.make_config(AUGMENT="gone.json"))


def test_the_tutorial_affine_really_moves_pixels(image):
    for name, step in transforms.one_at_a_time(transforms.tutorial_pipeline(128, 160)):
        if name == "Affine":
            resized = transforms.A.SmallestMaxSize(max_size=160)(image=image)["image"]
            assert not np.array_equal(step(image=image)["image"], resized)
            break
    else:
        pytest.fail("the tutorial pipeline has no Affine step")


def test_same_seed_same_draws_other_seed_other_draws(image):
    a = transforms.tutorial_pipeline(96, 112, seed=3)
    b = transforms.tutorial_pipeline(96, 112, seed=3)
    c = transforms.tutorial_pipeline(96, 112, seed=4)
    draws_a = [a(image=image)["image"] for _ in range(4)]
    draws_b = [b(image=image)["image"] for _ in range(4)]
    draws_c = [c(image=image)["image"] for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(draws_a, draws_b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(draws_a, draws_c, strict=True))


def test_evaluation_is_deterministic(image):
    tf = transforms.eval_transforms(112, 128)
    assert np.array_equal(tf(image=image)["image"], tf(image=image)["image"])


class _Images(torch.utils.data.Dataset):
    def __init__(self, image, transform):
        self.image, self.transform = image, transform

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(image=self.image)["image"], 0


def _epochs(image, seed, workers):
    ds = _Images(image, transforms.light_pipeline(96, 112, seed=0))
    loader = datasets.make_loader(ds, batch_size=4, shuffle=False, num_workers=workers, seed=seed)
    return [torch.cat([b[0] for b in loader]) for _ in range(2)]


def test_loader_workers_are_seeded_reproducibly_and_differ_by_epoch(image):
    first = _epochs(image, seed=1, workers=2)
    again = _epochs(image, seed=1, workers=2)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1]), "each epoch draws new augmentations"
    assert not torch.equal(first[0][:4], first[0][4:]), "workers do not repeat each other"


def test_progressive_resizing_shrinks_whole_batches_on_the_device():
    from catsdogs_helpers import devices

    batch = torch.zeros((2, 96, 96, 3), dtype=torch.uint8)
    batch[:, :, :48] = 255  # the left half bright
    full = devices.to_model_input(batch, torch.device("cpu"))
    small = devices.to_model_input(batch, torch.device("cpu"), size=64)
    assert small.shape == (2, 3, 64, 64) and small.is_contiguous(memory_format=torch.channels_last)
    bright = full[:, :, :1, :1].expand(2, 3, 64, 30)
    torch.testing.assert_close(small[..., :30], bright, rtol=0, atol=1e-4)  # still bright
    assert small.mean().item() == pytest.approx(full.mean().item(), abs=1e-3), "same content"
    assert devices.to_model_input(batch, torch.device("cpu"), size=96).equal(full)


def _window(image: torch.Tensor, out: torch.Tensor) -> tuple[int, int, bool] | None:
    """Where ``out`` was cut from ``image`` (top, left, flipped), or None."""
    size = out.shape[0]
    for top in range(image.shape[0] - size + 1):
        for left in range(image.shape[1] - size + 1):
            window = image[top : top + size, left : left + size]
            for flipped, candidate in ((False, window), (True, window.flip(1))):
                if torch.equal(candidate, out):
                    return top, left, flipped
    return None


def test_crop_and_flip_on_the_device_cuts_a_window_flipped_half_the_time():
    images = torch.randint(0, 256, (96, 14, 12, 3), dtype=torch.uint8)
    out = datasets.crop_and_flip(images, 8, torch.Generator().manual_seed(0))
    assert out.shape == (96, 8, 8, 3) and out.dtype == torch.uint8
    found = [_window(image, crop) for image, crop in zip(images, out, strict=True)]
    assert None not in found, "every output is a window of its own input"
    tops, lefts, flips = zip(*found, strict=True)
    assert set(tops) == set(range(7)) and set(lefts) == set(range(5)), "every offset is drawn"
    assert 30 < sum(flips) < 66, "flipped about half of the time"
    again = datasets.crop_and_flip(images, 8, torch.Generator().manual_seed(0))
    other = datasets.crop_and_flip(images, 8, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_only_the_light_pipeline_is_moved_to_the_device():
    light = transforms.light_pipeline(96, 110)
    assert datasets.crop_flip_size(light, 110) == 96
    assert datasets.crop_flip_size(light, 128) is None, "its resize would change the cache"
    assert datasets.crop_flip_size(transforms.tutorial_pipeline(96, 110), 110) is None
    assert datasets.crop_flip_size(transforms.no_augmentation(96, 110), 110) is None
    rare = A.Compose([*light.transforms[:2], A.HorizontalFlip(p=0.2)])
    assert datasets.crop_flip_size(rare, 110) is None
    assert datasets.crop_flip_size(None, 110) is None
    padded = A.Compose([light.transforms[0], A.RandomCrop(128, 128, pad_if_needed=True),
                        light.transforms[2]])  # fmt: skip
    assert datasets.crop_flip_size(padded, 110) is None, "a crop larger than the cache"
