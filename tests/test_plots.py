"""The report's plots: each writes a real PNG of the promised size, depends on its data, and refuses
input it cannot draw."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from eval import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LANGS = ["ar", "de", "en", "es", "ja"]


def _size(figsize) -> tuple[int, int]:
    """(height, width) in pixels of a FIGSIZE-inch figure saved at DPI."""
    return round(figsize[1] * plots.DPI), round(figsize[0] * plots.DPI)


def _pixels(path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def _check_png(path, figsize=plots.FIGSIZE) -> np.ndarray:
    assert path.exists()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = _pixels(path)
    assert pixels.shape[:2] == _size(figsize)
    assert pixels[..., :3].std() > 0.01  # something was drawn, not a blank canvas
    return pixels


def _radar_data(shift: float) -> dict[str, dict[str, float]]:
    return {"InfoNCE": {lang: -40.0 + 15 * i + shift for i, lang in enumerate(LANGS)},
            "MIMO": {lang: 80.0 - 3 * i for i, lang in enumerate(LANGS)}}


def test_import_is_cheap_and_side_effect_free():
    code = "import sys, eval.plots; print(any(m.startswith('matplotlib') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scatter_writes_png_that_depends_on_data(tmp_path):
    points = {"InfoNCE": (0.9, -1.2), "XLCO": (0.5, -1.0), "MIMO": (0.4, -1.4)}
    # returns the Path, creating missing parent folders; a str path is accepted
    first = plots.alignment_uniformity_scatter(points, str(tmp_path / "a" / "b" / "scatter.png"))
    assert first == tmp_path / "a" / "b" / "scatter.png"
    _check_png(first)
    moved = plots.alignment_uniformity_scatter({**points, "MIMO": (0.2, -1.6)}, tmp_path / "moved.png")
    assert first.read_bytes() != moved.read_bytes()


def test_scatter_skips_nan_points(tmp_path):
    points = {"InfoNCE": (0.9, -1.2), "MIMO": (0.4, -1.4)}
    clean = plots.alignment_uniformity_scatter(points, tmp_path / "clean.png")
    with_nan = plots.alignment_uniformity_scatter({**points, "broken": (math.nan, -1.0)}, tmp_path / "nan.png")
    _check_png(with_nan)
    # the NaN point is dropped entirely: same picture as without it
    assert np.array_equal(_pixels(clean), _pixels(with_nan))
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.alignment_uniformity_scatter({"broken": (math.nan, math.nan)}, tmp_path / "none.png")


def test_radar_writes_png_that_depends_on_data(tmp_path):
    first = plots.mrc_radar(_radar_data(0.0), tmp_path / "radar.png")
    _check_png(first, plots.RADAR_FIGSIZE)
    second = plots.mrc_radar(_radar_data(20.0), tmp_path / "radar2.png")
    assert first.read_bytes() != second.read_bytes()


def test_radar_refuses_what_it_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.mrc_radar({}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="at least 3"):
        plots.mrc_radar({"MIMO": {"en": 90.0, "de": 80.0}}, tmp_path / "r.png")
    missing = _radar_data(0.0)
    del missing["MIMO"]["ja"]
    with pytest.raises(ValueError, match="'MIMO'.*'ja'"):
        plots.mrc_radar(missing, tmp_path / "r.png")
    nan = _radar_data(0.0)
    nan["InfoNCE"]["de"] = math.nan
    with pytest.raises(ValueError, match="'InfoNCE'.*'de'"):
        plots.mrc_radar(nan, tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_lambda_curve_and_baselines_change_the_picture(tmp_path):
    curve = {0.0: 0.52, 0.5: 0.58, 0.25: 0.56, 1.0: 0.49}  # unsorted on purpose
    baselines = {"Stage 1": 0.45, "InfoNCE": 0.47, "XLCO": 0.50, "LaKDA": 0.51}
    plain = plots.lambda_curve(curve, tmp_path / "plain.png")
    _check_png(plain)
    with_lines = plots.lambda_curve(curve, tmp_path / "lines.png", baselines=baselines)
    _check_png(with_lines)
    other = plots.lambda_curve({**curve, 0.5: 0.40}, tmp_path / "other.png", baselines=baselines)
    assert len({p.read_bytes() for p in (plain, with_lines, other)}) == 3
    # points are joined in lambda order, whatever order the dict has
    reordered = plots.lambda_curve(dict(sorted(curve.items())), tmp_path / "sorted.png")
    assert np.array_equal(_pixels(plain), _pixels(reordered))


def test_lambda_curve_skips_nan_and_refuses_empty(tmp_path):
    _check_png(plots.lambda_curve({0.0: 0.5, 0.5: math.nan, 1.0: 0.4}, tmp_path / "c.png",
                                  baselines={"XLCO": math.nan, "LaKDA": 0.45}))
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.lambda_curve({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.lambda_curve({0.5: math.nan}, tmp_path / "empty.png")


def test_dataset_bars_with_gaps(tmp_path):
    scores = {"InfoNCE": {"MIRACL": 0.41, "XOR-Retrieve": 0.35, "MLQA": 0.50},
              "MIMO": {"MIRACL": 0.47, "MLQA": 0.55, "Belebele": 0.80},  # no XOR-Retrieve: a gap
              "XLCO": {"MIRACL": math.nan, "XOR-Retrieve": 0.38}}  # NaN: a gap too
    first = plots.dataset_bars(scores, tmp_path / "bars.png")
    _check_png(first)
    second = plots.dataset_bars({**scores, "MIMO": {"MIRACL": 0.20}}, tmp_path / "bars2.png")
    assert first.read_bytes() != second.read_bytes()
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.dataset_bars({}, tmp_path / "empty.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.dataset_bars({"MIMO": {"MIRACL": math.nan}}, tmp_path / "empty.png")


def test_scatter_refuses_empty(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.alignment_uniformity_scatter({}, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
