"""The bilinear CNN example: the bilinear layer's formulas and gradients, the net's shapes, and a
few training iterations on tiny generated data where the loss goes down.

Expected values come from the B-CNN definition (Lin et al. 2015: B = X X^T / HW, signed square
root, L2 normalisation) written out in numpy here, and from finite differences.
"""
from __future__ import annotations

import pathlib
import sys

import cv2
import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
BCNN = ROOT / "models" / "bcnn"


@pytest.fixture(autouse=True)
def _bcnn_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BCNN))
    yield
    for name in ("bilinear_layer", "make_bcnn"):
        sys.modules.pop(name, None)


def _reference(x: np.ndarray) -> np.ndarray:
    out = []
    for img in x.astype(np.float64):
        c = img.shape[0]
        feats = img.reshape(c, -1)
        b = (feats @ feats.T / feats.shape[1]).ravel()
        y = np.sign(b) * np.sqrt(np.abs(b))
        out.append(y / np.linalg.norm(y))
    return np.stack(out)


def test_forward_formula_numpy_and_torch() -> None:
    import bilinear_layer as bl

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    z, _ = bl.bilinear_forward(x)
    np.testing.assert_allclose(z, _reference(x), rtol=1e-6, atol=1e-7)
    zt = bl.BilinearPooling()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(zt, _reference(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)


def test_numpy_backward_matches_finite_differences() -> None:
    import bilinear_layer as bl

    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2, 3))
    w = rng.standard_normal((2, 9))
    _, cache = bl.bilinear_forward(x)
    grad = bl.bilinear_backward(w, cache).reshape(x.shape)
    h = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        numeric[idx] = ((bl.bilinear_forward(xp)[0] * w).sum() - (bl.bilinear_forward(xm)[0] * w).sum()) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)


def test_torch_module_gradcheck() -> None:
    import bilinear_layer as bl

    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(bl.BilinearPooling(), (x,), eps=1e-6, atol=1e-5)


def _tiny_data(tmp_path: pathlib.Path, n: int = 24) -> pathlib.Path:
    """Two classes of 16x16 PNGs: horizontal vs vertical stripes, with noise."""
    rng = np.random.default_rng(3)
    lines = []
    for i in range(n):
        label = i % 2
        stripes = (np.arange(16) // 2 % 2 * 200).astype(np.float64)
        img = np.tile(stripes[:, None], (1, 16)) if label == 0 else np.tile(stripes[None, :], (16, 1))
        img = np.clip(img + rng.normal(0, 20, (16, 16)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.dstack([img] * 3))
        lines.append(f"{i}.png {label}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def tiny_solver(tmp_path: pathlib.Path, net):
    """An Adam solver (30 steps, 3 test batches) over ``net``, written to ``tmp_path``."""
    import caffelike as caffe

    (tmp_path / "net.prototxt").write_text(str(net))
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}"\ntype: "Adam"\nbase_lr: 0.01\nmomentum: 0.9\nmomentum2: 0.999\n'
        'lr_policy: "fixed"\nmax_iter: 30\ndisplay: 0\ntest_iter: 3\ntest_interval: 1000\n'
        'test_initialization: false\nsnapshot: 0\nrandom_seed: 5\nsolver_mode: CPU\n'
        f'snapshot_prefix: "{tmp_path / "snap"}"\n')
    caffe.set_mode_cpu()
    return caffe.get_solver(str(tmp_path / "solver.prototxt"))


@pytest.mark.parametrize("layer", ["BilinearLayer", "BilinearPooling"])
def test_small_bcnn_trains(layer: str, tmp_path: pathlib.Path) -> None:
    import caffelike as caffe
    from make_bcnn import bcnn

    listing = _tiny_data(tmp_path)
    net = bcnn(str(listing), str(listing), root_folder=str(tmp_path) + "/", classes=2, crop=16,
               blocks=((4,), (6,)), batch=8, test_batch=8, finetune_trunk=True, bilinear_layer=layer)
    solver = tiny_solver(tmp_path, net)
    train = solver.net
    assert train.blobs["conv2_1"].data.shape == (8, 6, 8, 8)
    assert train.blobs["bilinear"].data.shape == (8, 36)
    assert train.blobs["fc8_cub"].data.shape == (8, 2)
    test_net = solver.test_nets[0]  # shares the train net's weights; the 24 images in 3 batches

    def test_loss() -> float:
        test_net.share_with(train)  # Caffe shares at init; be explicit (see the report)
        return float(np.mean([float(test_net.forward()["loss"]) for _ in range(3)]))

    before = test_loss()
    solver.step(30)
    after = test_loss()
    assert solver.iter == 30
    assert after < 0.5 * before, (before, after)
    train.forward()
    # the bilinear top of a forward pass is L2-normalised per image
    z = train.blobs["bilinear"].data
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-4)
