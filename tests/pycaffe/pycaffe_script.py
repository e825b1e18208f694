"""A pycaffe-style script: plain ``import caffe`` (the caffelike alias on PYTHONPATH), every name of
pycaffe's surface used at least once, checked against real Caffe's LeNet outputs.

Run by test_pycaffe_script.py as ``python pycaffe_script.py GOLDEN_DIR WORK_DIR``. Expected
values: GOLDEN_DIR/{net.prototxt, weights.caffemodel, data.npz} (real BVLC Caffe's forward of
LeNet); the rest are identities any pycaffe user relies on (write-through, save/load round trips).
"""
from __future__ import annotations

import os
import sys
from collections import OrderedDict

import numpy as np

import caffe  # the alias: caffelike's pycaffe surface
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2

golden, work = sys.argv[1], sys.argv[2]
proto = os.path.join(golden, "net.prototxt")
weights = os.path.join(golden, "weights.caffemodel")
data = np.load(os.path.join(golden, "data.npz"))
x, expect = data["input__data"], data["output__prob"]
tol = dict(rtol=1e-4, atol=1e-5 * float(np.abs(expect).max()))
done: list[str] = []


def check(name: str) -> None:
    done.append(name)


assert caffe.__caffelike_alias__
caffe.set_mode_cpu(); check("set_mode_cpu")
caffe.set_random_seed(1); check("set_random_seed")
try:
    caffe.set_mode_gpu()
    caffe.set_device(0)
except caffe.errors.CaffelikeError:
    pass  # no GPU here: a one-line user error, as asked
finally:
    caffe.set_mode_cpu()
check("set_mode_gpu"); check("set_device")
assert "Convolution" in caffe.layer_type_list() and "Python" in caffe.layer_type_list(); check("layer_type_list")
assert (caffe.TRAIN, caffe.TEST) == (0, 1) == (caffe_pb2.TRAIN, caffe_pb2.TEST); check("TRAIN/TEST")

# -- Net, both constructor forms ----------------------------------------------------------------
net = caffe.Net(proto, caffe.TEST, weights=weights); check("Net(file, phase, weights=)")
legacy = caffe.Net(proto, weights, caffe.TEST); check("Net(file, weights, phase)")
staged = caffe.Net(proto, caffe.TEST, level=0, stages=[]); check("Net(level=, stages=)")
assert isinstance(net.blobs, OrderedDict) and isinstance(net.params, OrderedDict)
assert list(net.blobs) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"]; check("blobs")
assert list(net.params) == ["conv1", "conv2", "ip1", "ip2"]; check("params")
assert net.params["conv1"][0].data.shape == (20, 1, 5, 5) and net.params["ip1"][1].count == 500
assert net.inputs == ["data"] and net.outputs == ["prob"]; check("inputs"); check("outputs")
assert list(net.layer_dict) == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
assert net.layer_dict["conv1"].type == "Convolution" and len(net.layers) == 9; check("layer_dict"); check("layers")
assert list(net.top_names["relu1"]) == ["ip1"] and list(net.bottom_names["ip2"]) == ["ip1"]
check("top_names"); check("bottom_names")
assert all(w == 0 for w in net.blob_loss_weights.values()); check("blob_loss_weights")

blob = net.blobs["data"]
assert blob.shape == (64, 1, 28, 28) and (blob.num, blob.channels, blob.height, blob.width) == (64, 1, 28, 28)
assert blob.count == 64 * 28 * 28; check("Blob.shape/num/channels/height/width/count")

# -- forward: real Caffe's probabilities --------------------------------------------------------
out = net.forward(data=x); check("forward(**inputs)")
np.testing.assert_allclose(out["prob"], expect, **tol)
np.testing.assert_allclose(legacy.forward(data=x)["prob"], expect, **tol)
blob.data[...] = x; check("Blob.data write-through")
out = net.forward(); np.testing.assert_allclose(out["prob"], expect, **tol)
np.testing.assert_allclose(net.blobs["prob"].data, expect, **tol)
part = net.forward(start="conv1", end="pool2"); check("forward(start=, end=)")
assert list(part) == ["pool2"]
more = net.forward(blobs=["ip1"], start="ip1"); check("forward(blobs=)")
assert set(more) == {"prob", "ip1"}
np.testing.assert_allclose(more["prob"], expect, **tol)

everything = net.forward_all(data=x[:10]); check("forward_all")
np.testing.assert_allclose(everything["prob"], expect[:10], **tol)

# -- backward: a deploy net has no loss, so (as in Caffe) only force_backward gives gradients ----
fb_file = os.path.join(work, "lenet_force_backward.prototxt")
with open(proto) as src, open(fb_file, "w") as dst:
    dst.write("force_backward: true\n" + src.read())
bnet = caffe.Net(fb_file, caffe.TEST, weights=weights)
bnet.forward(data=x)
bnet.blobs["prob"].diff[...] = 0.0; check("Blob.diff write-through")
bnet.blobs["prob"].diff[:, 3] = 1.0
grads = bnet.backward(diffs=["data"]); check("backward(diffs=)")
assert grads["data"].shape == x.shape and np.abs(grads["data"]).sum() > 0
assert np.abs(bnet.params["conv1"][0].diff).sum() > 0
saved_conv1 = bnet.blobs["conv1"].diff.copy()
bnet.backward(start="ip2", end="conv1", prob=bnet.blobs["prob"].diff.copy()); check("backward(start=, end=, **kwargs)")
np.testing.assert_allclose(bnet.blobs["conv1"].diff, saved_conv1, rtol=1e-5, atol=1e-7)
fb_out, fb_diffs = bnet.forward_backward_all(data=x[:4], prob=np.ones((4, 10), np.float32)); check("forward_backward_all")
np.testing.assert_allclose(fb_out["prob"], expect[:4], **tol)
assert fb_diffs["data"].shape == (4, 1, 28, 28)

# -- reshape -------------------------------------------------------------------------------------
blob.reshape(2, 1, 28, 28); net.reshape(); check("Blob.reshape"); check("Net.reshape")
assert net.blobs["prob"].data.shape == (2, 10)
np.testing.assert_allclose(net.forward(data=x[:2])["prob"], expect[:2], **tol)

# -- weights: save, copy_from, share_with, HDF5 --------------------------------------------------
fresh = caffe.Net(proto, caffe.TEST)
saved = os.path.join(work, "lenet.caffemodel")
net.save(saved); check("save")
fresh.copy_from(saved); check("copy_from")
np.testing.assert_allclose(fresh.forward(data=x)["prob"], expect, **tol)
h5 = os.path.join(work, "lenet.h5")
net.save_hdf5(h5); check("save_hdf5")
other = caffe.Net(proto, caffe.TEST)
other.load_hdf5(h5); check("load_hdf5")
np.testing.assert_allclose(other.forward(data=x)["prob"], expect, **tol)
third = caffe.Net(proto, caffe.TEST)
third.share_with(net); check("share_with")
net.params["ip2"][1].data[...] += 0.0  # params write through too
np.testing.assert_allclose(third.forward(data=x)["prob"], expect, **tol)

# -- MemoryData + set_input_arrays ---------------------------------------------------------------
mem = caffe.NetSpec()
mem.data, mem.label = L.MemoryData(batch_size=4, channels=1, height=28, width=28, ntop=2)
mem.conv1 = L.Convolution(mem.data, num_output=20, kernel_size=5)
mem_file = os.path.join(work, "mem.prototxt")
with open(mem_file, "w") as f:
    f.write(str(mem.to_proto()))
mnet = caffe.Net(mem_file, caffe.TEST)
mnet.set_input_arrays(np.ascontiguousarray(x[:4]), np.arange(4, dtype=np.float32)); check("set_input_arrays")
mnet.share_with(net)
mout = mnet.forward()
np.testing.assert_allclose(mnet.blobs["data"].data, x[:4])
assert mnet.blobs["label"].data.ravel().tolist() == [0, 1, 2, 3]

# -- NetSpec + Python layer (caffe.Layer) ---------------------------------------------------------
sys.path.insert(0, work)
with open(os.path.join(work, "double_layer.py"), "w") as f:
    f.write("import caffe\n"
            "class Double(caffe.Layer):\n"
            "    def setup(self, bottom, top): pass\n"
            "    def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)\n"
            "    def forward(self, bottom, top): top[0].data[...] = 2 * bottom[0].data\n"
            "    def backward(self, top, propagate_down, bottom): bottom[0].diff[...] = 2 * top[0].diff\n")
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[2, 3]))
n.double = L.Python(n.data, module="double_layer", layer="Double")
n.pool = L.Pooling(L.Reshape(n.data, shape=dict(dim=[2, 1, 1, 3])), pool=P.Pooling.MAX, kernel_size=1)
py_file = os.path.join(work, "py.prototxt")
with open(py_file, "w") as f:
    f.write(str(n.to_proto()))
check("NetSpec"); check("layers"); check("params"); check("to_proto")
pnet = caffe.Net(py_file, caffe.TEST)
v = np.arange(6, dtype=np.float32).reshape(2, 3)
np.testing.assert_array_equal(pnet.forward(data=v)["double"], 2 * v); check("Layer")
assert issubclass(caffe.Layer, object) and caffe.Layer.__name__ == "Layer"

# -- caffe.io and Classifier ---------------------------------------------------------------------
t = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
t.set_transpose("data", (2, 0, 1)); t.set_raw_scale("data", 1.0); t.set_input_scale("data", 1.0)
t.set_mean("data", np.array([0.0])); t.set_channel_swap("data", (0,))
img = x[0].transpose(1, 2, 0)
np.testing.assert_allclose(t.preprocess("data", img), x[0], atol=1e-6)
np.testing.assert_allclose(t.deprocess("data", t.preprocess("data", img)), img[:, :, 0], atol=1e-6)
check("io.Transformer")
clf = caffe.Classifier(proto, weights, image_dims=(28, 28)); check("Classifier")
pred = clf.predict([img, x[1].transpose(1, 2, 0)], oversample=False)
np.testing.assert_allclose(pred, expect[:2], **tol)
assert clf.predict([img], oversample=True).shape == (1, 10)
blob_proto = caffe.io.array_to_blobproto(x[:1])
np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob_proto), x[:1]); check("io.blobproto")
datum = caffe.io.array_to_datum((x[0] * 255).astype(np.uint8), label=3)
assert caffe.io.datum_to_array(datum).shape == (1, 28, 28) and datum.label == 3; check("io.datum")
assert caffe.io.resize_image(img, (14, 14)).shape == (14, 14, 1) and caffe.io.oversample([img], (20, 20)).shape == (10, 20, 20, 1)
check("io.resize_image/oversample/load_image")

# -- solvers -------------------------------------------------------------------------------------
train = caffe.NetSpec()
train.data, train.label = L.DummyData(shape=[dict(dim=[8, 1, 28, 28]), dict(dim=[8])],
                                      data_filler=[dict(type="gaussian", std=1.0), dict(type="constant", value=1)],
                                      ntop=2)
train.ip = L.InnerProduct(train.data, num_output=3, weight_filler=dict(type="xavier"))
train.loss = L.SoftmaxWithLoss(train.ip, train.label)
train_file = os.path.join(work, "train.prototxt")
with open(train_file, "w") as f:
    f.write(str(train.to_proto()))
for kind in ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"):
    sp = caffe_pb2.SolverParameter()
    sp.train_net = train_file
    sp.test_net.append(train_file)
    sp.test_iter.append(1)
    sp.test_interval = 1000
    sp.test_initialization = False
    sp.base_lr = 0.1 if kind != "AdaDelta" else 1.0
    sp.lr_policy = "fixed"
    sp.max_iter = 4
    sp.display = 0
    sp.snapshot_prefix = os.path.join(work, kind)
    if kind in ("SGD", "Nesterov", "Adam", "AdaDelta"):
        sp.momentum = 0.9
    if kind == "RMSProp":
        sp.rms_decay = 0.98
    sp.type = kind
    sfile = os.path.join(work, f"{kind}_solver.prototxt")
    with open(sfile, "w") as f:
        f.write(str(sp))
    solver = getattr(caffe, f"{kind}Solver")(sfile); check(f"{kind}Solver")
    assert solver.iter == 0 and len(solver.test_nets) == 1
    w0 = solver.net.params["ip"][0].data.copy()
    solver.step(2)
    assert solver.iter == 2 and not np.allclose(solver.net.params["ip"][0].data, w0)
solver = caffe.get_solver(sfile); check("get_solver")
solver.step(1); check("step"); check("net"); check("test_nets"); check("iter")
solver.snapshot(); check("snapshot")
state = os.path.join(work, "Adam_iter_1.solverstate")
assert os.path.exists(state) and os.path.exists(os.path.join(work, "Adam_iter_1.caffemodel"))
solver.solve(); check("solve")
assert solver.iter == 4
again = caffe.get_solver(sfile)
again.restore(state); check("restore")
assert again.iter == 1
again.solve(state); check("solve(resume)")
assert again.iter == 4

sys.stdout.write("OK " + " ".join(done) + "\n")
