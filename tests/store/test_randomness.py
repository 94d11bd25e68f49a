"""The pool of random bits event ids are drawn from."""

from __future__ import annotations

import pytest

from server.store.randomness import RandomBits


def test_bits_drawn_in_bulk_are_56_random_bits_each() -> None:
    draw = RandomBits(3)  # refilled every third id
    drawn = [draw(56) for _ in range(1000)]
    assert all(0 <= bits < 2**56 for bits in drawn)
    assert len(set(drawn)) == 1000
    assert max(drawn).bit_length() > 50  # the high bits are used too


@pytest.mark.parametrize("bits", [0, 65])
def test_a_width_outside_the_pool_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 64 bits"):
        RandomBits()(bits)
