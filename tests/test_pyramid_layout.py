"""The token pyramid as one sequence: scale-major, time- or frequency-major raster order inside a scale."""
from __future__ import annotations

import pytest
import torch

from mars_dist.errors import UserError
from mars_dist.models.generators.layout import PyramidLayout

SCALES = [(1, 1), (2, 3), (3, 4)]


def _pyramid(batch: int = 2):
    """Token maps whose values are their own row-major position in the pyramid."""
    maps, start = [], 0
    for h, w in SCALES:
        maps.append((torch.arange(h * w) + start).view(1, h, w).expand(batch, -1, -1).clone())
        start += h * w
    return maps


def test_time_major_goes_column_by_column_and_frequency_major_row_by_row():
    maps = _pyramid()
    time_major = PyramidLayout(SCALES, "time").flatten(maps)[0].tolist()
    freq_major = PyramidLayout(SCALES, "frequency").flatten(maps)[0].tolist()
    # scale 1 is [[1, 2, 3], [4, 5, 6]]: rows are frequency, columns time
    assert time_major[:7] == [0, 1, 4, 2, 5, 3, 6]
    assert freq_major == list(range(sum(h * w for h, w in SCALES)))


@pytest.mark.parametrize("order", ["time", "frequency"])
def test_flatten_and_unflatten_are_inverse_for_tokens_and_masks(order):
    layout = PyramidLayout(SCALES, order)
    gen = torch.Generator().manual_seed(0)
    tokens = [torch.randint(0, 50, (3, h, w), generator=gen) for h, w in SCALES]
    masks = [torch.rand(3, h, w, generator=gen) < 0.5 for h, w in SCALES]
    for maps in (tokens, masks):
        back = layout.unflatten(layout.flatten(maps))
        assert all(torch.equal(a, b) for a, b in zip(maps, back))
    seq = layout.flatten(_pyramid(1))[0]
    assert layout.level_L.tolist() == [k for k, (h, w) in enumerate(SCALES) for _ in range(h * w)]
    assert all(seq[i] >= layout.starts[layout.level_L[i]] for i in range(layout.num_tokens)), "scale-major"


def test_unknown_order_is_a_user_error_naming_the_key():
    with pytest.raises(UserError, match=r"order='diagonal': expected one of time, frequency"):
        PyramidLayout(SCALES, "diagonal")
