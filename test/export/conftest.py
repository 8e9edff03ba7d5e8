import pytest
import torch


@pytest.fixture(scope="session")
def trained_like():
    """``apply(model, seed=0, gamma_std=0.1)``: BN statistics and gammas like a trained CEN
    model's (with ``gamma_std=0.1`` many gammas fall below the exchange threshold), in eval
    mode. Fresh weights have unit gammas and zero/one statistics, which fold trivially."""
    def apply(model, seed=0, gamma_std=0.1):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, t in model.state_dict().items():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("running_mean"):
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                elif name.endswith(".weight") and t.dim() == 1:
                    t.copy_(torch.randn(t.shape, generator=g) * gamma_std)
        return model.eval()
    return apply


@pytest.fixture(scope="session")
def real_frames():
    """``frames(h, w)``: the real samples of ../shared/samples resized to h x w when they are
    present, else rendered synthetic scenes (the tests run without the samples too)."""
    from cen_training.benchmarks.inference import DEFAULT_SAMPLES, load_frames, synthetic_frames

    def frames(h, w):
        if DEFAULT_SAMPLES.is_dir():
            return load_frames(DEFAULT_SAMPLES, (h, w))
        return synthetic_frames((h, w), 2, seed=1)
    return frames


@pytest.fixture(scope="session")
def varied_model(trained_like):
    """``make(arch="cen", classes=5, seed=0)``: a ResNet-18 / light-decoder model with trained-
    like statistics (``gamma_std=0.5``) whose classifier bias is centred on rendered scenes, so
    that its labels vary across an image as a trained model's do (uncentred, one class takes
    almost every pixel, and any reduced precision would agree trivially)."""
    from cen_training.benchmarks.inference import synthetic_frames
    from cen_training.card import default_card
    from cen_training.models import ModelConfig, build_model

    def make(arch="cen", classes=5, seed=0):
        torch.manual_seed(seed)
        model = trained_like(build_model(ModelConfig(
            arch=arch, backbone="resnet18", decoder="light", num_classes=classes)),
            seed=seed, gamma_std=0.5)
        model.card = default_card(classes)
        classifiers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                       and m.out_channels == classes and m.bias is not None]
        with torch.no_grad():
            mean_logits = torch.stack([
                model(torch.from_numpy(rgb[None]),
                      torch.from_numpy(depth[None]))[-1].mean((0, 2, 3))
                for _, rgb, depth in synthetic_frames((64, 96), 4, seed=seed + 7)]).mean(0)
            for conv in classifiers:
                conv.bias.sub_(mean_logits)
        return model
    return make
