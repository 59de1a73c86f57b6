"""Plots render to PNG files without a display.

Run: python -m pytest tests/scaling/test_plots.py -q
"""

from crossdistill.scaling.plots import plot_capacity_gap, plot_fit, plot_isoflop

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path):
    a = plot_capacity_gap(tmp_path / "gap.png", [(1e9, 2e10), (1e10, 2e11)])
    b = plot_isoflop(tmp_path / "sub" / "iso.png", [1e21])
    rows = [{"observed": 2.5, "predicted": 2.51, "held_out": False},
            {"observed": 2.2, "predicted": 2.19, "held_out": True}]
    c = plot_fit(tmp_path / "fit.png", rows)
    for path in (a, b, c):
        assert path.read_bytes()[:8] == PNG
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".png" and p.name.startswith("tmp")]
