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
