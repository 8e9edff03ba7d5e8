"""The translation generator and discriminator: official keys and parameter count, official
checkpoints reproduced by an independent re-implementation of the official forward pass,
exchange, the sparsity term and the baselines."""
import pytest
import torch
import torch.nn.functional as F

from cen_training.checkpoint import (
    import_official_translation,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from cen_training.cli import main as cli_main
from cen_training.errors import CheckpointError
from cen_training.models.translation import (
    TranslationConfig,
    build_discriminator,
    build_translation_model,
    normalize_images,
)

OFFICIAL_PARAMETERS = 54_431_633


@pytest.fixture(autouse=True, scope="module")
def two_cpu_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


# -- an independent re-implementation of the official generator (REFERENCE.md facts) ---------

NGF = 64
ENC = [(3, 64), (64, 128), (128, 256), (256, 512), (512, 512), (512, 512), (512, 512),
       (512, 512)]
DEC = [(512, 512), (1024, 512), (1024, 512), (1024, 512), (1024, 256), (512, 128), (256, 64),
       (128, 3)]


def official_state_dict(seed: int = 0, branches: int = 2) -> dict:
    """Random weights under the official key names; a quarter of the exchange INs' gammas
    below 1e-2 and random running statistics (which must not be used)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.02):
        return torch.randn(*shape, generator=g) * scale

    state = {"alpha": torch.rand(branches, generator=g) + 0.5}
    for k, (cin, cout) in enumerate(ENC, 1):
        state[f"conv{k}.conv.module.weight"] = rand(cout, cin, 4, 4)
        state[f"conv{k}.conv.module.bias"] = rand(cout)
        for m in range(branches):
            p = f"conv{k}.insnorm_conv.insnorm_{m}."
            gamma = 0.5 + torch.rand(cout, generator=g)
            gamma[torch.rand(cout, generator=g) < 0.25] = 1e-3
            state[p + "weight"], state[p + "bias"] = gamma, rand(cout, scale=0.1)
            state[p + "running_mean"], state[p + "running_var"] = rand(cout, scale=1), \
                1 + torch.rand(cout, generator=g)
            state[p + "num_batches_tracked"] = torch.tensor(7)
    for k, (cin, cout) in enumerate(DEC, 1):
        state[f"deconv{k}.deconv.module.weight"] = rand(cin, cout, 4, 4)
        state[f"deconv{k}.deconv.module.bias"] = rand(cout)
        for m in range(branches):
            p = f"deconv{k}.insnorm_deconv.insnorm_{m}."
            state[p + "weight"] = 0.5 + torch.rand(cout, generator=g)
            state[p + "bias"] = rand(cout, scale=0.1)
            state[p + "running_mean"], state[p + "running_var"] = rand(cout, scale=1), \
                1 + torch.rand(cout, generator=g)
            state[p + "num_batches_tracked"] = torch.tensor(7)
    return state


def official_forward(state: dict, images: list, theta: float = 1e-2) -> list:
    """The official generator on raw uint8 [B,H,W,3] images, two branches, written from the
    facts alone: per-image InstanceNorm statistics, exchange after the INs of conv2..conv7,
    skip connections enc7..enc1, tanh, softmax(alpha) ensemble of the branches."""
    xs = [(im.float() / 255 - 0.5) / 0.5 for im in images]
    xs = [x.permute(0, 3, 1, 2) for x in xs]

    def inorm(x, prefix):
        return F.instance_norm(x, weight=state[prefix + "weight"], bias=state[prefix + "bias"],
                               eps=1e-5)

    encoded = []
    for k in range(1, 9):
        w, b = state[f"conv{k}.conv.module.weight"], state[f"conv{k}.conv.module.bias"]
        ys = [F.conv2d(F.leaky_relu(x, 0.2) if k > 1 else x, w, b, stride=2, padding=1)
              for x in xs]
        if 2 <= k <= 7:
            ys = [inorm(y, f"conv{k}.insnorm_conv.insnorm_{m}.") for m, y in enumerate(ys)]
            g0 = state[f"conv{k}.insnorm_conv.insnorm_0.weight"].abs()
            g1 = state[f"conv{k}.insnorm_conv.insnorm_1.weight"].abs()
            a, c = ys
            ys = [torch.where((g0 >= theta).view(1, -1, 1, 1), a, c),
                  torch.where((g1 >= theta).view(1, -1, 1, 1), c, a)]
        encoded.append(ys)
        xs = ys
    for k in range(1, 9):
        w, b = state[f"deconv{k}.deconv.module.weight"], state[f"deconv{k}.deconv.module.bias"]
        ys = [F.conv_transpose2d(torch.relu(x), w, b, stride=2, padding=1) for x in xs]
        if k <= 7:
            ys = [inorm(y, f"deconv{k}.insnorm_deconv.insnorm_{m}.") for m, y in enumerate(ys)]
            ys = [torch.cat([y, e], 1) for y, e in zip(ys, encoded[7 - k])]
        xs = ys
    outs = [torch.tanh(x) for x in xs]
    weights = torch.softmax(state["alpha"], 0)
    return outs + [weights[0] * outs[0] + weights[1] * outs[1]]


@pytest.fixture(scope="module")
def official_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("official") / "checkpoint-gen.pkl"
    torch.save(official_state_dict(), path)
    return path


def test_the_official_generator_has_the_official_parameters_and_keys():
    model = build_translation_model(TranslationConfig())
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMETERS
    reference = official_state_dict()
    assert sum(v.numel() for k, v in reference.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == OFFICIAL_PARAMETERS
    assert set(model.state_dict()) == set(reference)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in reference.items()}


def test_an_official_checkpoint_gives_the_official_outputs_in_eval_mode(official_checkpoint):
    model = import_official_translation(official_checkpoint, TranslationConfig())
    assert not model.training
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (1, 256, 256, 3), generator=g, dtype=torch.uint8)
              for _ in range(2)]
    with torch.no_grad():
        ours = model(*images)
        want = official_forward(official_state_dict(), images)
    assert len(ours) == 3 and all(o.shape == (1, 3, 256, 256) for o in ours)
    for a, b in zip(ours, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # The exchange matters here: without it the branches' images differ from the official.
    model.conv4.exchange = False
    with torch.no_grad():
        assert (model(*images)[0] - want[0]).abs().max() > 1e-3
    # The running statistics in the file (random) are never used, and eval() keeps no dropout.
    with torch.no_grad():
        again = model(*images)
    torch.testing.assert_close(again[2], model(*images)[2])


def test_import_official_cli_writes_our_translation_checkpoint(official_checkpoint, tmp_path,
                                                                capsys):
    out = tmp_path / "cen_translation.pt"
    assert cli_main(["import-official", "--task", "translation", "--inputs", "reshading",
                     "edge_texture", "--target", "rgb", str(official_checkpoint),
                     str(out)]) == 0
    assert "54,431,633 parameters" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["task"] == "translation" and ckpt["config"]["inputs"] == ["reshading",
                                                                          "edge_texture"]
    model = load_model(out)
    state = official_state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_official_keys_are_named(tmp_path):
    state = official_state_dict()
    state["conv3.insnorm_conv.insnorm_2.weight"] = state.pop("conv3.insnorm_conv.insnorm_1.weight")
    path = tmp_path / "bad.pkl"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        import_official_translation(path, TranslationConfig())
    assert "conv3.insnorm_conv.insnorm_1.weight" in str(err.value)
    assert "conv3.insnorm_conv.insnorm_2.weight" in str(err.value)


# -- small generators ---------------------------------------------------------------------------

def small(arch="cen", inputs=("a", "b"), **kw):
    return TranslationConfig(arch=arch, inputs=list(inputs), target="c", ngf=4, size=32, **kw)


def images(count, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (2, size, size, 3), generator=g, dtype=torch.uint8)
            for _ in range(count)]


@pytest.mark.parametrize("arch,inputs,outputs", [
    ("cen", ("a", "b"), 3), ("cen", ("a", "b", "c2"), 4), ("shared", ("a", "b"), 3),
    ("single", ("a",), 2), ("early", ("a", "b"), 2), ("late", ("a", "b"), 3)])
def test_every_arch_returns_its_branches_and_the_ensemble_in_range(arch, inputs, outputs):
    model = build_translation_model(small(arch, inputs)).eval()
    with torch.no_grad():
        outs = model(*images(len(inputs)))
    assert len(outs) == outputs
    assert all(o.shape == (2, 3, 32, 32) and o.abs().max() <= 1 for o in outs)
    disc = build_discriminator(model.config, ndf=4)
    conds = [normalize_images(x) for x in images(len(inputs))]
    if arch == "early":
        conds = [torch.cat(conds, 1)]
    logits = disc(conds, outs[:len(conds)])
    assert len(logits) == len(conds) and logits[0].shape[:2] == (2, 1)


def test_instance_norm_uses_each_images_own_statistics_in_eval_mode():
    model = build_translation_model(small("shared")).eval()
    a, b = images(2)
    with torch.no_grad():
        together = model(a, b)[0]
        alone = model(a[:1], b[:1])[0]  # no other image changes the first one's output
    torch.testing.assert_close(together[:1], alone)


def test_test_time_dropout_is_off_by_default_and_an_option():
    xs = images(2)
    model = build_translation_model(small()).eval()
    with torch.no_grad():
        assert torch.equal(model(*xs)[2], model(*xs)[2])
    noisy = build_translation_model(small(test_dropout=True)).eval()
    with torch.no_grad():
        assert not torch.equal(noisy(*xs)[2], noisy(*xs)[2])


def test_cen_exchange_takes_the_other_branch_below_the_threshold_and_the_mean_for_three():
    model = build_translation_model(small(inputs=("a", "b", "c2"))).eval()
    block = model.conv2
    with torch.no_grad():
        block.insnorm_conv[0].weight[:3] = 1e-3  # branch 0, channels 0..2 take the others' mean
    x = [normalize_images(im) for im in images(3)]
    enc1 = model.conv1(x)
    normed = block.insnorm_conv(block.conv([F.leaky_relu(e, 0.2) for e in enc1]))
    out = block(enc1)
    torch.testing.assert_close(out[0][:, :3], (normed[1][:, :3] + normed[2][:, :3]) / 2)
    torch.testing.assert_close(out[0][:, 3:], normed[0][:, 3:])
    torch.testing.assert_close(out[1], normed[1])


def test_sparsity_alternates_halves_over_the_encoder_insnorms_in_parameter_order():
    model = build_translation_model(small())
    expected, index = 0.0, 0
    for name, p in model.named_parameters():
        if "insnorm_conv" in name and name.endswith("weight"):
            half = p.numel() // 2
            expected += float((p[:half] if index % 2 == 0 else p[half:]).detach().abs().sum())
            index += 1
    assert model.sparsity_penalty().item() == pytest.approx(expected)
    assert build_translation_model(small("shared")).sparsity_penalty().item() == 0.0
    # Only exchange INs (conv2 .. conv<levels-1>) get its gradient.
    model.sparsity_penalty().backward()
    assert model.conv1.insnorm_conv[0].weight.grad is None
    assert model.conv2.insnorm_conv[0].weight.grad[:2].abs().sum() > 0
    assert model.conv2.insnorm_conv[0].weight.grad[-2:].abs().sum() == 0


def test_our_translation_checkpoint_loads_as_a_generator(tmp_path):
    config = small("late")
    model = build_translation_model(config)
    path = save_checkpoint(tmp_path / "t.pt", model, config, {"task": "translation"})
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())


@pytest.mark.parametrize("command", [
    ["export", "{ckpt}", "-o", "{tmp}/x.onnx", "--height", "64", "--width", "64"],
    ["eval", "{ckpt}", "--data", "{tmp}", "--out", "{tmp}/r.json"],
    ["bench", "{ckpt}", "--height", "64", "--width", "64"],
])
def test_segmentation_commands_refuse_a_translation_checkpoint_in_one_line(tmp_path, capsys,
                                                                           command):
    path = save_checkpoint(tmp_path / "t.pt", build_translation_model(small("late")),
                           small("late"), {"task": "translation"})
    argv = [a.format(ckpt=path, tmp=tmp_path) for a in command]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "a translation checkpoint, not a segmentation one" in err[0]
    assert "cen-train translate eval|export" in err[0]


def test_a_bad_config_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        TranslationConfig(size=100)
    with pytest.raises(ValueError, match="exactly one input"):
        TranslationConfig(arch="single")
