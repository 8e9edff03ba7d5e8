"""Fixtures for the training tests: tiny synthetic RGB-D datasets written to temporary folders."""
import pathlib

import pytest


def write_tiny_dataset(path, num_train: int = 8, num_val: int = 4, size: int = 64,
                       seed: int = 0) -> pathlib.Path:
    """The synthetic dataset of ``cen-train synth`` (generic layout) at ``size`` x ``size``."""
    from cen_training.data.synthetic import write_dataset
    return write_dataset(path, num_train, num_val, size, size, seed=seed, progress=False)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> pathlib.Path:
    """8 training and 4 validation scenes of 64 x 64 pixels; treat as read-only."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_rgbd") / "data")


@pytest.fixture
def tiny_dataset_copy(tiny_dataset, tmp_path) -> pathlib.Path:
    """A private copy of ``tiny_dataset`` that a test may break."""
    import shutil
    return pathlib.Path(shutil.copytree(tiny_dataset, tmp_path / "data"))


@pytest.fixture(scope="session")
def make_tiny_dataset():
    """``make_tiny_dataset(path, num_train=8, num_val=4, size=64, seed=0) -> path``."""
    return write_tiny_dataset


@pytest.fixture(scope="module")
def one_cpu_thread():
    """Tiny models gain nothing from more threads, and threads waiting on each other on a busy
    machine would slow every step down (``pytestmark = usefixtures("one_cpu_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
