"""The package's file helpers."""
import pytest

from cen_training.files import atomic_write


def test_atomic_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "file.bin"
    assert atomic_write(path, lambda tmp: tmp.write_bytes(b"first")) == path
    atomic_write(path, lambda tmp: tmp.write_bytes(b"second"))
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]
