"""cen-perception-decode-costs: every step of decoding a compressed pair, timed."""
import subprocess
import sys

from cen_perception_dev import decode_costs


def test_the_table_has_every_step_for_every_size(capsys):
    assert decode_costs.main(["--size", "64x48", "96x64", "--repeat", "1"]) == 0
    table = capsys.readouterr().out
    for step in ("JPEG colour, the node's decoder", "JPEG colour, reduced to 1/2",
                 "PNG depth, the node's decoder", "PNG row filters", "inflate, zlib",
                 "unfilter, numpy, every row as Sub"):
        assert step in table, table
    assert "64x48" in table and "96x64" in table


def test_a_bad_size_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "cen_perception_dev.decode_costs",
                           "--size", "640"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("cen-perception-decode-costs: size must be WIDTHxHEIGHT, "
                                   "like 1920x1080, got '640'")
