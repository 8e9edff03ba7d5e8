"""Translation data: Taskonomy's reading rules and layout, the generic layout, the official
transforms, and the synthetic translation modalities."""
import math

import cv2
import numpy as np
import pytest
import torch

from cen_training.data.taskonomy import (
    TranslationDataset,
    TranslationTransform,
    domain_name,
    read_domain_image,
)
from cen_training.errors import DatasetError
from cen_training.translation.synthetic_modalities import (
    TRANSLATION_MODALITIES,
    write_translation_modalities,
)


def test_reading_rules_follow_the_official_code(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    image = read_domain_image(tmp_path / "grey.png", "reshading")
    assert image.shape == (8, 8, 3) and (image == grey[..., None]).all()

    raw = np.array([[0, 511, 4095, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "depth.png"), raw)
    depth = read_domain_image(tmp_path / "depth.png", "depth_zbuffer")[..., 0]
    want = np.clip(np.log1p(raw.astype(float)) * 255 / 11.1, 0, 255).astype(np.uint8)
    assert (depth == want).all() and depth[0, 3] == 254 and depth[0, 1] == int(
        math.log(512) * 255 / 11.1)

    edges = np.array([[0, 1000, 11355, 20000]], np.uint16)
    cv2.imwrite(str(tmp_path / "edges.png"), edges)
    scaled = read_domain_image(tmp_path / "edges.png", "edge_texture")[..., 0]
    assert scaled.tolist() == [[0, int(1000 * 255 / 11355), 255, 255]]
    occlusion = read_domain_image(tmp_path / "edges.png", "edge_occlusion")[..., 0]
    assert occlusion[0, 2] == int(11355 * 255 / 11584)

    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert (read_domain_image(tmp_path / "rgb.png", "rgb") == rgb).all()
    with pytest.raises(DatasetError, match="missing"):
        read_domain_image(tmp_path / "nothing.png", "rgb")


def test_domain_ids_are_the_official_ones():
    assert [domain_name(i) for i in (0, 2, 7)] == ["rgb", "reshading", "edge_texture"]
    assert domain_name("normal") == "normal"
    with pytest.raises(DatasetError, match="unknown domain id"):
        domain_name(12)


def write_taskonomy(root, views=3, size=40):
    rng = np.random.default_rng(0)
    lines = []
    for v in range(views):
        for domain in ("rgb", "reshading", "depth_zbuffer"):
            (root / domain).mkdir(parents=True, exist_ok=True)
            path = root / domain / f"point_0_view_{v}_domain_{domain}.png"
            if domain == "depth_zbuffer":
                cv2.imwrite(str(path), rng.integers(0, 65535, (size, size)).astype(np.uint16))
            else:
                cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3)).astype(np.uint8))
        lines.append(f"{{domain}}/point_0_view_{v}_domain_{{domain}}.png")
    (root / "train_domain.txt").write_text("\n".join(lines[:2]) + "\n")
    (root / "val_domain.txt").write_text(lines[2] + "\n")
    return root


def test_taskonomy_layout_with_domain_placeholders(tmp_path):
    root = write_taskonomy(tmp_path / "taskonomy")
    train = TranslationDataset(root, "train", ["reshading", "4"], "0",
                               transform=TranslationTransform(32, 36, train=True))
    assert train.layout == "taskonomy" and train.domains == ["reshading", "depth_zbuffer", "rgb"]
    sample = train[1]
    assert len(sample["inputs"]) == 2 and sample["target"].shape == (32, 32, 3)
    assert sample["target"].dtype == torch.uint8 and sample["name"].endswith("domain_rgb")
    val = TranslationDataset(root, "val", ["reshading"], "rgb",
                             transform=TranslationTransform(16, train=False))
    assert len(val) == 1 and val[0]["inputs"][0].shape == (16, 16, 3)
    with pytest.raises(DatasetError, match="no folder for domain"):
        TranslationDataset(root, "train", ["normal"], "rgb")


def test_training_transform_crops_and_flips_every_domain_alike():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (50, 50, 3)).astype(np.uint8)
    transform = TranslationTransform(size=32, load_size=40, train=True)
    flips = set()
    for seed in range(12):
        a, b = transform([image, image.copy()], np.random.default_rng(seed))
        assert a.shape == (32, 32, 3) and (a == b).all()
        resized = transform.__class__(size=40, train=False)([image], None)[0]
        flips.add(any((a == resized[t:t + 32, s:s + 32][:, ::-1]).all()
                      for t in range(9) for s in range(9)))
    assert flips == {True, False}  # both flipped and unflipped crops occur


def test_generic_layout_from_synth_translation(tmp_path, make_tiny_dataset):
    root = make_tiny_dataset(tmp_path / "data", num_train=3, num_val=2, size=40)
    stems = write_translation_modalities(root, progress=False)
    assert len(stems) == 5
    for name in TRANSLATION_MODALITIES:
        assert len(list((root / name).glob("*.png"))) == 5
    normal = cv2.imread(str(root / "normal" / f"{stems[0]}.png"))
    assert normal.shape == (40, 40, 3)
    data = TranslationDataset(root, "val", ["shading", "edge_texture", "depth"], "rgb")
    assert data.layout == "generic" and len(data) == 2
    sample = data[0]
    assert [x.shape for x in sample["inputs"]] == [(256, 256, 3)] * 3
    # The 16-bit millimetre depth follows the log rule: no saturated or empty image.
    depth = sample["inputs"][2].numpy()
    assert 50 < depth[depth > 0].mean() < 250


def test_missing_files_are_named_before_training(tmp_path, make_tiny_dataset):
    root = make_tiny_dataset(tmp_path / "data", num_train=2, num_val=1, size=32)
    write_translation_modalities(root, progress=False)
    victim = sorted((root / "shading").glob("train_*.png"))[0]
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.name):
        TranslationDataset(root, "train", ["shading"], "rgb")


def test_synth_cli_writes_the_translation_modalities(tmp_path, capsys):
    from cen_training.cli import main
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--num-train", "2", "--num-val", "1", "--height", "32",
                 "--width", "32", "--translation", "--no-progress"]) == 0
    folders = {p.name for p in out.iterdir() if p.is_dir()}
    assert folders >= {"rgb", "depth", *TRANSLATION_MODALITIES}
    assert "shading" in capsys.readouterr().out
