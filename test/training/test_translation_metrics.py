"""Translation scores: the FID and KID arithmetic on known feature sets, the per-image scores,
and the Inception network read from a local weights file."""
import math

import pytest
import torch

from cen_training.errors import CheckpointError
from cen_training.translation.image_metrics import (
    TranslationMeter,
    frechet_distance,
    kernel_inception_distance,
    to_uint8_for_fid,
)
from cen_training.translation.inception import FIDInceptionV3, load_inception


def test_identical_sets_have_fid_zero():
    feats = torch.randn(40, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(frechet_distance(feats, feats)) < 1e-6


def whitened(n, d, seed):
    """n samples whose sample mean is 0 and sample covariance exactly the identity."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    cov = x.T @ x / (n - 1)
    return x @ torch.linalg.inv(torch.linalg.cholesky(cov)).T


def test_fid_of_two_gaussian_sets_is_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, -1.0, 0.5])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([2.0, 1.0, 1.0])
    a = mu1 + whitened(200, 3, 1) * var1.sqrt()
    b = mu2 + whitened(300, 3, 2) * var2.sqrt()
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(var1) - sqrt(var2))^2.
    want = float(((mu1 - mu2) ** 2).sum() + ((var1.sqrt() - var2.sqrt()) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-6)


def test_kid_is_the_unbiased_mmd_of_a_polynomial_kernel():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)

    def k(a, b):  # degree 3, gamma 1/d = 1/2, coef0 1
        return (a @ b / 2 + 1) ** 3

    m = 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    # One subset of all three: the estimate is the same whatever the order drawn.
    assert kernel_inception_distance(x, y, subsets=1, subset_size=3) == pytest.approx(
        float(xx + yy - 2 * xy))
    # Subsets are drawn from a fixed seed, without disturbing the caller's random state.
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    kernel_inception_distance(x, y, subsets=4, subset_size=2)
    assert torch.equal(torch.rand(1), before)


def test_meter_scores_perfect_and_imperfect_outputs():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    noisy = (target + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    meter = TranslationMeter(["a", "ensemble"])
    meter.update([target.clone(), noisy], target)
    scores = meter.scores()
    assert scores["a"]["l1"] == 0 and scores["a"]["ssim"] == pytest.approx(1.0)
    assert scores["a"]["psnr"] > 100
    e = scores["ensemble"]
    assert 0 < e["l1"] < e["rmse"] < 0.2 and 20 < e["psnr"] < 40 and e["ssim"] < 0.99
    mse = ((noisy - target) ** 2).flatten(1).mean(1)
    assert e["rmse"] == pytest.approx(math.sqrt(float(mse.mean())), rel=1e-5)
    assert e["psnr"] == pytest.approx(float((10 * torch.log10(4 / mse)).mean()), rel=1e-5)


def test_fid_images_direct_or_rescaled_per_image():
    x = torch.tensor([-1.0, 0.0, 0.5]).view(1, 3, 1, 1)
    assert to_uint8_for_fid(x).flatten().tolist() == [0, 128, 191]
    assert to_uint8_for_fid(x, "minmax").flatten().tolist() == [0, 170, 255]


def test_inception_weights_come_from_a_local_file_only(tmp_path):
    torch.manual_seed(0)
    net = FIDInceptionV3()
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    loaded = load_inception(path)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    features = loaded(images)
    assert features.shape == (2, 2048) and (features >= 0).all()
    torch.testing.assert_close(features, net.eval()(images))
    with pytest.raises(CheckpointError, match="nothing is downloaded"):
        load_inception(tmp_path / "absent.pth")
    del state["Mixed_7c.branch_pool.conv.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="Mixed_7c.branch_pool.conv.weight"):
        load_inception(path)


class TinyFeatures(torch.nn.Module):
    """A stand-in feature network (8-d) for the meter's wiring: a 2048-d Fréchet distance
    takes tens of seconds on a small CPU."""
    num_features = 8

    def forward(self, images):
        x = images.float().flatten(2)
        return torch.cat([x.mean(2), x.std(2), x.amax(2)[:, :2]], dim=1)


def test_meter_adds_fid_and_kid_with_a_feature_network():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    meter = TranslationMeter(["x", "ensemble"], inception=TinyFeatures(), kid_subsets=3)
    meter.update([target[:3], -target[:3]], target[:3])
    meter.update([target[3:], -target[3:]], target[3:])
    scores = meter.scores()
    assert abs(scores["x"]["fid"]) < 1e-6 and scores["ensemble"]["fid"] > 1
    # The unbiased estimate for identical sets is not 0 (the diagonal is left out) but below
    # that of different sets.
    assert scores["x"]["kid"] < scores["ensemble"]["kid"] and scores["ensemble"]["kid"] > 0
