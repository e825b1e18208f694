"""Caffe's Solver: the training loop, testing, display, snapshots and resume.

This is ``Solver`` + ``SGDSolver`` of src/caffe/solver.cpp and solvers/sgd_solver.cpp with the
update rule factored out (:mod:`.updates`): :meth:`Solver.step` runs iterations (test at
``test_interval``, ``iter_size`` forward/backward passes, the smoothed loss display,
ApplyUpdate, snapshots, signal requests), :meth:`Solver.solve` adds resume, the final
snapshot and the extra forward pass Caffe runs to print the final loss.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Mapping

import numpy as np
import torch
from google.protobuf import text_format

from .. import accel, guard
from ..errors import SolverError, WeightsError, Where
from ..glog import get_logger
from ..proto import caffe_pb2
from . import messages, snapshot as snap
from ..allocator import keep_freed_memory
from .debug_info import DebugInfo
from .lr_policies import get_policy
from .nets import build_net, test_net_sources, train_net_source
from .scoring import OutputSums
from .segmentation import segmentation_lines
from .tensorboard import ScalarSink, TensorBoardSink, summary_writer_class
from .updates import UPDATE_RULES, Hyper, apply_update, check_hyper, get_rule

log = get_logger("solver")

F32 = np.float32
STOP, SNAPSHOT, NONE = "stop", "snapshot", "none"
ActionFn = Callable[[], str]


def read_solver_file(path: str) -> caffe_pb2.SolverParameter:
    """Read a solver prototxt as Caffe does (legacy upgrade, snapshot_prefix defaulting)."""
    from ..io import read_solver

    return read_solver(path)


class Solver:
    """A Caffe solver (pycaffe's ``caffe.SGDSolver`` & co.): nets, loop, snapshots.

    ``Solver(param_or_file, device=None, rank=None, world_size=None, action=None)`` (rank and
    world size default to ``caffelike.solver_rank()``/``solver_count()``: 0 and 1); the update
    rule is ``param.type`` (subclasses fix it). ``action`` is polled like Caffe's signal
    handler and returns ``"stop"``, ``"snapshot"`` or ``"none"``. Beyond Caffe: ``nan_guard``
    (stop on a non-finite loss naming the layer), ``amp`` ("bf16"/"fp16"), ``compile``
    (torch.compile), ``fuse`` (in-place BatchNorm+Scale pairs run as one kernel; on by
    default, values within float tolerance, gradients exact), ``channels_last`` (convolution
    weights and activations in NHWC; None: on CUDA with AMP, and on the CPU for nets of plain
    2-D convolutions, per convolution where it pays, see ``accel.channels_last_auto``),
    ``tensorboard`` (a folder: the root process writes the log lines' lr, train and test
    values there as TensorBoard scalars, see :mod:`.tensorboard`; another
    :class:`.tensorboard.ScalarSink` can be set as ``solver.scalars`` instead).
    """

    solver_type: str | None = None

    def __init__(self, param: caffe_pb2.SolverParameter | str | os.PathLike, *,
                 device: torch.device | str | None = None, rank: int | None = None,
                 world_size: int | None = None,
                 action: ActionFn | None = None, solver_file: str | None = None,
                 nan_guard: bool = True, amp: str | None = None, compile: bool = False,
                 fuse: bool = True, channels_last: bool | None = None,
                 tensorboard: str | os.PathLike | None = None):
        if isinstance(param, (str, os.PathLike)):
            solver_file = os.fspath(param)
            param = read_solver_file(solver_file)
        else:
            from ..io.upgrade import solver_needs_upgrade, upgrade_solver

            copy = caffe_pb2.SolverParameter()
            copy.CopyFrom(param)
            # read_solver has upgraded a solver read from a file; one built in code may be legacy.
            param = upgrade_solver(copy) if solver_needs_upgrade(copy) else copy
        if self.solver_type is not None:
            param.type = self.solver_type
        self.param = param
        from ..mode import solver_count, solver_rank

        # pycaffe's multi-process scripts set them with caffe.set_solver_rank/count (then caffe.NCCL)
        self.rank = solver_rank() if rank is None else rank
        self.world_size = solver_count() if world_size is None else world_size
        self.root = self.rank == 0
        if device is None:
            from ..mode import default_device
            device = default_device()
        self.device = torch.device(device)
        self.action = action
        self.solver_file = solver_file
        self.nan_guard = nan_guard  # stop with the failing layer named, not carry on as Caffe
        self.callbacks: list = []
        try:
            self.rule = get_rule(param.type)
            check_hyper(param.type, param)
            get_policy(param.lr_policy)(param, 0, 0)  # Caffe's CHECKs on gamma, stepsize, ...
        except SolverError as exc:
            if exc.where is None and solver_file:
                raise SolverError(exc.message, Where(file=solver_file)) from None
            raise
        self.hyper = Hyper.from_param(param)
        if tensorboard is not None:
            summary_writer_class()  # a missing package fails on every rank, before any work
        if self.root:
            log.info(messages.initializing_solver(text_format.MessageToString(param).rstrip("\n")))
        if param.average_loss < 1:
            raise SolverError(f"average_loss should be >= 1, got {param.average_loss}")
        self._check_snapshot_prefix()
        if param.random_seed >= 0:
            from ..mode import set_random_seed
            set_random_seed(param.random_seed + self.rank)
        files: dict = {}  # each net file is read once, also when train and test nets share it
        self.net = build_net(train_net_source(param, solver_file, files), self.device)
        self._load_weights(self.net)
        self.test_nets = [build_net(src, self.device, i)
                          for i, src in enumerate(test_net_sources(param, solver_file, files))]
        for net in self.test_nets:
            self._load_weights(net)
            net.share_trained_layers_with(self.net)
        self._seed_data_layers()
        self._debug = DebugInfo(self.net) if param.debug_info and self.root else None
        for net in self.test_nets if param.debug_info and self.root else []:
            DebugInfo(net).enabled = True  # Caffe's test nets log on every pass
        self._setup_accel(amp, compile, fuse, channels_last)
        if self.device.type == "cpu":
            keep_freed_memory()  # each iteration reuses the last one's pages (see .allocator)
        # where the numbers of the lr and output log lines also go (the root process only)
        self.scalars: ScalarSink = (TensorBoardSink(tensorboard, len(self.test_nets))
                                    if tensorboard is not None and self.root else ScalarSink())
        if self.root:
            log.info(messages.scaffolding_done())
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self._losses: list = []
        self._smoothed = F32(0)
        self._params = self.net.learnable_params
        self._lr_mults = tuple(i.lr_mult for i in self._params)
        self._decay_mults = tuple(i.decay_mult for i in self._params)
        # the Input layers' blobs, fed to each training pass as they are (Net.run would copy them)
        self._input_blobs = [(name, self.net.blobs[name]) for name in self.net.inputs]
        # in each blob's own layout (channels_last weights: NHWC), so the update's foreach ops
        # see one layout (mixed layouts take a slow path)
        self.history = [torch.zeros_like(p.tensor).detach()
                        for _ in range(self.rule.history_sets) for p in self._params]
        self._zero_diffs: dict[int, torch.Tensor] = {}
        self._select_updated()

    # ------------------------------------------------------------------ set-up helpers
    def _check_snapshot_prefix(self) -> None:
        p = self.param
        if not (self.root and p.snapshot):
            return
        if not p.HasField("snapshot_prefix"):
            raise SolverError("snapshot is specified but snapshot_prefix is not; add "
                              "snapshot_prefix: \"path/prefix\" to the solver")
        probe = snap.snapshot_filename(p.snapshot_prefix, 0, ".tempfile")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as exc:
            raise SolverError(f"cannot write to snapshot prefix '{p.snapshot_prefix}' ({exc.strerror}); "
                              "make sure that the directory exists and is writable") from None

    def _load_weights(self, net) -> None:
        for entry in self.param.weights:
            for name in entry.split(","):
                name = name.strip()
                if self.root:
                    log.info(messages.finetuning_from(name))
                net.copy_trained_layers_from(name)

    def _seed_data_layers(self) -> None:
        """Give data layers the run's seed and, in a distributed run, their share of the items."""
        seed = self.param.random_seed
        for lay, module in self.net.graph.pairs():
            if not lay.info.is_data:
                continue
            if seed >= 0:
                # The same seed on every rank: shuffles agree, so the shards never overlap.
                module.set_seed(seed)
            if self.world_size > 1:
                module.set_shard(self.rank, self.world_size)

    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """pycaffe's ``add_callback(on_start, on_gradients_ready)``: two functions called before
        each iteration and once its gradients are ready; or one object with ``on_start()`` and
        ``on_gradients_ready()`` methods (Caffe's Callback, e.g. ``caffe.NCCL``)."""
        if on_gradients_ready is None:
            if not (callable(getattr(on_start, "on_start", None))
                    and callable(getattr(on_start, "on_gradients_ready", None))):
                raise SolverError("add_callback takes two functions (on_start, on_gradients_ready) "
                                  "or one object with on_start() and on_gradients_ready() methods")
            self.callbacks.append(on_start)
        else:
            self.callbacks.append(_FunctionCallback(on_start, on_gradients_ready))

    def share_weights(self, net) -> None:
        """pycaffe's ``solver.share_weights(net)``: ``net`` uses this solver's training weights."""
        net.share_trained_layers_with(self.net)

    @property
    def lr(self) -> float:
        """The learning rate of the current iteration (Caffe's SGDSolver::GetLearningRate)."""
        p = self.param
        return float(get_policy(p.lr_policy)(p, self.iter, self.current_step)[0])

    # ------------------------------------------------------------------ the loop
    def _requested_action(self) -> str:
        return self.action() if self.action is not None else NONE

    def _synced(self, value):
        """Rank 0's flag or action request, on every rank of a distributed run."""
        from . import distributed

        if isinstance(value, bool):
            return distributed.broadcast_flag(value, self._comm_device())
        return distributed.broadcast_action(value, self._comm_device())

    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _update_smoothed_loss(self, loss, start_iter: int, average_loss: int) -> None:
        loss = F32(loss)
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            self._smoothed = F32((self._smoothed * F32(size - 1) + loss) / F32(size))
        else:
            idx = (self.iter - start_iter) % average_loss
            self._smoothed = F32(self._smoothed + (loss - self._losses[idx]) / F32(average_loss))
            self._losses[idx] = loss

    def _clear_diffs(self) -> None:
        for info in self._params:
            info.tensor.grad = None

    def _setup_accel(self, amp: str | None, compile: bool, fuse: bool,
                     channels_last: bool | None) -> None:
        """BatchNorm+Scale fusion, ``-amp`` (autocast, fp16 loss scaling), channels_last, ``-compile``."""
        from ..net.fold import fuse_batchnorm_scale, run_activations_in_place

        self.amp = amp if accel.amp_dtype(amp) is not None else None
        self._scaler = accel.make_loss_scaler(self.device, self.amp)
        if self.device.type == "cuda":
            accel.configure_backends()
        self._channels_last_inputs = False
        for net in [self.net] + self.test_nets:
            if fuse:  # Caffe's in-place BatchNorm+Scale as one kernel: same values, never visible
                fuse_batchnorm_scale(net.graph)
                run_activations_in_place(net.graph)  # and a ReLU on a fresh value, in place
            if channels_last:  # asked for: every convolution, and the Input blobs (one copy)
                accel.use_channels_last(net)
                self._channels_last_inputs = self._channels_last_inputs or net is self.net
            elif channels_last is None and accel.channels_last_auto(net, self.device, self.amp):
                if self.device.type == "cpu":
                    accel.use_channels_last_cpu(net)
                else:
                    accel.use_channels_last(net)
            if compile:
                accel.compile_net(net, install=True)

    def _forward_backward(self, inputs: Mapping[str, torch.Tensor] | None = None, *,
                          amp: str | None, scaler: accel.LossScaler) -> tuple[float, dict]:
        """One forward (under ``amp``) and backward (of the ``scaler``-scaled loss); (loss, blobs)."""
        self.net.hold_last_pass(None)  # the previous pass's activations go before this forward
        if inputs is None and self._input_blobs:
            device = self.device
            inputs = {}
            for name, blob in self._input_blobs:
                tensor = blob.data_tensor()
                inputs[name] = tensor if tensor.device == device else tensor.to(device)
        if inputs is not None and self._channels_last_inputs:
            inputs = accel.channels_last_inputs(inputs)
        with accel.autocast(self.device, amp):
            blobs = self.net.run(inputs)
            objective = self.net.objective(blobs)
        if objective.dtype != torch.float32:
            objective = objective.float()
        if objective.requires_grad:  # with the net's backward callbacks, as Caffe's Net::Backward
            self.net.backward_with_callbacks(scaler.scaled(objective).backward)
        self.net.hold_last_pass(blobs)  # pycaffe scripts read solver.net.blobs[...] (copied on read)
        if self._debug is not None:
            self._debug.after_backward(self._params)
        return F32(objective.detach().item()), blobs

    def _update_unless_overflow(self, scaler: accel.LossScaler) -> bool:
        """Caffe's update on the unscaled diffs; False (the iteration counted, the weights
        untouched) when fp16 gradients overflowed."""
        if scaler.enabled and not scaler.unscale([i.tensor for i in self._params]):
            log.info("fp16 gradients overflowed; skipping the update of iteration %d "
                     "(loss scale now %g)", self.iter, scaler.scale)
            self.iter += 1
            return False
        self.apply_update()
        self.iter += 1
        return True

    def train_step(self, inputs: Mapping[str, torch.Tensor] | None = None, *, amp: str | None = None,
                   scaler: accel.LossScaler | None = None) -> float:
        """One bare training iteration (iter_size 1; no test, display or snapshot): forward under
        ``amp``, backward of the ``scaler``-scaled loss, Caffe's update on the unscaled diffs.

        A step whose fp16 gradients overflowed is skipped (the iteration still counts, as with
        torch.amp's GradScaler) and gives NaN.
        """
        scaler = scaler if scaler is not None else accel.LossScaler(enabled=False)
        self._clear_diffs()
        loss, _ = self._forward_backward(inputs, amp=amp, scaler=scaler)
        if not self._update_unless_overflow(scaler):
            return float("nan")
        return float(loss) if np.isfinite(loss) else float("nan")

    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations (Caffe's Solver::Step)."""
        try:
            self._step(iters)
        finally:
            self.scalars.flush()

    def _step(self, iters: int) -> None:
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + iters
        self._losses = []
        self._smoothed = F32(0)
        last_time = time.perf_counter()
        iterations_last = self.iter
        while self.iter < stop_iter:
            self._clear_diffs()
            self.net.hold_last_pass(None)
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                if self.root:
                    self.test_all()
                if self.world_size > 1:
                    self.requested_early_exit = self._synced(self.requested_early_exit)
                if self.requested_early_exit:
                    break
            for cb in self.callbacks:
                cb.on_start()
            display = bool(p.display) and self.iter % p.display == 0
            if self._debug is not None:
                self._debug.enabled = display
            loss = F32(0)
            blobs: dict = {}
            for _ in range(max(1, p.iter_size)):
                blobs = {}  # the previous pass's activations go before the next forward
                sub_loss, blobs = self._forward_backward(amp=self.amp, scaler=self._scaler)
                if self.nan_guard and not guard.loss_is_finite(sub_loss):
                    guard.raise_nonfinite(self.net, blobs, self.iter, float(sub_loss))
                loss = F32(loss + sub_loss)
            loss = F32(loss / F32(max(1, p.iter_size)))
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display and self.root:
                now = time.perf_counter()
                lapse = now - last_time
                per_s = (self.iter - iterations_last) / (lapse or 1.0)
                log.info(messages.iteration_loss(self.iter, per_s, lapse, p.display, self._smoothed))
                last_time, iterations_last = now, self.iter
                self.scalars.outputs(self.iter, self._log_outputs(self.net, blobs, messages.train_output))
            blobs = {}  # release this iteration's activations (the outputs are in net.blobs)
            for cb in self.callbacks:
                cb.on_gradients_ready()
            self._update_unless_overflow(self._scaler)
            request = self._requested_action()
            if self.world_size > 1:
                request = self._synced(request)
            if self.root and ((p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT):
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break

    def _log_outputs(self, net, blobs: dict, fmt) -> list[tuple[str, float]]:
        """Log one line per output element; returns their (name, value) in line order."""
        weights = net.loss_weights
        rows = []
        for name in net.output_names:
            values = blobs[name].detach().float().reshape(-1).cpu().numpy()
            for v in values:
                log.info(fmt(len(rows), name, float(v), weights.get(name, 0.0)))
                rows.append((name, float(v)))
        return rows

    def apply_update(self) -> None:
        """Caffe's SGDSolver::ApplyUpdate: rate, log, clip, normalise, regularise, update.

        As in Caffe the iteration count is not advanced (Step does that after the update).
        """
        p = self.param
        rate, step = get_policy(p.lr_policy)(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and step != self.current_step and self.root:
            log.info(messages.multistep_status(self.iter, step))
        self.current_step = step
        if p.display and self.iter % p.display == 0 and self.root:
            log.info(messages.iteration_lr(self.iter, rate))
            self.scalars.lr(self.iter, rate)
        if self._debug is not None:  # its lines name every blob
            diffs = self._diffs()
            clipped = apply_update([i.tensor for i in self._params], diffs, self.history, self._lr_mults,
                                   self._decay_mults, rate, p, self.rule, self.hyper, self.iter)
        else:
            diffs = self._diffs(self._updated)
            clipped = apply_update(self._updated_params, diffs, self._updated_history, self._updated_lr_mults,
                                   self._updated_decay_mults, rate, p, self.rule, self.hyper, self.iter)
        if self._debug is not None:
            self._debug.update_lines(self._params, diffs)
        if clipped is not None and self.root:
            log.info(messages.gradient_clipping(clipped[0], float(F32(p.clip_gradients)), clipped[1]))

    def _select_updated(self) -> None:
        """Which learnable blobs :meth:`apply_update` works on: all but those whose update is a
        known no-op (local rate 0 and a zero history under SGD or Nesterov, e.g. BatchNorm's
        statistics: Caffe computes their zero update; the diff it leaves there is the zero
        history, as here). Called again after :meth:`restore` (which may bring history)."""
        n = len(self._params)
        keep = [k for k, info in enumerate(self._params)
                if not (self.rule.zero_rate_is_no_op and info.lr_mult == 0
                        and not any(bool(self.history[s * n + k].any()) for s in range(self.rule.history_sets)))]
        self._updated = keep
        self._updated_params = [self._params[k].tensor for k in keep]
        self._updated_history = [self.history[s * n + k] for s in range(self.rule.history_sets) for k in keep]
        self._updated_lr_mults = tuple(self._lr_mults[k] for k in keep)
        self._updated_decay_mults = tuple(self._decay_mults[k] for k in keep)

    def _diffs(self, indices: list[int] | None = None) -> list[torch.Tensor]:
        """The accumulated gradient of each learnable blob (of those at ``indices``); zeros
        where Caffe computes none."""
        diffs = []
        for k in range(len(self._params)) if indices is None else indices:
            info = self._params[k]
            grad = info.tensor.grad
            if grad is None or info.lr_mult == 0:
                zero = self._zero_diffs.get(k)
                if zero is None or zero.shape != info.tensor.shape:
                    zero = self._zero_diffs[k] = torch.zeros_like(info.tensor).detach()
                else:
                    zero.zero_()
                grad = zero
            diffs.append(grad)
        return diffs

    def solve(self, resume_file: str | None = None) -> None:
        """Train to max_iter (Caffe's Solver::Solve), optionally resuming from a solverstate."""
        try:
            self._solve(resume_file)
        finally:  # also after a stop request (SIGINT) or an error
            self.scalars.close()

    def _solve(self, resume_file: str | None) -> None:
        p = self.param
        if self.root:
            log.info(messages.solving(self.net.name))
            log.info(messages.lr_policy(p.lr_policy))
        self.requested_early_exit = False
        if resume_file:
            log.info(messages.restoring(resume_file))
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if not self.root:
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            log.info(messages.stopped_early())
            return
        if p.display and self.iter % p.display == 0:
            with torch.no_grad():
                loss = F32(self.net.objective(self.net.run()).item())
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info(messages.final_loss(self.iter, self._smoothed))
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info(messages.done())

    # ------------------------------------------------------------------ testing
    def test_all(self) -> None:
        """Run every test net (Caffe's TestAll)."""
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, index: int) -> list[tuple[str, float, float]]:
        """Score test net ``index`` over test_iter batches; logs and returns (name, mean, weight)."""
        p = self.param
        log.info(messages.testing(self.iter, index))
        net = self.test_nets[index]
        net.share_trained_layers_with(self.net)
        sums = OutputSums()
        channels: dict[str, int] = {}
        for _ in range(p.test_iter[index]):
            request = self._requested_action()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self._requested_action()
            if self.requested_early_exit:
                break
            with torch.no_grad(), accel.autocast(self.device, self.amp):
                blobs = net.run()
                iter_loss = net.objective(blobs).float().item() if p.test_compute_loss else 0.0
            sums.add(net, blobs, iter_loss)
            channels = {name: (tuple(blobs[name].shape) + (1, 1))[1] for name in net.output_names}
        if self.requested_early_exit:
            log.info(messages.test_interrupted())
            return []
        if p.test_compute_loss:
            log.info(messages.test_loss(sums.mean_loss()))
        results = sums.means()
        if p.eval_type == "segmentation":  # ParseNet's (weiliu89/caffe branch fcn)
            for line in segmentation_lines(sums, channels):
                log.info(line)
            return results
        for k, (name, mean, weight) in enumerate(results):
            log.info(messages.test_output(k, name, mean, weight))
        self.scalars.outputs(self.iter, [(name, mean) for name, mean, _ in results], index)
        return results

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (or their HDF5 forms).

        The model goes to a hidden temporary name first and is renamed into place only once
        the solverstate is written, so a failure leaves any earlier pair untouched.
        """
        p = self.param
        hdf5 = p.snapshot_format == caffe_pb2.SolverParameter.HDF5
        model = snap.snapshot_filename(p.snapshot_prefix, self.iter, ".caffemodel.h5" if hdf5 else ".caffemodel")
        state_path = snap.snapshot_filename(p.snapshot_prefix, self.iter,
                                            ".solverstate.h5" if hdf5 else ".solverstate")
        pending = snap.pending_name(model)
        log.info(messages.snapshot_model(model, hdf5))
        try:
            try:
                if hdf5:
                    self.net.save_hdf5(pending, write_diff=p.snapshot_diff)  # Caffe's ToHDF5 layout
                else:
                    snap.write_binary_model(self.net.to_net_param(p.snapshot_diff), pending)
            except OSError as exc:
                raise SolverError(f"{model}: cannot write snapshot ({exc.strerror or exc}); the "
                                  "previous snapshot files are kept") from None
            log.info(messages.snapshot_state(state_path, hdf5))
            state = snap.State(iter=self.iter, learned_net=model, current_step=self.current_step,
                               history=[h.detach().cpu().numpy() for h in self.history])
            try:
                (snap.write_hdf5_state if hdf5 else snap.write_binary_state)(state, state_path)
            except OSError as exc:
                raise SolverError(f"{state_path}: cannot write snapshot ({exc.strerror or exc}); the "
                                  "previous snapshot files are kept") from None
            os.replace(pending, model)
            snap.as_created(model)
        finally:
            with contextlib.suppress(OSError):
                os.remove(pending)
        return model, state_path

    def restore(self, state_file: str) -> None:
        """Load iter, weights (learned_net), current_step and history from a solverstate."""
        state = snap.read_state(state_file)
        self.iter = state.iter
        if state.learned_net:
            self.net.copy_trained_layers_from(self._find_learned_net(state.learned_net, state_file))
        self.current_step = state.current_step
        snap.check_history(state.history, [tuple(h.shape) for h in self.history], state_file)
        log.info(messages.restoring_history())
        with torch.no_grad():
            for tensor, array in zip(self.history, state.history):
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(tensor.shape))
        self._select_updated()

    @staticmethod
    def _find_learned_net(learned: str, state_file: str) -> str:
        """``learned_net`` as Caffe reads it (relative to the cwd), else beside the solverstate."""
        if os.path.exists(learned):
            return learned
        beside = os.path.join(os.path.dirname(state_file), os.path.basename(learned))
        if os.path.exists(beside):
            log.info("learned_net %s not found; using %s beside the solverstate", learned, beside)
            return beside
        raise WeightsError(f"{state_file}: its learned_net '{learned}' does not exist (relative to "
                           f"the current directory {os.getcwd()}) nor beside the solverstate")


def _solver_class(type_name: str) -> type[Solver]:
    """pycaffe's ``caffe.<type_name>Solver``: a Solver whose update rule is fixed."""
    return type(f"{type_name}Solver", (Solver,), {
        "solver_type": type_name, "__module__": "caffelike.solver",
        "__doc__": f"Caffe's {type_name} solver."})


# pycaffe's SGDSolver ... AdamSolver: one class per update rule
SOLVER_CLASSES: dict[str, type[Solver]] = {f"{t}Solver": _solver_class(t) for t in UPDATE_RULES}


def get_solver(param: caffe_pb2.SolverParameter | str | os.PathLike, **kwargs) -> Solver:
    """The solver for ``param.type`` (pycaffe's ``caffe.get_solver``)."""
    if isinstance(param, (str, os.PathLike)):
        param = read_solver_file(os.fspath(param))
    return Solver(param, **kwargs)


class _FunctionCallback:
    """pycaffe's two-function solver callback as a Callback object."""

    def __init__(self, on_start, on_gradients_ready) -> None:
        self.on_start = on_start
        self.on_gradients_ready = on_gradients_ready
