"""Official-layout checkpoints: import, strict key checks, and the same logits as the official
network. The reference below is written the way the official code computes (lists of branch
tensors, in-place ReLUs, boolean-mask exchange, concatenation shuffle), independently of
``cen_training.models``, and loads the same state dict."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cen_training.checkpoint import load_model
from cen_training.errors import CheckpointError
from cen_training.models import ModelConfig, build_model

# ---------------------------------------------------------------------------------------
# Reference network, official style.


class PL(nn.Module):  # one module over every branch
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, xs):
        return [self.module(x) for x in xs]


class BNP(nn.Module):
    def __init__(self, c, n):
        super().__init__()
        for i in range(n):
            setattr(self, f"bn_{i}", nn.BatchNorm2d(c))
        self.n = n

    def forward(self, xs):
        return [getattr(self, f"bn_{i}")(x) for i, x in enumerate(xs)]


def c3(i, o, s=1, b=False):
    return PL(nn.Conv2d(i, o, 3, s, 1, bias=b))


def c1(i, o, s=1):
    return PL(nn.Conv2d(i, o, 1, s, 0, bias=False))


class RefBottleneck(nn.Module):
    def __init__(self, inp, planes, n, stride=1, down=None, mode="cen", shuffle=False, th=2e-2):
        super().__init__()
        self.conv1, self.bn1 = c1(inp, planes), BNP(planes, n)
        self.conv2, self.bn2 = c3(planes, planes, stride), BNP(planes, n)
        self.conv3, self.bn3 = c1(planes, planes * 4), BNP(planes * 4, n)
        self.relu = PL(nn.ReLU(inplace=True))
        self.downsample, self.mode, self.shuffle, self.th = down, mode, shuffle, th

    def exchange(self, x):
        g0, g1 = self.bn2.bn_0.weight.abs(), self.bn2.bn_1.weight.abs()
        y0, y1 = torch.zeros_like(x[0]), torch.zeros_like(x[1])
        y0[:, g0 >= self.th] = x[0][:, g0 >= self.th]
        y0[:, g0 < self.th] = x[1][:, g0 < self.th]
        y1[:, g1 >= self.th] = x[1][:, g1 >= self.th]
        y1[:, g1 < self.th] = x[0][:, g1 < self.th]
        return [y0, y1]

    @staticmethod
    def shift_shuffle(x, reverse):
        pos = [[-1, 0], [0, -1], [0, 1], [1, 0]]
        pos = pos[::-1] if reverse else pos
        g = x[0].shape[1] // 5
        s = 4 * g
        a0, b0, a1, b1 = x[0][:, :s], x[1][:, s:], x[1][:, :s], x[0][:, s:]
        shuffled = [torch.cat([a0, b0], 1), torch.cat([a1, b1], 1)]
        h, w = a0.shape[-2:]
        sh0, sh1 = [], []
        for k, i in enumerate(range(0, s, g)):
            ph, pw = pos[k][0] + 1, pos[k][1] + 1
            sh0.append(F.pad(a0[:, i:i + g], (1, 1, 1, 1))[:, :, ph:ph + h, pw:pw + w])
            sh1.append(F.pad(a1[:, i:i + g], (1, 1, 1, 1))[:, :, ph:ph + h, pw:pw + w])
        sh0.append(torch.zeros_like(b0))
        sh1.append(torch.zeros_like(b1))
        return shuffled, [torch.cat(sh0, 1), torch.cat(sh1, 1)]

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        if self.shuffle:
            out, shift = self.shift_shuffle(out, False)
        out = self.bn2(self.conv2(out))
        if self.mode == "cen":
            out = self.exchange(out)
        out = self.relu(out)
        if self.shuffle:
            out[0] = out[0] + shift[1]
            out[1] = out[1] + shift[0]
            out, _ = self.shift_shuffle(out, True)
        out = self.bn3(self.conv3(out))
        res = self.downsample(x) if self.downsample is not None else x
        return self.relu([o + r for o, r in zip(out, res)])


class RefCRP(nn.Module):
    def __init__(self, c):
        super().__init__()
        for i in range(4):
            setattr(self, f"{i + 1}_outvar_dimred", c3(c, c))
        self.pool = PL(nn.MaxPool2d(5, 1, 2))

    def forward(self, x):
        top = x
        for i in range(4):
            top = getattr(self, f"{i + 1}_outvar_dimred")(self.pool(top))
            x = [a + b for a, b in zip(x, top)]
        return x


class RefRCU(nn.Module):
    def __init__(self, i, o, blocks):
        super().__init__()
        suffixes = ("_conv", "_conv_relu_varout_dimred")
        for b in range(blocks):
            for s in range(2):
                setattr(self, f"{b + 1}{suffixes[s]}",
                        c3(i if b == 0 and s == 0 else o, o, b=(s == 0)))
        self.blocks, self.suffixes = blocks, suffixes
        self.relu = PL(nn.ReLU(inplace=True))

    def forward(self, x):
        for b in range(self.blocks):
            res = x
            for s in range(2):
                x = self.relu(x)  # in place: the skip sees the relu'd input
                x = getattr(self, f"{b + 1}{self.suffixes[s]}")(x)
            x = [a + r for a, r in zip(x, res)]
        return x


class RefNet(nn.Module):
    def __init__(self, layers, classes, mode):
        super().__init__()
        n = 2
        self.conv1 = PL(nn.Conv2d(3, 64, 7, 2, 3, bias=False))
        self.bn1 = BNP(64, n)
        self.relu = PL(nn.ReLU(inplace=True))
        self.maxpool = PL(nn.MaxPool2d(3, 2, 1))
        inp = 64
        for li, (planes, nb) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if li == 0 else 2
            down = nn.Sequential(c1(inp, planes * 4, stride), BNP(planes * 4, n))
            blocks = [RefBottleneck(inp, planes, n, stride, down, mode)]
            for b in range(1, nb):
                blocks.append(RefBottleneck(planes * 4, planes, n, mode=mode,
                                            shuffle=(mode == "asym" and b == nb - 1)))
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
            inp = planes * 4
        self.p_ims1d2_outl1_dimred = c3(2048, 512)
        self.adapt_stage1_b = nn.Sequential(RefRCU(512, 512, 2))
        self.mflow_conv_g1_pool = nn.Sequential(RefCRP(512))
        self.mflow_conv_g1_b = nn.Sequential(RefRCU(512, 512, 3))
        self.mflow_conv_g1_b3_joint_varout_dimred = c3(512, 256)
        for st, ch in ((2, 1024), (3, 512), (4, 256)):
            setattr(self, f"p_ims1d2_outl{st}_dimred", c3(ch, 256))
            setattr(self, f"adapt_stage{st}_b", nn.Sequential(RefRCU(256, 256, 2)))
            setattr(self, f"adapt_stage{st}_b2_joint_varout_dimred", c3(256, 256))
            setattr(self, f"mflow_conv_g{st}_pool", nn.Sequential(RefCRP(256)))
            setattr(self, f"mflow_conv_g{st}_b", nn.Sequential(RefRCU(256, 256, 3)))
            if st < 4:
                setattr(self, f"mflow_conv_g{st}_b3_joint_varout_dimred", c3(256, 256))
        self.clf_conv = c3(256, classes, b=True)
        self.alpha = nn.Parameter(torch.ones(n))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)

        def up(xs, ref):
            return [F.interpolate(a, size=ref[0].shape[2:], mode="bilinear", align_corners=True)
                    for a in xs]

        x4 = self.relu(self.adapt_stage1_b(self.p_ims1d2_outl1_dimred(l4)))
        x4 = self.mflow_conv_g1_b(self.mflow_conv_g1_pool(x4))
        prev = up(self.mflow_conv_g1_b3_joint_varout_dimred(x4), l3)
        for st, skip, nxt in ((2, l3, l2), (3, l2, l1), (4, l1, None)):
            y = getattr(self, f"p_ims1d2_outl{st}_dimred")(skip)
            y = getattr(self, f"adapt_stage{st}_b")(y)
            y = getattr(self, f"adapt_stage{st}_b2_joint_varout_dimred")(y)
            y = self.relu([a + b for a, b in zip(y, prev)])
            y = getattr(self, f"mflow_conv_g{st}_b")(getattr(self, f"mflow_conv_g{st}_pool")(y))
            if nxt is not None:
                y = up(getattr(self, f"mflow_conv_g{st}_b3_joint_varout_dimred")(y), nxt)
            prev = y
        out = self.clf_conv(prev)
        w = F.softmax(self.alpha, dim=0)
        out.append(w[0] * out[0].detach() + w[1] * out[1].detach())
        return out


# ---------------------------------------------------------------------------------------

def _randomise(model):
    """Non-trivial BN statistics and gammas straddling the exchange threshold."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(".weight") and t.dim() == 1:  # BN gamma
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            elif name == "alpha":
                t.copy_(torch.tensor([0.4, -0.2]))


@pytest.fixture(scope="module", params=["cen", "asymfusion"])
def official_checkpoint(request, tmp_path_factory):
    arch = request.param
    torch.manual_seed(0)
    ref = RefNet((3, 4, 6, 3), 13, "cen" if arch == "cen" else "asym").eval()
    _randomise(ref)
    state = {"module." + k: v for k, v in ref.state_dict().items()}
    path = tmp_path_factory.mktemp("official") / f"{arch}_r50.pth"
    torch.save({"segmenter": state, "best_val": 0.42, "epoch_start": 77}, path)
    return arch, ref, path


def _official_input(rgb, depth):
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x_rgb = (rgb.permute(0, 3, 1, 2).float() / 255 - mean) / std
    x_depth = (depth * 1000.0 / 5000.0).unsqueeze(1).repeat(1, 3, 1, 1)
    return [x_rgb, x_depth]


def test_import_official_reproduces_the_official_forward(official_checkpoint, tmp_path):
    arch, ref, src = official_checkpoint
    out = tmp_path / "imported.pt"
    proc = subprocess.run(
        [sys.executable, "-m", "cen_training.cli", "import-official", "--arch", arch,
         "--backbone", "resnet50", "--num-classes", "13", str(src), str(out)],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    model = load_model(out)
    assert model.config.arch == arch and model.card["dataset"]["epoch_start"] == 77
    g = torch.Generator().manual_seed(3)
    rgb = torch.randint(0, 256, (2, 64, 80, 3), dtype=torch.uint8, generator=g)
    depth = torch.rand(2, 64, 80, generator=g) * 4
    with torch.no_grad():
        ours = model(rgb, depth)
        theirs = ref(_official_input(rgb, depth))
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (a - b).abs().max()
    if arch == "cen":  # the exchange really happened in this checkpoint
        assert 0.1 < model.slim_fraction() < 0.9


def _run_import(src, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "cen_training.cli", "import-official", "--arch", "cen",
         "--backbone", "resnet50", "--num-classes", "13", *extra, str(src), str(out)],
        capture_output=True, text=True)


def test_wrong_keys_are_named(official_checkpoint, tmp_path):
    _, _, src = official_checkpoint
    raw = torch.load(src, weights_only=True)
    state = dict(raw["segmenter"])
    state["module.layer9.0.conv1.module.weight"] = torch.zeros(1)
    del state["module.clf_conv.module.bias"]
    bad = tmp_path / "bad_keys.pth"
    torch.save(state, bad)  # a bare state dict is accepted too
    proc = _run_import(bad, tmp_path / "o.pt")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "clf_conv.module.bias" in err and "layer9.0.conv1.module.weight" in err
    assert not (tmp_path / "o.pt").exists()


def test_wrong_shapes_are_named(official_checkpoint, tmp_path):
    _, _, src = official_checkpoint
    proc = _run_import(src, tmp_path / "o.pt", "--num-classes", "40")
    assert proc.returncode != 0
    assert "mis-shaped" in proc.stderr and "clf_conv.module.weight" in proc.stderr


def test_truncated_file_is_a_clear_error(official_checkpoint, tmp_path):
    _, _, src = official_checkpoint
    data = src.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    proc = _run_import(cut, tmp_path / "o.pt")
    assert proc.returncode != 0
    assert "not a readable checkpoint" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_load_model_refuses_foreign_files(official_checkpoint, tmp_path):
    _, _, src = official_checkpoint
    with pytest.raises(CheckpointError, match="import-official"):
        load_model(src)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_imagenet_import_copies_every_bn_into_every_branch(tmp_path):
    # A torchvision-layout ResNet-18 state dict (no torchvision needed to make one).
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=3))
    g = torch.Generator().manual_seed(0)
    tv = {}
    for key, t in model.state_dict().items():
        head = key.split(".")[0]
        if not (head in ("conv1", "bn1") or head.startswith("layer")) or ".bn_1." in key:
            continue
        name = key.replace(".module.", ".").replace("module.", "").replace(".bn_0.", ".")
        tv[name] = (torch.rand(t.shape, generator=g) if t.is_floating_point() else t.clone())
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    src = tmp_path / "resnet18.pth"
    torch.save(tv, src)
    out = tmp_path / "init.pt"
    proc = subprocess.run([sys.executable, "-m", "cen_training.cli", "import-imagenet", str(src),
                           str(out), "--backbone", "resnet18", "--decoder", "light",
                           "--num-classes", "3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    state = load_model(out).state_dict()
    assert torch.equal(state["layer2.0.conv2.module.weight"], tv["layer2.0.conv2.weight"])
    for m in (0, 1):
        assert torch.equal(state[f"layer3.1.bn1.bn_{m}.weight"], tv["layer3.1.bn1.weight"])
        assert torch.equal(state[f"bn1.bn_{m}.running_var"], tv["bn1.running_var"])
        assert torch.equal(state[f"layer2.0.downsample.1.bn_{m}.weight"],
                           tv["layer2.0.downsample.1.weight"])
    # The wrong backbone is refused with the keys named.
    proc = subprocess.run([sys.executable, "-m", "cen_training.cli", "import-imagenet", str(src),
                           str(tmp_path / "x.pt"), "--backbone", "resnet34"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "do not fit" in proc.stderr
