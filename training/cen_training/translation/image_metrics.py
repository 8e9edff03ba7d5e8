"""Scores of translated images: L1, RMSE, PSNR and SSIM always; FID and KID with Inception
weights.

Conventions (per output: each branch and the ensemble, over a set of images):

* ``l1``, ``rmse``: on [-1, 1] images as the official evaluation: the mean over images of the
  per-image mean absolute error, and the square root of the mean over images of the per-image
  mean squared error.
* ``psnr`` (dB) and ``ssim``: on [0, 1] images (data range 1), the mean over images; SSIM with
  the usual 11x11 Gaussian window (sigma 1.5) averaged over the three channels
  (``torchmetrics``).
* ``fid`` and ``kid`` (x100, as the official code reports it): from the 2048-d Inception-v3
  pool features (``translation.inception``) of the generated and the real target images, with
  ``torchmetrics``' Fréchet distance and unbiased polynomial-kernel MMD (degree 3, gamma
  1/2048, coef0 1; ``kid_subsets`` random subsets of up to ``kid_subset_size`` images, drawn
  from a fixed seed). Images reach the network as uint8: ``round((x + 1) * 127.5)``
  (``direct``), or, as the official code saves them before scoring, rescaled per image to the
  full 0..255 range and truncated (``minmax``). Reported numbers say which.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

FID_CONVENTIONS = ("direct", "minmax")


class _Precomputed(nn.Module):
    """A pass-through 'feature extractor': the features are computed once per image
    elsewhere and shared by every output's metric."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two feature sets ``[N, D]`` (``torchmetrics``' Fréchet distance of their
    means and sample covariances)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50,
                              subset_size: int = 1000, seed: int = 0) -> float:
    """KID (unbiased MMD^2, polynomial kernel degree 3, gamma 1/D, coef0 1) between two
    feature sets, the mean over ``subsets`` random subsets of ``min(subset_size, N)`` each;
    not x100. Drawn from ``seed``, without touching the global random state."""
    from torchmetrics.image.kid import KernelInceptionDistance
    size = min(subset_size, real.shape[0], fake.shape[0])
    if size < 2:
        raise ValueError("KID needs at least two images in each set")
    with warnings.catch_warnings():  # "will save all extracted features": it is meant to
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets,
                                         subset_size=size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)


def to_uint8_for_fid(images: torch.Tensor, convention: str = "direct") -> torch.Tensor:
    """[-1, 1] ``[B, 3, H, W]`` -> uint8 ``[B, 3, H, W]`` as the Inception network gets them."""
    if convention == "minmax":  # the official per-image rescale to 0..255, truncated
        flat = images.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        scaled = (images - lo) * 255 / torch.clamp(hi - lo, min=1e-12)
        return scaled.clamp(0, 255).to(torch.uint8)
    if convention != "direct":
        raise ValueError(f"unknown FID convention {convention!r} ({', '.join(FID_CONVENTIONS)})")
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


class TranslationMeter:
    """Accumulates the scores of every output (``output_names``: each branch, then the
    ensemble) over a set of images; ``inception`` (a ``FIDInceptionV3``) adds FID and KID."""

    def __init__(self, output_names: list[str], inception: nn.Module | None = None,
                 fid_convention: str = "direct", kid_subsets: int = 50,
                 kid_subset_size: int = 1000) -> None:
        if fid_convention not in FID_CONVENTIONS:
            raise ValueError(f"unknown FID convention {fid_convention!r}")
        self.output_names = list(output_names)
        self.inception = inception
        self.fid_convention = fid_convention
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        # Per output: sums of l1, mse, psnr, ssim over images; and the image count.
        self.sums = torch.zeros(len(self.output_names), 4, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self.real_features: list[torch.Tensor] = []
        self.fake_features: list[list[torch.Tensor]] = [[] for _ in self.output_names]

    @torch.no_grad()
    def update(self, outputs: list[torch.Tensor], target: torch.Tensor) -> None:
        """``outputs``: the model's M + 1 images, ``target``: the real image, all
        ``[B, 3, H, W]`` in [-1, 1]."""
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        target = target.float()
        for i, out in enumerate(outputs):
            out = out.float()
            diff = out - target
            l1 = diff.abs().flatten(1).mean(1)
            mse = diff.square().flatten(1).mean(1)
            # PSNR on [0, 1]: the squared error is a quarter of that on [-1, 1].
            psnr = 10 * torch.log10(1.0 / torch.clamp(mse / 4, min=1e-12))
            s = ssim((out + 1) / 2, (target + 1) / 2, data_range=1.0, reduction="none")
            self.sums[i] += torch.stack([l1.sum(), mse.sum(), psnr.sum(), s.sum()]).double().cpu()
        self.count += target.shape[0]
        if self.inception is not None:
            self.real_features.append(self._features(target))
            for i, out in enumerate(outputs):
                self.fake_features[i].append(self._features(out))

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception(to_uint8_for_fid(images, self.fid_convention)).double().cpu()

    def all_reduce(self) -> None:
        """Gather the sums and features of every process of a distributed run."""
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        packed = torch.cat([self.sums.flatten(), self.count.view(1)]).to(device)
        dist.all_reduce(packed)
        packed = packed.cpu()
        self.sums = packed[:-1].view_as(self.sums)
        self.count = packed[-1]
        if self.inception is not None:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (self.real_features, self.fake_features))
            self.real_features = [f for real, _ in gathered for f in real]
            self.fake_features = [[f for _, fakes in gathered for f in fakes[i]]
                                  for i in range(len(self.output_names))]

    def scores(self) -> dict[str, dict[str, float]]:
        """``{output name: {"l1", "rmse", "psnr", "ssim"[, "fid", "kid"]}}``."""
        n = max(float(self.count), 1.0)
        result = {}
        for i, name in enumerate(self.output_names):
            l1, mse, psnr, ssim = (float(v) / n for v in self.sums[i])
            result[name] = {"l1": l1, "rmse": math.sqrt(mse), "psnr": psnr, "ssim": ssim}
        if self.inception is not None and float(self.count) >= 2:
            real = torch.cat(self.real_features)
            for i, name in enumerate(self.output_names):
                fake = torch.cat(self.fake_features[i])
                result[name]["fid"] = frechet_distance(real, fake)
                result[name]["kid"] = 100 * kernel_inception_distance(
                    real, fake, self.kid_subsets, self.kid_subset_size)
        return result
