from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from catsdogs_helpers import config, devices, explaining, models, plotting, training

CPU = torch.device("cpu")


def _corner_images(n: int, rng: np.random.Generator, corner: str = "top-left", size: int = 48):
    """Noise images; every second one (class 1) has a bright 12 px square near ``corner``."""
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        row, col = rng.integers(2, 10, 2)
        if corner == "bottom-right":
            row, col = size - 12 - row, size - 12 - col
        images[i, row : row + 12, col : col + 12] = 255
    return images, labels


def _peaks_in(maps: np.ndarray, quadrant: int) -> float:
    """The share of maps whose mean over ``quadrant`` (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) is strictly the largest of the four."""
    h, w = maps.shape[1] // 2, maps.shape[2] // 2
    parts = (maps[:, :h, :w], maps[:, :h, w:], maps[:, h:, :w], maps[:, h:, w:])
    means = np.stack([part.mean(axis=(1, 2)) for part in parts], axis=1)
    others = np.delete(means, quadrant, axis=1)
    return float((means[:, quadrant] > others.max(axis=1)).mean())


@pytest.fixture(scope="module")
def corner_model() -> nn.Module:
    """ResNet-9 trained for a few steps to tell images with a square in the top-left corner
    from pure noise."""
    training.seed_everything(0)
    rng = np.random.default_rng(0)
    model = models.create_model("resnet9", 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(12):
        images, labels = _corner_images(32, rng)
        logits = model(devices.to_model_input(torch.from_numpy(images), CPU))
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


def test_grad_cam_points_at_the_corner_that_holds_the_evidence(corner_model):
    rng = np.random.default_rng(1)
    images, labels = _corner_images(32, rng)
    corner_model.eval()
    with torch.no_grad():
        predicted = corner_model(devices.to_model_input(torch.from_numpy(images), CPU)).argmax(1)
    assert (predicted.numpy() == labels).mean() >= 0.9, "the model learned the task"

    squares = images[labels == 1]
    maps = explaining.grad_cam_images(corner_model, squares, CPU)
    assert maps.shape == (len(squares), 48, 48)
    assert _peaks_in(maps, 0) >= 0.8, "class 1's evidence is in the top-left corner"

    # The map follows the evidence, not a fixed place: the square moved to the opposite corner
    # (never seen in training) moves the map with it.
    moved, moved_labels = _corner_images(32, rng, corner="bottom-right")
    maps = explaining.grad_cam_images(corner_model, moved[moved_labels == 1], CPU, target=[1] * 16)
    assert _peaks_in(maps, 3) >= 0.8


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", config.MODEL_NAMES)
def test_every_architecture_gets_a_spatial_layer_and_maps(name):
    torch.manual_seed(0)
    model = models.create_model(name, 2)
    x = devices.to_model_input(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8), CPU)
    outputs = []
    layer = explaining.find_target_layer(model, x[:1])
    with layer.register_forward_hook(lambda m, i, o: outputs.append(o.shape)), torch.no_grad():
        model.eval()(x)
    assert len(outputs[-1]) == 4 and outputs[-1][-1] * outputs[-1][-2] > 1, outputs[-1]
    maps = explaining.grad_cam(model, x, layer=layer)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1


def test_find_target_layer_picks_the_last_feature_map_before_pooling():
    model = models.create_model("resnet9", 2)
    x = torch.zeros(1, 3, 64, 64)
    assert explaining.find_target_layer(model, x) is model.features[8]  # the last residual
    resnet = models.create_model("resnet18", 2)
    assert explaining.find_target_layer(resnet, x) is resnet.layer4
    with pytest.raises(ValueError, match="spatial feature map"):
        explaining.find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), x[..., :2, :2])


def test_grad_cam_leaves_the_model_as_it_found_it(corner_model):
    model = copy.deepcopy(corner_model).train()
    model.features[0].eval()  # a mixed state must survive too
    flags = [m.training for m in model.modules()]
    images, _ = _corner_images(4, np.random.default_rng(5))
    x = devices.to_model_input(torch.from_numpy(images), CPU)
    assert x.is_contiguous(memory_format=torch.channels_last)
    maps = explaining.grad_cam(model, x)
    assert [m.training for m in model.modules()] == flags
    assert _hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="one class index"):
        explaining.grad_cam(model, x, target=[0, 5, 0, 1])
    assert [m.training for m in model.modules()] == flags, "restored after an error"
    assert _hook_count(model) == 0, "hooks removed after an error"
    # Computed in evaluation mode (running batch-norm statistics), whatever the model's mode.
    np.testing.assert_allclose(explaining.grad_cam(model.eval(), x), maps, atol=1e-5)
    assert maps.max() == 1


def _cam_by_hand(activations: torch.Tensor, logits: torch.Tensor, target: list[int]):
    """Grad-CAM written out for ``activations`` (a leaf) and the logits computed from them."""
    score = logits[torch.arange(len(target)), torch.tensor(target)].sum()
    (gradients,) = torch.autograd.grad(score, activations)
    cam = torch.relu((gradients.mean((2, 3), keepdim=True) * activations).sum(1)).detach()
    cam = nn.functional.interpolate(cam[:, None], size=(48, 48), mode="bilinear")[:, 0]
    return (cam / cam.amax((1, 2), keepdim=True)).numpy()


def test_grad_cam_matches_the_formula_computed_by_hand(corner_model):
    model = corner_model.eval()
    images, labels = _corner_images(4, np.random.default_rng(2))
    x = devices.to_model_input(torch.from_numpy(images), CPU)
    activations = model.features[:9](x).detach().requires_grad_()  # up to the last residual
    logits = model.fc(model.features[9:](activations)) * model.scale
    expected = _cam_by_hand(activations, logits, labels.tolist())
    assert np.isfinite(expected).all(), "every image has evidence for its class"
    np.testing.assert_allclose(explaining.grad_cam(model, x, labels), expected, atol=1e-5)


def test_grad_cam_through_inplace_relus_and_frozen_weights(corner_model):
    model = copy.deepcopy(corner_model).eval()
    images, labels = _corner_images(8, np.random.default_rng(3))
    x = devices.to_model_input(torch.from_numpy(images[labels == 1]), CPU)
    with torch.no_grad():
        before = model(x)
    # A batch-norm whose output an in-place ReLU overwrites right after: the map must be made
    # of the values before the ReLU, and the model's output must not change.
    block = model.features[6]
    activations = block[1](block[0](model.features[:6](x))).detach().requires_grad_()
    logits = model.fc(model.features[7:](torch.relu(activations))) * model.scale
    expected = _cam_by_hand(activations, logits, [1, 1, 1, 1])
    assert np.isfinite(expected).all()
    maps = explaining.grad_cam(model, x, [1, 1, 1, 1], block[1])
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    for p in model.parameters():
        p.requires_grad_(False)
    frozen = explaining.grad_cam(model, x, [1, 1, 1, 1], block[1])
    np.testing.assert_allclose(frozen, expected, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)


def test_grad_cam_images_checks_its_input_and_batches(corner_model):
    images, _ = _corner_images(5, np.random.default_rng(4))
    whole = explaining.grad_cam_images(corner_model, images, CPU)
    assert (whole.max(axis=(1, 2)) == 1).all(), "each map scaled to its peak"
    batched = explaining.grad_cam_images(corner_model, images, CPU, batch_size=2)
    np.testing.assert_allclose(batched, whole, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        explaining.grad_cam_images(corner_model, images.astype(np.float32), CPU)


def test_show_grad_cam_titles_like_the_predictions():
    images = np.zeros((3, 48, 48, 3), dtype=np.uint8)
    maps = np.random.default_rng(0).random((3, 48, 48)).astype(np.float32)
    table = pd.DataFrame(
        {"predicted": ["Cat", "Dog", "Dog"], "confidence": [0.9, 0.8, 0.7],
         "label": ["Cat", "Cat", ""]}
    )  # fmt: skip
    fig = plotting.show_grad_cam(images, maps, table, ncols=2)
    axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in axes] == ["Cat 90%", "Dog 80%\n(is Cat)", "Dog 70%"]
    colors = [ax.title.get_color() for ax in axes]
    assert colors == [plotting.RIGHT, plotting.WRONG, "black"]
    assert all(len(ax.images) == 2 for ax in axes), "photo and heat map"
    with pytest.raises(ValueError, match="one heat map per image"):
        plotting.show_grad_cam(images, maps[:2])
