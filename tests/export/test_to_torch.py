"""``caffelike.to_torch(net)`` / ``Net.to_torch()``: a plain module that trains like any other.

Expected values: real Caffe's outputs (tests/golden/nets/simpleconv3, the book's real model)
and the Net's own forward, which the plain module must reproduce before any training step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import caffelike
from caffelike.export import TorchNet
from net.conftest import assert_close_scaled, load_json

from .conftest import GOLDEN, golden_net


def _book():
    net = golden_net("simpleconv3")
    data = np.load(GOLDEN / "nets" / "simpleconv3" / "data.npz")
    labels = torch.tensor(load_json(GOLDEN / "nets" / "simpleconv3" / "case.json")["input_labels"])
    return net, data, labels


def _tensors(net, module: torch.nn.Module) -> tuple[set[int], set[int]]:
    ours = {t.data_ptr() for t in module.state_dict().values() if t.numel()}
    theirs = {t.data_ptr() for t in (*net.graph.parameters(), *net.graph.buffers()) if t.numel()}
    return ours, theirs


def test_fine_tune_with_sgd_starts_from_the_nets_forward() -> None:
    net, data, labels = _book()
    x = torch.from_numpy(data["input__data"])
    expect = net.forward(data=data["input__data"])["prob"].copy()
    weights_before = {k: v.detach().clone() for k, v in net.graph.state_dict().items()}
    plain = caffelike.to_torch(net)
    assert type(plain) is TorchNet and not plain.training  # eval mode, as the TEST net it comes from
    ours, theirs = _tensors(net, plain)
    assert not ours & theirs, "the plain module shares tensors with the Net"
    opt = torch.optim.SGD(plain.parameters(), lr=1e-4)  # raw 0-255 pixels: small steps
    losses = []
    for step in range(4):  # BatchNorm statistics frozen (eval mode): fine-tuning as Caffe's TEST stats
        prob = plain(x)["prob"]
        if step == 0:
            assert_close_scaled(prob.detach().numpy(), expect, "first forward vs Net")
            assert_close_scaled(prob.detach().numpy(), data["output__prob"], "first forward vs Caffe")
        loss = F.nll_loss(torch.log(prob), labels)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]
    for k, v in net.graph.state_dict().items():  # the Net never moved
        assert torch.equal(v, weights_before[k]), k
    plain.train()  # torch's BatchNorm in train mode: batch statistics, running stats updated
    before = plain.conv1_bn.running_mean.clone()
    F.nll_loss(torch.log(plain(x)["prob"]), labels).backward()
    assert not torch.equal(before, plain.conv1_bn.running_mean)


def test_net_to_torch_state_dict_keys_match_model_py(tmp_path) -> None:
    net, _, _ = _book()
    plain = net.to_torch()
    saved = torch.load(caffelike.export.export_pytorch(net, tmp_path)[1], weights_only=True)
    assert list(saved) == list(plain.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in plain.state_dict().items())


def test_compile_and_autocast_smoke() -> None:
    net, data, _ = _book()
    plain = net.to_torch()
    x = torch.from_numpy(data["input__data"])
    compiled = torch.compile(plain, backend="aot_eager")
    with torch.no_grad():
        assert_close_scaled(compiled(x)["prob"].numpy(), data["output__prob"], "compiled")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prob = plain(x)["prob"].float().numpy()
    np.testing.assert_allclose(prob, data["output__prob"], atol=0.05)  # bf16: 8-bit mantissa


def test_ddp_one_process_smoke(tmp_path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    net, data, labels = _book()
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        model = DistributedDataParallel(net.to_torch())
        prob = model(torch.from_numpy(data["input__data"]))["prob"]
        assert_close_scaled(prob.detach().numpy(), data["output__prob"], "DDP forward")
        F.nll_loss(torch.log(prob), labels).backward()
        assert model.module.ip2.weight.grad is not None
    finally:
        dist.destroy_process_group()


def test_an_optimized_net_exports_its_unfolded_layers() -> None:
    """``Net(..., optimize=True)`` runs folded stand-ins; the export reads the original layers."""
    d = GOLDEN / "nets" / "simpleconv3"
    net = caffelike.Net(str(d / "net.prototxt"), caffelike.TEST, weights=str(d / "weights.caffemodel"), optimize=True)
    data = np.load(d / "data.npz")
    plain = net.to_torch()
    assert hasattr(plain, "conv1_bn") and hasattr(plain, "conv1_scale")
    with torch.no_grad():
        prob = plain(torch.from_numpy(data["input__data"]))["prob"]
    assert_close_scaled(prob.numpy(), data["output__prob"], "optimized net's export")
