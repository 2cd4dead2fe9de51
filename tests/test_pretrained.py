"""A pretrained start: loading ImageNet weights without a download, and the fine-tuning
schedule (the new head alone first, then all layers, the pretrained ones at a lower rate).

Nothing here reaches the internet: the "ImageNet weights" are a randomly initialised
torchvision ResNet-18 saved to a file, and torchvision's download is made to fail."""

from __future__ import annotations

import copy
import dataclasses
import urllib.error

import pytest
import torch
import torchvision

from catsdogs_helpers import config, models, training, transforms, workflow
from catsdogs_helpers.tools import series


@pytest.fixture
def fake_imagenet(tmp_path):
    """A state dict shaped like torchvision's ImageNet ResNet-18 (random, seeded), saved."""
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch hub cache, and a download that fails as it does without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def _assert_backbone_is(model, state):
    mine = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert len(backbone) > 100
    for key in backbone:
        torch.testing.assert_close(mine[key], state[key], msg=key)


def test_weights_path_loads_the_file_and_a_new_head(fake_imagenet, offline):
    path, state = fake_imagenet
    model = models.create_model("resnet18", 2, pretrained=True, weights_path=path)
    _assert_backbone_is(model, state)
    assert models.head_of(model) is model.fc and model.fc.out_features == 2
    scratch = models.create_model("resnet18", 2)
    assert not torch.equal(scratch.conv1.weight, model.conv1.weight), "not a fresh model"


def test_the_torch_hub_cache_is_used_without_a_download(fake_imagenet, offline):
    path, state = fake_imagenet
    cached = models.hub_weights_file("resnet18")
    assert cached.parent == offline and cached.name == "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    _assert_backbone_is(models.create_model("resnet18", 2, pretrained=True), state)


def test_no_network_and_no_file_says_where_to_put_it(offline):
    with pytest.raises(models.WeightsError) as caught:
        models.create_model("resnet18", 2, pretrained=True)
    message = str(caught.value)
    assert "WEIGHTS_PATH" in message and str(offline) in message
    assert "torch.hub.get_dir()" in message and "resnet18-f37072fd.pth" in message
    assert "URLError" in message


def test_weights_of_another_architecture_are_refused_by_name(tmp_path, offline):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(models.WeightsError, match=r"resnet34\.pth does not fit resnet18"):
        models.create_model("resnet18", 2, pretrained=True, weights_path=path)
    with pytest.raises(models.WeightsError, match="is not a file"):
        models.create_model("resnet18", 2, pretrained=True, weights_path=tmp_path / "none.pth")
    with pytest.raises(ValueError, match='MODEL_NAME="resnet18"'):
        models.create_model("resnet9", 2, pretrained=True)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "efficientnet_b0"])
def test_the_weights_were_made_with_our_normalisation_and_size(name):
    """to_model_input's ImageNet mean and std are the weights' own: nothing to plumb."""
    preset = models.imagenet_weights(name).transforms()
    assert tuple(preset.mean) == transforms.IMAGENET_MEAN
    assert tuple(preset.std) == transforms.IMAGENET_STD
    assert preset.crop_size == [224], "the size to fine-tune them at (WEIGHTS_PATH, 224 px)"


@pytest.mark.parametrize("name", config.MODEL_NAMES)
def test_the_head_is_the_new_output_layer(name):
    model = models.create_model(name, 3)
    head = models.head_of(model)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 3
    assert head is list(model.modules())[-1], "the last layer, the one create_model replaced"


def test_the_pretrained_recipe_trains_the_head_on_lite0_and_a_scratch_run_is_unchanged():
    recipe = series.read_recipe("pretrained.yaml")
    cfg = config.make_config(**recipe)
    assert (cfg.model_name, cfg.image_size, cfg.epochs) == ("efficientnet_lite0", 192, 1)
    assert cfg.fine_tuning == config.FineTuning(head_epochs=1, backbone_lr_scale=0.1)
    assert cfg.sizes() == (192,), "one size throughout, no progressive resizing"
    assert not training.trains_backbone(cfg.fine_tuning, 0), "EPOCHS 1: the head alone"
    longer = config.make_config(**{**recipe, "EPOCHS": 3})
    assert [training.trains_backbone(longer.fine_tuning, e) for e in range(3)] == [
        False, True, True
    ]  # fmt: skip
    scratch = config.make_config(MODEL_NAME="resnet18", EPOCHS=2, IMAGE_SIZE=224)
    assert scratch.fine_tuning is None and training.trains_backbone(scratch.fine_tuning, 0)
    with pytest.raises(config.ParameterError, match="WEIGHTS_PATH=.* PRETRAINED=False"):
        config.make_config(WEIGHTS_PATH="w.pth")


def test_a_weights_path_that_is_no_file_stops_before_any_work(tmp_path):
    missing = str(tmp_path / "resnet18.pth")
    with pytest.raises(config.ParameterError, match="is not a file: give the absolute path"):
        config.make_config(PRETRAINED=True, MODEL_NAME="resnet18", WEIGHTS_PATH=missing)


@pytest.fixture
def pretrained_run(petimages, fake_imagenet, monkeypatch):
    """A pretrained ResNet-18 run on the synthetic photos: 48 px, 2 epochs, head first."""
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(petimages.parent))
    recipe = series.read_recipe("pretrained.yaml")
    tiny = {"RUN_NAME": "p", "WEIGHTS_PATH": str(fake_imagenet[0]), "IMAGE_SIZE": 48}
    tiny |= {"MODEL_NAME": "resnet18", "EPOCHS": 2, "LR": 0.02}  # the head, then all layers
    cfg = config.make_config(**{**recipe, **tiny, "BATCH_SIZE": 16, "NUM_WORKERS": 0})
    loaders, cfg = workflow.prepare_training(cfg, progress=False)
    return cfg, loaders


def _recorder(changes: list):
    """An epoch step that records, per epoch, how far head and backbone moved and the
    learning rate of each parameter group (head groups first)."""

    def step(model, loader, optimizer, loss_fn, device, **kwargs):
        head = {id(p) for p in models.head_of(model).parameters()}
        before = {id(p): p.detach().clone() for p in model.parameters()}
        result = training.train_one_epoch(model, loader, optimizer, loss_fn, device, **kwargs)
        moved = {id(p): (p.detach() - before[id(p)]).abs().max().item() for p in model.parameters()}
        changes.append({
            "head": max(v for k, v in moved.items() if k in head),
            "backbone": max(v for k, v in moved.items() if k not in head),
            "lrs": [group["lr"] for group in optimizer.param_groups],
            "groups": [{id(p) in head for p in g["params"]} for g in optimizer.param_groups],
        })  # fmt: skip
        return result

    return step


def _fit(cfg, loaders, step):
    training.seed_everything(cfg.seed)
    model = models.create_model(cfg.model_name, 2, pretrained=True, weights_path=cfg.weights_path)
    optimizer = training.make_optimizer(model, cfg)
    training.fit(
        model,
        loaders["train"],
        loaders["val"],
        cfg,
        optimizer=optimizer,
        scheduler=training.make_scheduler(optimizer, cfg, len(loaders["train"])),
        class_names=["Cat", "Dog"],
        device=torch.device("cpu"),
        progress=False,
        train_epoch=step,
    )
    return model


def test_the_head_trains_alone_first_then_everything_at_a_lower_rate(pretrained_run):
    cfg, loaders = pretrained_run
    changes = []
    model = _fit(cfg, loaders, _recorder(changes))
    head_epoch, all_epoch = changes
    assert head_epoch["backbone"] == 0 and head_epoch["head"] > 0
    assert all_epoch["backbone"] > 0 and all_epoch["head"] > 0
    assert all(p.requires_grad for p in model.parameters()), "all layers train at the end"
    assert all_epoch["groups"] == [{True}, {True}, {False}, {False}], "head, then backbone"
    head_lr, _, backbone_lr, _ = all_epoch["lrs"]
    assert backbone_lr == pytest.approx(head_lr * cfg.fine_tuning.backbone_lr_scale)
    saved = training.load_checkpoint(cfg.run_dir / "last.pt")["settings"]
    assert saved["fine_tuning"] == {"head_epochs": 1, "backbone_lr_scale": 0.1}


def test_a_run_resumed_after_the_head_epoch_trains_everything(pretrained_run, monkeypatch):
    cfg, loaders = pretrained_run
    real_save = training._atomic_save

    def crash_after_first_epoch(obj, path):
        real_save(obj, path)
        if path.name == "last.pt" and obj["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training, "_atomic_save", crash_after_first_epoch)
    first, resumed = [], []
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, loaders, _recorder(first))
    monkeypatch.setattr(training, "_atomic_save", real_save)
    _fit(dataclasses.replace(cfg, resume=True), loaders, _recorder(resumed))
    assert len(first) == 1 and first[0]["backbone"] == 0, "interrupted after the head epoch"
    assert len(resumed) == 1 and resumed[0]["backbone"] > 0, "the phase follows the epoch"
    last = training.load_checkpoint(cfg.run_dir / "last.pt")
    assert last["finished"] and [row["epoch"] for row in last["history"]] == [1, 2]


def test_the_head_only_epoch_fits_the_new_layer_to_convergence(pretrained_run, monkeypatch):
    """fit's default head-only epoch (fit_head): the frozen layers unchanged, buffers too;
    the new layer at the minimum of the cross-entropy plus its weight decay on the features,
    lower than an SGD epoch gets; the schedule stepped once per batch, as in an SGD epoch."""
    cfg, loaders = pretrained_run
    model = models.create_model(cfg.model_name, 2, pretrained=True, weights_path=cfg.weights_path)
    training.set_trainable(model, cfg.fine_tuning, epoch=0)
    optimizer = training.make_optimizer(model, cfg)
    scheduler = training.make_scheduler(optimizer, cfg, len(loaders["train"]))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    sgd = copy.deepcopy(model)
    cpu = torch.device("cpu")
    sgd_optimizer = training.make_optimizer(sgd, cfg)
    training.train_one_epoch(sgd, loaders["train"], sgd_optimizer, loss_fn, cpu, progress=False)
    seen, converge = [], training._converge
    monkeypatch.setattr(training, "_converge", lambda *a: (seen.append(a[1:3]), converge(*a)))
    assert cfg.label_smoothing > 0, "the recipe smooths the labels; the fit does not"
    result = training.fit_head(
        model, loaders["train"], optimizer, loss_fn, cpu, scheduler=scheduler, progress=False
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items()), "frozen"
    assert scheduler.last_epoch == len(loaders["train"])
    (features, labels), head = seen[0], models.head_of(model)

    def objective(layer):  # the plain cross-entropy: label smoothing hurts a converged fit
        loss = torch.nn.functional.cross_entropy(layer(features), labels)
        return loss + cfg.weight_decay / 2 * layer.weight.square().sum()

    head.zero_grad()
    objective(head).backward()
    gradient = max(p.grad.abs().max().item() for p in head.parameters())
    assert gradient < 1e-3, f"not at the minimum: gradient up to {gradient:.1e}"
    assert objective(head).item() < objective(models.head_of(sgd)).item()
    assert result.images == len(labels) and 0 <= result.accuracy <= 1


def test_a_run_says_its_head_was_fitted_so_an_sgd_head_run_is_not_taken_for_it(pretrained_run):
    cfg, loaders = pretrained_run
    model = models.create_model(cfg.model_name, 2, pretrained=True, weights_path=cfg.weights_path)
    optimizer = training.make_optimizer(model, cfg)
    parts = training.TrainingParts(optimizer, None, None, torch.nn.CrossEntropyLoss())
    settings = training.run_settings(cfg, loaders["train"], parts, training.train_one_epoch, model)
    assert settings["step"] == "catsdogs_helpers.training.train_one_epoch + fit_head"
    own = training.run_settings(cfg, loaders["train"], parts, _recorder([]), model)["step"]
    assert "fit_head" not in own, "your own step trains the head as it trains the rest"
    scratch = dataclasses.replace(cfg, pretrained=False)
    step = training.run_settings(scratch, loaders["train"], parts, training.train_one_epoch, model)
    assert step["step"] == "catsdogs_helpers.training.train_one_epoch"
