"""The book's one aggregation: mean and sample sd over seeds; one value has no known spread."""
import math

import numpy as np
import pytest

from vqpaper.spread import aggregate, mean_sd_text, sample_sd


def test_sample_sd_is_numpy_s_with_one_degree_of_freedom():
    values = [0.31, 0.29, 0.4, 0.35]
    assert sample_sd(values) == pytest.approx(float(np.std(values, ddof=1)), rel=1e-12)
    with pytest.raises(ValueError, match="at least two"):
        sample_sd([1.0])


def test_one_value_has_an_unknown_spread_never_zero():
    one = aggregate([0.5])
    assert one == {"mean": 0.5, "std": None, "per_seed": [0.5]}
    assert mean_sd_text(one) == "0.5 (sd unknown, 1 seed)"
    two = aggregate([0.5, 0.7])
    assert two["std"] == pytest.approx(math.sqrt(0.02)) and mean_sd_text(two) == "0.6 ± 0.14"


def test_a_nan_makes_mean_and_spread_nan():
    a = aggregate([0.5, float("nan"), 0.7])
    assert math.isnan(a["mean"]) and math.isnan(a["std"]) and len(a["per_seed"]) == 3


def test_plots_draw_what_aggregate_computes():
    from vqpaper import plots

    mean, sd, n = plots._mean_std([1.0, float("nan")])
    assert math.isnan(mean) and n == 2
    mean, sd, n = plots._mean_std([2.0])
    assert mean == 2.0 and math.isnan(sd) and n == 1  # no error bar for an unknown spread
