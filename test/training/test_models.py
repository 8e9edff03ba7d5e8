"""The networks: shapes, fusion semantics, parameter counts, sparsity term."""
import itertools

import pytest
import torch

from cen_training.models import ARCHS, BACKBONES, ModelConfig, build_model
from cen_training.models.fusion import (
    SHIFT_OFFSETS,
    channel_exchange,
    exchange_masks,
    pixel_shift,
    shuffle_channels,
)
from cen_training.models.resnet import BasicBlock, Bottleneck

MODALITY_SETS = {1: ["rgb"], 2: ["rgb", "depth"], 3: ["rgb", "depth", "normals"]}


def _valid(arch, m):
    if arch == "single":
        return m == 1
    if arch in ("early", "late"):
        return m >= 2
    return True


CASES = [(a, b, m) for a, b, m in itertools.product(ARCHS, BACKBONES, (1, 2, 3)) if _valid(a, m)]


def _inputs(n=1, h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)
    depth = torch.rand(n, h, w, generator=g) * 5.0
    depth[:, :4, :4] = 0.0  # invalid pixels
    return rgb, depth


@pytest.mark.parametrize("arch,backbone,m", CASES)
def test_output_shapes(arch, backbone, m):
    decoder = "official" if backbone == "resnet50" else "light"
    model = build_model(ModelConfig(arch=arch, backbone=backbone, modalities=MODALITY_SETS[m],
                                    num_classes=7, decoder=decoder)).eval()
    rgb, depth = _inputs(h=64, w=96)
    with torch.no_grad():
        outs = model(rgb, depth)
    branches = 1 if arch == "early" else m
    assert len(model.branch_names) == branches
    assert len(outs) == branches + 1
    for out in outs:
        assert out.shape == (1, 7, 16, 24)
        assert torch.isfinite(out).all()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="arch 'nope'"):
        ModelConfig(arch="nope")
    with pytest.raises(ValueError, match="single"):
        ModelConfig(arch="single", modalities=["rgb", "depth"])
    with pytest.raises(ValueError, match="modalities"):
        ModelConfig(modalities=["rgb", "thermal"])


def test_config_round_trip():
    cfg = ModelConfig(arch="asymfusion", backbone="resnet34", decoder="light", num_classes=5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("backbone,expected", [("resnet101", 118.20), ("resnet152", 133.89)])
def test_parameter_counts_match_papers(backbone, expected):
    for arch in ("cen", "asymfusion"):
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=40))
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert round(count, 2) == expected


def test_single_branch_refinenet101_count():
    model = build_model(ModelConfig(arch="single", backbone="resnet101", modalities=["rgb"],
                                    num_classes=40))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 118.10


def test_every_conv_shared_every_bn_private():
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=3))
    keys = model.state_dict().keys()
    convs = [k for k in keys if k.endswith(".weight") and model.state_dict()[k].dim() == 4]
    assert convs and all(".module." in k or k.startswith("conv1.module") for k in convs)
    bns = [k for k in keys if "running_mean" in k]
    assert bns and all(".bn_0." in k or ".bn_1." in k for k in bns)
    assert sum(".bn_0." in k for k in bns) == sum(".bn_1." in k for k in bns)


# -- CEN exchange ------------------------------------------------------------------------

def test_exchange_two_branches_hand_built():
    c = 4
    x0 = torch.arange(c, dtype=torch.float32).view(1, c, 1, 1).expand(1, c, 2, 2).clone()
    x1 = x0 + 100
    gamma0 = torch.tensor([1.0, 0.001, -0.5, -0.01])  # channels 1, 3 below 0.02 in |.|
    gamma1 = torch.tensor([0.0, 0.3, 0.02, 0.5])       # channel 0 below; 0.02 is kept (>=)
    keep = exchange_masks([gamma0, gamma1], 0.02)
    y0, y1 = channel_exchange([x0, x1], keep)
    assert y0[0, :, 0, 0].tolist() == [0, 101, 2, 103]
    assert y1[0, :, 0, 0].tolist() == [0, 101, 102, 103]


def test_exchange_three_branches_takes_mean_of_others():
    xs = [torch.full((1, 2, 1, 1), v) for v in (1.0, 2.0, 6.0)]
    keep = [torch.tensor([True, False]), torch.tensor([False, True]), torch.tensor([False, False])]
    y = channel_exchange(xs, keep)
    assert y[0].flatten().tolist() == [1.0, 4.0]     # ch1: mean(2, 6)
    assert y[1].flatten().tolist() == [3.5, 2.0]     # ch0: mean(1, 6)
    assert y[2].flatten().tolist() == [1.5, 1.5]     # mean(1, 2)


@pytest.mark.parametrize("block_cls", [Bottleneck, BasicBlock])
def test_exchange_happens_at_the_documented_bn(block_cls):
    """Zero a branch's gamma at the exchange BN: that branch's output must then be the other's
    (the block computes the same thing from the other branch's features)."""
    torch.manual_seed(0)
    planes = 8
    inplanes = planes * block_cls.expansion
    block = block_cls(inplanes, planes, 2, fusion="exchange", bn_threshold=0.02).eval()
    with torch.no_grad():
        block.exchange_bn[0].weight.zero_()  # branch 0 takes every channel from branch 1
    x = torch.randn(1, inplanes, 6, 6)
    same = [x, x.clone()]
    y0, y1 = block(same)
    assert torch.allclose(y0, y1, atol=1e-6)
    other = [x, torch.randn(1, inplanes, 6, 6)]
    plain = block_cls(inplanes, planes, 2, fusion="none").eval()
    plain.load_state_dict(block.state_dict())
    z0, _ = plain(other)
    e0, _ = block(other)
    assert not torch.allclose(z0, e0)


# -- AsymFusion shuffle and shift ----------------------------------------------------------

def test_shuffle_hand_built():
    x0 = torch.arange(10, dtype=torch.float32).view(1, 10, 1, 1)
    x1 = x0 + 100
    s0, s1 = shuffle_channels([x0, x1], split=8)
    assert s0.flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 108, 109]
    assert s1.flatten().tolist() == [100, 101, 102, 103, 104, 105, 106, 107, 8, 9]
    b0, b1 = shuffle_channels([s0, s1], split=8, inverse=True)
    assert torch.equal(b0, x0) and torch.equal(b1, x1)


def test_pixel_shift_hand_built():
    h, w, g = 3, 4, 1
    base = torch.arange(h * w, dtype=torch.float32).view(h, w)
    x = base.expand(1, 5, h, w).clone()  # C = 5 -> g = 1, 4 shifted groups + 1 zero channel
    y = pixel_shift(x, g)
    assert SHIFT_OFFSETS == ((-1, 0), (0, -1), (0, 1), (1, 0))
    for k, (dy, dx) in enumerate(SHIFT_OFFSETS):
        for yy in range(h):
            for xx in range(w):
                sy, sx = yy + dy, xx + dx
                want = base[sy, sx].item() if 0 <= sy < h and 0 <= sx < w else 0.0
                assert y[0, k, yy, xx].item() == want
    assert (y[0, 4] == 0).all()


def test_asymfusion_block_against_hand_computation():
    torch.manual_seed(1)
    planes = 10
    block = Bottleneck(planes * 4, planes, 2, fusion="shuffle").eval()
    x = [torch.randn(1, planes * 4, 5, 5), torch.randn(1, planes * 4, 5, 5)]
    with torch.no_grad():
        got = block(x)
        # By hand, following REFERENCE.md's order.
        a = [torch.relu(block.bn1[m](block.conv1.module(x[m]))) for m in range(2)]
        g = planes // 5
        s = 4 * g
        shifts = [pixel_shift(a[m], g) for m in range(2)]
        sh = [torch.cat([a[0][:, :s], a[1][:, s:]], 1), torch.cat([a[1][:, :s], a[0][:, s:]], 1)]
        b = [torch.relu(block.bn2[m](block.conv2.module(sh[m]))) for m in range(2)]
        b = [b[0] + shifts[1], b[1] + shifts[0]]
        c = [torch.cat([b[0][:, :s], b[1][:, s:]], 1), torch.cat([b[1][:, :s], b[0][:, s:]], 1)]
        want = [torch.relu(block.bn3[m](block.conv3.module(c[m])) + x[m]) for m in range(2)]
    for gm, wm in zip(got, want):
        assert torch.allclose(gm, wm, atol=1e-6)


def test_asymfusion_only_in_last_block_of_each_layer():
    model = build_model(ModelConfig(arch="asymfusion", backbone="resnet50", num_classes=3))
    for i, n in enumerate((3, 4, 6, 3)):
        layer = getattr(model, f"layer{i + 1}")
        assert [blk.fusion for blk in layer] == ["none"] * (n - 1) + ["shuffle"]


# -- CEN sparsity term ----------------------------------------------------------------------

def test_sparsity_penalty_uses_disjoint_halves():
    model = build_model(ModelConfig(arch="cen", backbone="resnet50", decoder="light",
                                    num_classes=3))
    want = 0.0
    with torch.no_grad():
        for blk in model.blocks():
            for m in range(2):
                gamma = blk.bn2[m].weight
                gamma.uniform_(-1, 1)
                c = gamma.numel()
                want += gamma[:c // 2].abs().sum() if m == 0 else gamma[c // 2:].abs().sum()
    assert torch.allclose(model.sparsity_penalty(), torch.as_tensor(want))
    # Gradient reaches only the penalised portion.
    model.zero_grad()
    model.sparsity_penalty().backward()
    g0 = model.layer1[0].bn2.bn_0.weight.grad
    g1 = model.layer1[0].bn2.bn_1.weight.grad
    assert (g0[:32] != 0).all() and (g0[32:] == 0).all()
    assert (g1[:32] == 0).all() and (g1[32:] != 0).all()


def test_no_sparsity_for_other_archs():
    model = build_model(ModelConfig(arch="shared", backbone="resnet18", decoder="light",
                                    num_classes=3))
    assert model.sparsity_penalty().item() == 0.0


def test_ensemble_is_alpha_softmax_of_detached_branches():
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=4)).eval()
    with torch.no_grad():
        model.alpha.copy_(torch.tensor([0.3, -1.2]))
    outs = model(*_inputs(h=32, w=32))
    w = torch.softmax(torch.tensor([0.3, -1.2]), 0)
    assert torch.allclose(outs[2], w[0] * outs[0] + w[1] * outs[1], atol=1e-5)
    outs[2].sum().backward()
    assert model.alpha.grad is not None and model.conv1.module.weight.grad is None


def test_normalisation_inside_the_graph():
    model = build_model(ModelConfig(arch="shared", backbone="resnet18", decoder="light",
                                    num_classes=3))
    rgb = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    depth = torch.full((1, 2, 2), 2.5)
    x_rgb, x_depth = model.branch_inputs(rgb, depth)
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x_rgb[0, :, 0, 0], (1 - mean) / std, atol=1e-6)
    # Official depth: millimetres / 5000, repeated to 3 channels.
    assert x_depth.shape == (1, 3, 2, 2)
    assert torch.allclose(x_depth, torch.full_like(x_depth, 2500 / 5000))


# -- encoder / decoder -------------------------------------------------------------------------

def _name_based_split(model):
    """Parameter names of the encoder and the rest, in ``named_parameters`` order, as names
    alone told them apart before the decoder was a module: the stem and the ResNet layers
    (also inside each network of a late fusion) are the encoder."""
    def is_encoder(name):
        parts = name.split(".")
        head = parts[2] if parts[0] == "nets" else parts[0]
        return head in ("conv1", "bn1") or head.startswith("layer")
    names = [n for n, _ in model.named_parameters()]
    return [n for n in names if is_encoder(n)], [n for n in names if not is_encoder(n)]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_encoder_and_decoder_parameters_are_the_name_based_split(arch, backbone):
    modalities = MODALITY_SETS[1 if arch == "single" else 2]
    model = build_model(ModelConfig(arch=arch, backbone=backbone, modalities=modalities,
                                    decoder="light", num_classes=3))
    names = {id(p): n for n, p in model.named_parameters()}
    encoder = [names[id(p)] for p in model.encoder_parameters()]
    decoder = [names[id(p)] for p in model.decoder_parameters()]
    assert (encoder, decoder) == _name_based_split(model)  # same members, same order
    assert any("alpha" in n for n in decoder) and any(".clf_conv." in n for n in decoder)


def test_decoder_is_a_module_with_the_official_layer_names():
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=3)).eval()
    keys = list(model.state_dict())
    assert "decoder.clf_conv.module.weight" in keys
    assert "decoder.mflow_conv_g1_pool.0.1_outvar_dimred.module.weight" in keys
    assert "decoder.adapt_stage1_b.0.1_conv.module.bias" in keys
    assert not any(k.startswith(("clf_conv", "adapt_stage", "mflow_conv", "p_ims1d2"))
                   for k in keys)
    l1, l2, l3, l4 = model.features(model.branch_inputs(*_inputs(h=32, w=32)))
    logits = model.decoder(l1, l2, l3, l4)
    assert len(logits) == 2 and logits[0].shape == (1, 3, 8, 8)
