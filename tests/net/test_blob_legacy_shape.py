"""Legacy shape accessors (num/channels/height/width) of pycaffe blobs on blobs of < 4 axes.

Expected values from Caffe's Blob::LegacyShape (include/caffe/blob.hpp): num() is axis 0,
channels() axis 1, height() axis 2, width() axis 3, each 1 when the blob lacks that axis.
"""
from __future__ import annotations

import numpy as np

from caffelike.blob import Blob
from caffelike.io import parse_net
from caffelike.net import Net

_NET = """
name: "ip"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 5 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 7 } }
"""


def test_net_blobs_count_legacy_axes_from_the_front() -> None:
    param, source_map = parse_net(_NET, "ip.prototxt")
    net = Net(param, 1, source_map=source_map)
    ip = net.blobs["ip"]
    assert (ip.num, ip.channels, ip.height, ip.width, ip.count) == (5, 7, 1, 1, 35)
    weight, bias = net.params["ip"]
    assert (weight.num, weight.channels, weight.height, weight.width) == (7, 3, 1, 1)
    assert (bias.num, bias.channels, bias.height, bias.width) == (7, 1, 1, 1)


def test_standalone_blob_counts_legacy_axes_from_the_front() -> None:
    blob = Blob((4, 2))
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (4, 2, 1, 1, 8)
    blob = Blob(data=np.zeros((2, 3, 4, 5), np.float32))
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 3, 4, 5, 120)
