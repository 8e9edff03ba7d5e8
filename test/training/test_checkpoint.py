"""Our checkpoints: the version 1 (flat) layout still loads; official keys map to ours."""
import pytest
import torch

from cen_training.card import default_card
from cen_training.checkpoint import from_flat_layout, load_checkpoint, load_model, save_checkpoint
from cen_training.errors import CheckpointError
from cen_training.models import ModelConfig, build_model


def _flat(key: str) -> str:
    """A key as version 1 checkpoints (and the official code) name it: the decoder's layers
    beside the encoder, without ``decoder.``."""
    return key.replace("decoder.", "")


def _write_version_1(path, model):
    """A checkpoint as ``save_checkpoint`` wrote it before the decoder was a module."""
    save_checkpoint(path, model, model.config, default_card(model.config.num_classes))
    ckpt = torch.load(path, weights_only=True)
    ckpt["version"] = 1
    ckpt["model"] = {_flat(k): v for k, v in ckpt["model"].items()}
    assert ("clf_conv.module.weight" in ckpt["model"]
            or "nets.0.clf_conv.module.weight" in ckpt["model"])
    torch.save(ckpt, path)


@pytest.mark.parametrize("arch", ["cen", "late"])
def test_a_version_1_checkpoint_loads(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, backbone="resnet18", decoder="light",
                                    num_classes=4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # nothing left at its initial value
    path = tmp_path / "v1.pt"
    _write_version_1(path, model)

    assert load_checkpoint(path)["model"].keys() == model.state_dict().keys()
    loaded = load_model(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    rgb = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    depth = torch.rand(1, 32, 32) * 3
    with torch.no_grad():
        for a, b in zip(loaded(rgb, depth), model.eval()(rgb, depth)):
            assert torch.equal(a, b)


def test_a_version_1_checkpoint_with_a_wrong_key_names_it(tmp_path):
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=4))
    path = tmp_path / "v1.pt"
    _write_version_1(path, model)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["clf_conv.module.weight"] = torch.zeros(4, 128, 1, 1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError,
                       match=r"mis-shaped key\(s\): decoder.clf_conv.module.weight"):
        load_model(path)


def test_from_flat_layout_renames_only_flat_decoder_keys():
    model = build_model(ModelConfig(arch="cen", backbone="resnet18", decoder="light",
                                    num_classes=4))
    ours = model.state_dict()
    flat = {_flat(k): v for k, v in ours.items()}
    assert from_flat_layout(model, flat).keys() == ours.keys()
    assert from_flat_layout(model, ours).keys() == ours.keys()  # already ours
    odd = {**flat, "layer9.weight": torch.zeros(1)}
    assert "layer9.weight" in from_flat_layout(model, odd)  # left for the strict check to name
