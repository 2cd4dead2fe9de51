"""Folding batch norms into convolutions for inference: the same outputs, fewer layers; the
whitened first layer of ResNet-9."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from catsdogs_helpers import config, devices, evaluation, models, training, transforms


def _with_real_statistics(model: nn.Module) -> nn.Module:
    """Batch norms as after training (default ones fold to the identity and prove little)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["resnet9", "efficientnet_lite0", "resnet18"])
def test_folded_model_has_no_batch_norm_and_the_same_outputs(name):
    model = _with_real_statistics(models.create_model(name, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = models.fold_batch_norms(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 80, 80)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    after = model.state_dict()  # the model itself is left as it was
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0


class _ConvUsedTwice(nn.Module):
    """A convolution whose output feeds a batch norm and also a skip: no fold is exact."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean((2, 3))


def test_a_fold_that_would_change_the_outputs_is_not_made():
    model = _with_real_statistics(_ConvUsedTwice())
    kept = models.fold_batch_norms(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in kept.modules())
    assert not kept.training


def test_evaluate_gives_what_the_unfolded_model_gives():
    model = _with_real_statistics(models.create_model("resnet9", 2))
    images = torch.randint(0, 256, (10, 64, 64, 3), dtype=torch.uint8)  # as loaders give
    labels = torch.tensor([0, 1] * 5)
    result = training.evaluate(model, [(images, labels)], torch.device("cpu"))
    with torch.no_grad():
        logits = model(training.to_model_input(images, torch.device("cpu")))
    nll = nn.functional.cross_entropy(logits, labels).item()
    assert result.loss == pytest.approx(nll, rel=1e-4)
    assert result.accuracy == (logits.argmax(1) == labels).float().mean().item()


def test_inference_in_chunks_gives_the_whole_batch_outputs(monkeypatch):
    model = _with_real_statistics(models.create_model("resnet9", 2))
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    x = torch.randn(7, 3, 32, 32)
    monkeypatch.setattr(models, "CPU_CHUNK_PIXELS", 3 * 32 * 32)  # chunks of 3 photos
    with torch.no_grad():
        torch.testing.assert_close(models.forward_in_chunks(model, x), model(x))
    assert calls == [3, 3, 1, 7]  # in chunks, then the whole batch
    models.forward_in_chunks(model.train(), x)
    assert calls[4:] == [7], "in training mode, where batch norms use the batch: whole"


def _batch_sizes_seen(model: nn.Module) -> list[int]:
    """The batch size of every forward of ``model`` and of its copies (folded ones too)."""
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    return seen


def test_evaluation_and_prediction_run_in_chunks_on_a_cpu(monkeypatch):
    model = _with_real_statistics(models.create_model("resnet9", 2))
    seen = _batch_sizes_seen(model)
    monkeypatch.setattr(models, "CPU_CHUNK_PIXELS", 2 * 32 * 32)
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    batches, cpu = [(images, torch.arange(5) % 2)], torch.device("cpu")
    training.evaluate(model, batches, cpu)
    assert seen[-3:] == [2, 2, 1] and 5 not in seen, "evaluate: chunks of 2, never all 5"
    seen.clear()
    plain = transforms.Preprocessing(cache_size=32, eval_size=32, tta="none")
    evaluation.predict(model, batches, cpu, plain)
    assert seen[-3:] == [2, 2, 1] and 5 not in seen, "predict: chunks of 2, never all 5"


def test_a_pretrained_start_features_are_the_same_in_chunks(monkeypatch):
    model = _with_real_statistics(models.create_model("efficientnet_lite0", 2))
    batches = [(torch.randint(0, 256, (5, 40, 40, 3), dtype=torch.uint8), torch.arange(5) % 2)]
    cpu = torch.device("cpu")
    whole = training.head_inputs(model, batches, cpu)
    monkeypatch.setattr(models, "CPU_CHUNK_PIXELS", 2 * 40 * 40)
    seen = _batch_sizes_seen(model)
    chunked = training.head_inputs(model, batches, cpu)
    assert seen[-3:] == [2, 2, 1] and 5 not in seen, "in chunks of 2"
    assert whole[0][0].shape == chunked[0][0].shape == (5, 1280)
    torch.testing.assert_close(chunked[0][0], whole[0][0], rtol=1e-4, atol=1e-5)


def _photo_like(n: int = 32, size: int = 40):
    """uint8 images whose neighbouring pixels and colour channels go together, as in photos."""
    generator = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=generator), size=size)
    x = 0.7 * x.mean(1, keepdim=True) + 0.3 * x
    return (x * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _first_layer_covariance(weight, conv, images):
    x = devices.to_model_input(torch.from_numpy(images), torch.device("cpu"), channels_last=False)
    out = F.conv2d(x, weight, stride=conv.stride, padding=conv.padding)
    return torch.cov(out.transpose(0, 1).reshape(len(weight), -1))


def test_the_whitened_first_layer_decorrelates_the_patches_and_is_not_trained():
    images = _photo_like()
    model = models.create_model("resnet9", 2)
    conv = model.first_conv
    half = conv.out_channels // 2
    before = _first_layer_covariance(conv.weight[:half].detach(), conv, images)
    assert models.whiten_first_layer(model, images)
    torch.testing.assert_close(conv.weight[half:], -conv.weight[:half])  # and the negatives
    after = _first_layer_covariance(conv.weight[:half], conv, images)
    off = ~torch.eye(half, dtype=torch.bool)
    correlation = before / before.diag().sqrt().outer(before.diag().sqrt())
    assert correlation[off].abs().max() > 0.5, "random filters see correlated outputs"
    assert after[off].abs().max() < 0.02, "whitened: uncorrelated"
    assert 0.99 < after[0, 0] <= 1.0, "unit variance where the patches vary most"
    assert (after.diag().diff() <= 1e-6).all(), "the directions of most variance first"
    optimizer = training.make_optimizer(model, config.make_config())
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not conv.weight.requires_grad and id(conv.weight) not in trained


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_whitening_leaves_other_models_as_they_are(name):
    model = models.create_model(name, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not models.whiten_first_layer(model, _photo_like())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
