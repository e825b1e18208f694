"""layers.running_sums: Caffe's running-sum updates, applied at once or batched per pass."""
from __future__ import annotations

import torch

from caffelike.layers import running_sums


def _expected(s: torch.Tensor, values: list[torch.Tensor], factor: float) -> torch.Tensor:
    out = s.clone()
    for v in values:  # Caffe's axpby, one update after the other
        out = out * torch.tensor(factor, dtype=s.dtype) + v
    return out


def test_batched_updates_equal_immediate_ones_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(0)
    a0, b0 = torch.randn(5, generator=gen), torch.randn(1, generator=gen)
    va, vb = torch.randn(5, generator=gen), torch.ones(1)
    now = [a0.clone(), b0.clone()]
    running_sums.update(now, [va, vb], 0.999)
    later = [a0.clone(), b0.clone()]
    with running_sums.deferred():
        running_sums.update(later, [va, vb], 0.999)
        assert torch.equal(later[0], a0)  # queued, not applied yet
    assert all(torch.equal(x, y) for x, y in zip(now, later))
    assert torch.equal(now[0], _expected(a0, [va], 0.999))


def test_a_blob_queued_twice_is_updated_in_order() -> None:
    s = torch.full((3,), 2.0)
    v1, v2 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.5, 0.5])
    with running_sums.deferred():
        running_sums.update([s], [v1], 0.9)
        running_sums.update([s], [v2], 0.9)  # a layer sharing the blob: the first update goes first
    assert torch.equal(s, _expected(torch.full((3,), 2.0), [v1, v2], 0.9))


def test_a_buffer_rewritten_in_the_pass_is_applied_first() -> None:
    s, buffer = torch.zeros(2), torch.tensor([1.0, 2.0])
    with running_sums.deferred():
        running_sums.update([s], [buffer], 0.5, buffer)
        running_sums.release(buffer)  # its owner is about to overwrite it
        buffer.fill_(100.0)
    assert torch.equal(s, torch.tensor([1.0, 2.0]))


def test_flush_applies_what_is_queued_and_factors_group_apart() -> None:
    s, t = torch.ones(2), torch.ones(2)
    with running_sums.deferred():
        running_sums.update([s], [torch.ones(2)], 0.5)
        running_sums.update([t], [torch.ones(2)], 0.25)
        running_sums.flush()
        assert torch.equal(s, torch.full((2,), 1.5)) and torch.equal(t, torch.full((2,), 1.25))
    assert torch.equal(s, torch.full((2,), 1.5))  # nothing applied twice


def test_a_failing_pass_still_applies_its_updates() -> None:
    s = torch.zeros(1)
    try:
        with running_sums.deferred():
            running_sums.update([s], [torch.ones(1)], 0.5)
            raise ValueError("a layer failed")
    except ValueError:
        pass
    assert torch.equal(s, torch.ones(1))
