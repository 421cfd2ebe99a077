"""UNet shapes and conditioning; the diffusion schedule, targets, loss weights and label dropout."""

import math

import pytest
import torch

from cfgutils.core.diffusion import (
    DiffusionConfig,
    GaussianDiffusion,
    alpha_bar_schedule,
    drop_labels,
)
from cfgutils.core.unet import (
    ConditionalUNet,
    UNetConfig,
    count_parameters,
    forward_flops,
)
from cfgutils.errors import UserInputError

TINY = UNetConfig(base_channels=8, channel_mults=(1, 2), groups=4)


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised output layers make a fresh UNet predict 0; give every weight a value."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model


@pytest.mark.parametrize("config", [TINY, UNetConfig(), UNetConfig(base_channels=8, groups=4, patch_size=1,
                                                                    channel_mults=(1, 2, 2), attention=False)])
def test_unet_maps_images_to_images(config):
    model = ConditionalUNet(config)
    x = torch.randn(3, 1, 28, 28)
    out = model(x, torch.tensor([0, 500, 999]), torch.tensor([0, 9, 10]))
    assert out.shape == (3, 1, 28, 28)
    assert torch.count_nonzero(out) == 0  # zero-initialised output convolution


def test_label_embedding_has_a_null_row_and_conditioning_matters():
    model = randomized(ConditionalUNet(TINY)).eval()
    assert model.label_embedding.num_embeddings == 11 and TINY.null_label == 10
    x = torch.randn(1, 1, 28, 28)
    t = torch.tensor([300])
    outputs = [model(x, t, torch.tensor([label])) for label in (3, 7, 10)]
    assert not torch.allclose(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0], outputs[2])
    assert not torch.allclose(model(x, torch.tensor([10]), torch.tensor([3])), outputs[0])  # time matters too


def test_batch_elements_are_independent():
    """GroupNorm (unlike BatchNorm) makes each sample's output independent of the rest of the batch."""
    model = randomized(ConditionalUNet(TINY)).train()
    x = torch.randn(4, 1, 28, 28)
    t = torch.tensor([1, 2, 3, 4])
    y = torch.tensor([1, 2, 3, 10])
    together = model(x, t, y)
    alone = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_parameter_and_flop_counts():
    model = ConditionalUNet(UNetConfig())
    assert 100_000 < count_parameters(model) < 2_000_000
    flops = forward_flops(model)
    assert 10e6 < flops < 500e6


def test_config_round_trip_and_validation():
    config = UNetConfig(base_channels=16, channel_mults=(1, 2), groups=8)
    assert UNetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserInputError, match="unknown model config"):
        UNetConfig.from_dict({"width": 3})
    with pytest.raises(UserInputError, match="divisible"):
        UNetConfig.from_dict({"base_channels": 12, "groups": 8})


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_is_decreasing_from_one_towards_zero(schedule):
    alpha_bar = alpha_bar_schedule(1000, schedule)
    assert alpha_bar.shape == (1000,)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert 0.99 < alpha_bar[0] < 1 and alpha_bar[-1] < 0.01


def test_cosine_schedule_matches_its_formula():
    alpha_bar = alpha_bar_schedule(1000, "cosine")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert alpha_bar[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)


def test_forward_process_statistics():
    diffusion = GaussianDiffusion(DiffusionConfig())
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.5)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.full((20000,), 400)
    x_t = diffusion.q_sample(x0, t, noise)
    alpha_bar = diffusion.alpha_bar[400]
    assert x_t.mean().item() == pytest.approx(0.5 * alpha_bar.sqrt().item(), abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - alpha_bar.item(), rel=0.05)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_target_converts_back_to_noise_and_data(prediction):
    diffusion = GaussianDiffusion(DiffusionConfig(prediction=prediction))
    generator = torch.Generator().manual_seed(1)
    x0 = torch.rand((5, 1, 28, 28), generator=generator) * 2 - 1
    noise = torch.randn((5, 1, 28, 28), generator=generator)
    t = torch.tensor([0, 10, 500, 900, 990])
    x_t = diffusion.q_sample(x0, t, noise)
    eps, x0_pred = diffusion.to_eps_and_x0(diffusion.target(x0, t, noise), x_t, t)
    torch.testing.assert_close(eps, noise, atol=2e-3, rtol=0)
    torch.testing.assert_close(x0_pred, x0, atol=2e-3, rtol=0)


def test_min_snr_weights():
    t = torch.tensor([0, 999])
    eps_weights = GaussianDiffusion(DiffusionConfig(prediction="eps", loss_weighting="min-snr")).loss_weights(t)
    v_weights = GaussianDiffusion(DiffusionConfig(prediction="v", loss_weighting="min-snr")).loss_weights(t)
    assert eps_weights[0] < 0.01 and eps_weights[1] == pytest.approx(1.0)  # clamped at low noise, 1 at high
    assert v_weights[1] == pytest.approx(0.0, abs=1e-3)  # snr ~ 0: weight snr/(snr+1) ~ 0
    assert torch.all(GaussianDiffusion(DiffusionConfig(loss_weighting="uniform")).loss_weights(t) == 1)


def test_label_dropout_is_per_sample():
    labels = torch.arange(10).repeat(1000)
    dropped = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    is_null = dropped == 10
    assert 0.08 < is_null.float().mean() < 0.12
    assert torch.equal(dropped[~is_null], labels[~is_null])
    batches = is_null.reshape(100, 100).float().mean(dim=1)
    assert 0 < batches.min() and batches.max() < 1  # never a whole batch at once
    assert torch.equal(drop_labels(labels, 0.0, 10), labels)
    assert torch.all(drop_labels(labels, 1.0, 10) == 10)
    with pytest.raises(UserInputError, match="p_uncond"):
        drop_labels(labels, 1.5, 10)


def test_training_loss_is_finite_and_differentiable():
    model = randomized(ConditionalUNet(TINY))
    diffusion = GaussianDiffusion(DiffusionConfig())
    x0 = torch.rand(4, 1, 28, 28) * 2 - 1
    loss = diffusion.training_loss(model, x0, torch.tensor([1, 2, 10, 4]), torch.tensor([5, 50, 500, 995]),
                                   torch.randn(4, 1, 28, 28))
    loss.backward()
    assert torch.isfinite(loss) and model.stem.weight.grad is not None
