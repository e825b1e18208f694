"""Recurrent layers: LSTM and RNN (Caffe's unrolled nets, run as a loop) and LSTMUnit.

Inputs are time-major: ``x (T, N, ...)``, ``cont (T, N)`` where ``cont_t = 0`` starts a new
sequence by multiplying the previous state by 0. Parameter blobs appear in the order the
unrolled net of lstm_layer.cpp / rnn_layer.cpp creates them:

* LSTM: ``W_xc (4H, D)``, ``b_c (4H,)``, [``W_xc_static (4H, D_s)``], ``W_hc (4H, H)``; gates
  are stacked i, f, o, g.
* RNN: ``W_xh (H, D)``, ``b_h (H,)``, [``W_xh_static (H, D_s)``], ``W_hh (H, H)``,
  ``W_ho (H, H)``, ``b_o (H,)``; ``h_t = tanh(...)``, output ``o_t = tanh(W_ho h_t + b_o)``.

Bottoms: x, cont, [x_static (N, ...)], and with ``expose_hidden`` the initial states (h0 [, c0],
each (1, N, H)); tops: the output sequence and with ``expose_hidden`` the final states.
Caffe semantics: exposed final states carry no gradient back (their diffs are ignored) and
no gradient reaches h0/c0; without ``expose_hidden`` the final state of one forward is the
initial state of the next (Caffe copies h_T/c_T into h_0/c_0), zero at first.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import Layer, Shape, register_layer

Tensor = torch.Tensor


def _count(shape: Sequence[int], start: int = 0) -> int:
    n = 1
    for d in tuple(shape)[start:]:
        n *= int(d)
    return n


class _LSTMUnitFn(torch.autograd.Function):
    """One LSTM step with lstm_unit_layer.cpp's backward (forget-gate term via f(1-f))."""

    @staticmethod
    def forward(ctx, c_prev: Tensor, gates: Tensor, cont: Tensor):
        hidden = c_prev.shape[-1]
        i = torch.sigmoid(gates[..., :hidden])
        f = torch.sigmoid(gates[..., hidden:2 * hidden])
        o = torch.sigmoid(gates[..., 2 * hidden:3 * hidden])
        g = torch.tanh(gates[..., 3 * hidden:])
        keep = cont.unsqueeze(-1)
        f = torch.where(keep == 0, torch.zeros_like(f), keep * f)
        c = f * c_prev + i * g
        tanh_c = torch.tanh(c)
        h = o * tanh_c
        ctx.save_for_backward(c_prev, i, f, o, g, tanh_c)
        return c, h

    @staticmethod
    def backward(ctx, dc: Tensor | None, dh: Tensor | None):
        c_prev, i, f, o, g, tanh_c = ctx.saved_tensors
        dc = torch.zeros_like(c_prev) if dc is None else dc
        dh = torch.zeros_like(c_prev) if dh is None else dh
        c_term = dc + dh * o * (1 - tanh_c * tanh_c)
        d_prev = c_term * f if ctx.needs_input_grad[0] else None
        d_gates = None
        if ctx.needs_input_grad[1]:
            d_gates = torch.cat([c_term * g * i * (1 - i),
                                 c_term * c_prev * f * (1 - f),
                                 dh * tanh_c * o * (1 - o),
                                 c_term * i * (1 - g * g)], dim=-1)
        return d_prev, d_gates, None


def lstm_unit(c_prev: Tensor, gates: Tensor, cont: Tensor) -> tuple[Tensor, Tensor]:
    """c_t, h_t from c_{t-1} (..., H), gate inputs (..., 4H) in order i, f, o, g, and cont (...)."""
    return _LSTMUnitFn.apply(c_prev, gates, cont.detach().to(gates.dtype))


@register_layer("LSTMUnit", bottoms=3, tops=2)
class LSTMUnit(Layer):
    """One LSTM time step: bottoms c_prev (1, N, H), gates x (1, N, 4H), cont (1, N); tops c, h.

    c = cont*sigmoid(f)*c_prev + sigmoid(i)*tanh(g) (f forced to 0 where cont = 0),
    h = sigmoid(o)*tanh(c). No gradient to cont. Golden ``LSTMUnit__N2_H3``.
    """

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom != 2  # the sequence-continuation indicators

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check(self.bottom_shapes)

    def _check(self, shapes: Sequence[Shape]) -> None:
        c_prev, x, cont = (tuple(s) for s in shapes)
        for name, shape, axes in (("c_prev", c_prev, 3), ("x", x, 3), ("cont", cont, 2)):
            if len(shape) != axes or shape[0] != 1 or shape[1] != c_prev[1]:
                raise self.error(f"bottom {name} has shape {shape}; expected {axes} axes "
                                 f"(1, {c_prev[1] if len(c_prev) > 1 else 'N'}, ...)")
        if x[2] != 4 * c_prev[2]:
            raise self.error(f"bottom x has {x[2]} gate inputs; expected 4 * {c_prev[2]}")

    def forward(self, c_prev: Tensor, x: Tensor, cont: Tensor) -> list[Tensor]:
        self._check([tuple(c_prev.shape), tuple(x.shape), tuple(cont.shape)])
        c, h = lstm_unit(c_prev, x, cont)
        return [c, h]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check(bottom_shapes)
        return [tuple(bottom_shapes[0])] * 2


class _Recurrent(Layer):
    """Shared set-up of LSTM and RNN: bottom/top layout, checks, parameter creation, state."""

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom != 1  # the sequence-continuation indicators

    num_states = 1  # recurrent state blobs: h (RNN) or h, c (LSTM)
    gate_factor = 1  # rows of the input transforms per output unit (4 for LSTM)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rp = self.param.recurrent_param
        self.hidden = int(rp.num_output)
        if self.hidden <= 0:
            raise self.error("num_output must be positive (recurrent_param.num_output)")
        self.expose_hidden = bool(rp.expose_hidden)
        exposed = self.num_states if self.expose_hidden else 0
        n_bottoms, n_tops = len(self.bottom_shapes), len(self.param.top)
        if not 2 + exposed <= n_bottoms <= 3 + exposed:
            raise self.error(f"{n_bottoms} bottoms; expected x, cont, [x_static]"
                             + (f" and {exposed} initial state(s)" if exposed else ""))
        if n_tops != 1 + exposed:
            raise self.error(f"{n_tops} tops; expected {1 + exposed} "
                             + ("(output and final states, expose_hidden)" if exposed else "(output)"))
        self.static_input = n_bottoms > 2 + exposed
        self._check_shapes(self.bottom_shapes)
        x_dim = _count(self.bottom_shapes[0], 2)
        rows = self.gate_factor * self.hidden
        wf = rp.weight_filler if rp.HasField("weight_filler") else None
        bf = rp.bias_filler if rp.HasField("bias_filler") else None
        self.add_blob((rows, x_dim), wf)
        self.add_blob((rows,), bf)
        if self.static_input:
            self.add_blob((rows, _count(self.bottom_shapes[2], 1)), wf)
        self._add_hidden_blobs(wf, bf)
        self._state: list[Tensor] | None = None

    def _add_hidden_blobs(self, wf, bf) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_shapes(self, shapes: Sequence[Shape]) -> None:
        x, cont = tuple(shapes[0]), tuple(shapes[1])
        if len(x) < 2:
            raise self.error(f"bottom x has shape {x}; expected at least 2 axes (T, N, ...)")
        if len(cont) != 2 or cont != x[:2]:
            raise self.error(f"bottom cont has shape {cont}; expected exactly (T, N) = {x[:2]}")
        if self.static_input:
            xs = tuple(shapes[2])
            if len(xs) < 1 or xs[0] != x[1]:
                raise self.error(f"bottom x_static has shape {xs}; expected (N={x[1]}, ...)")
        if self.expose_hidden:
            want = (1, x[1], self.hidden)
            first = 3 if self.static_input else 2
            for j, s in enumerate(shapes[first:]):
                if tuple(s) != want:
                    raise self.error(f"initial state bottom {first + j} has shape {tuple(s)}; "
                                     f"expected {want}")

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check_shapes(bottom_shapes)
        t, n = bottom_shapes[0][:2]
        tops = [(t, n, self.hidden)]
        if self.expose_hidden:
            tops += [(1, n, self.hidden)] * self.num_states
        return tops

    def _initial_states(self, bottoms: Sequence[Tensor], n: int, like: Tensor) -> list[Tensor]:
        if self.expose_hidden:
            first = 3 if self.static_input else 2
            return [b.detach().reshape(n, self.hidden) for b in bottoms[first:]]
        state = self._state
        if state is None or state[0].shape != (n, self.hidden):
            return [like.new_zeros(n, self.hidden) for _ in range(self.num_states)]
        return [s.to(device=like.device, dtype=like.dtype) for s in state]

    def _inputs(self, bottoms: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """x projected for all steps (T, N, rows), cont (T, N), static projection (N, rows)."""
        self._check_shapes([tuple(b.shape) for b in bottoms])
        x, cont = bottoms[0], bottoms[1]
        t, n = x.shape[:2]
        w_x, b_x = self.blobs[0], self.blobs[1]
        x_proj = torch.nn.functional.linear(x.reshape(t, n, -1), w_x, b_x)
        static = None
        if self.static_input:
            static = torch.nn.functional.linear(bottoms[2].reshape(n, -1), self.blobs[2])
        return x_proj, cont.detach().to(x.dtype), static

    @staticmethod
    def _pre_activation(h: Tensor, w_h: Tensor, x_step: Tensor, cont_step: Tensor,
                        static: Tensor | None) -> Tensor:
        """W_h (cont_t * h_{t-1}) + W_x x_t + b [+ W_static x_static], as the unrolled net sums it."""
        pre = torch.nn.functional.linear(h * cont_step.unsqueeze(1), w_h) + x_step
        return pre if static is None else pre + static

    def _finish(self, outputs: list[Tensor], states: list[Tensor]) -> list[Tensor]:
        out = torch.stack(outputs, dim=0)
        if out.device.type != "meta" and not self.expose_hidden:
            self._state = [s.detach() for s in states]
        tops = [out]
        if self.expose_hidden:
            tops += [s.detach().unsqueeze(0) for s in states]
        return tops

    def reset(self) -> None:
        """Forget the carried-over state (Caffe's RecurrentLayer::Reset)."""
        self._state = None


@register_layer("LSTM", bottoms=(2, 5), tops=(1, 3))
class LSTM(_Recurrent):
    """Long short-term memory over T steps, as Caffe's unrolled LSTM net computes it.

    Per step: gates = W_hc (cont_t * h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static], then
    LSTMUnit. Output: h (T, N, H). Golden ``LSTM__T3_N2_D4_H5``.
    """

    num_states = 2
    gate_factor = 4

    def _add_hidden_blobs(self, wf, bf) -> None:
        self.add_blob((4 * self.hidden, self.hidden), wf)

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        x_proj, cont, static = self._inputs(bottoms)
        t, n = x_proj.shape[:2]
        h, c = self._initial_states(bottoms, n, x_proj)
        w_h = self.blobs[-1]
        outputs: list[Tensor] = []
        for step in range(t):
            gates = self._pre_activation(h, w_h, x_proj[step], cont[step], static)
            c, h = lstm_unit(c, gates, cont[step])
            outputs.append(h)
        return self._finish(outputs, [h, c])


@register_layer("RNN", bottoms=(2, 4), tops=(1, 2))
class RNN(_Recurrent):
    """Elman RNN over T steps, as Caffe's unrolled RNN net computes it.

    h_t = tanh(W_hh (cont_t * h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]),
    o_t = tanh(W_ho h_t + b_o). Output: o (T, N, H). Golden ``RNN__T3_N2_D4_H5``.
    """

    def _add_hidden_blobs(self, wf, bf) -> None:
        self.add_blob((self.hidden, self.hidden), wf)  # W_hh
        self.add_blob((self.hidden, self.hidden), wf)  # W_ho
        self.add_blob((self.hidden,), bf)  # b_o

    def forward(self, *bottoms: Tensor) -> list[Tensor]:
        x_proj, cont, static = self._inputs(bottoms)
        t, n = x_proj.shape[:2]
        (h,) = self._initial_states(bottoms, n, x_proj)
        w_hh, w_ho, b_o = self.blobs[-3], self.blobs[-2], self.blobs[-1]
        outputs: list[Tensor] = []
        for step in range(t):
            h = torch.tanh(self._pre_activation(h, w_hh, x_proj[step], cont[step], static))
            outputs.append(torch.tanh(torch.nn.functional.linear(h, w_ho, b_o)))
        return self._finish(outputs, [h])
