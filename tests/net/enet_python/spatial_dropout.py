"""A Python 3 stand-in for ENet's ``spatial_dropout`` module (TimoSaemann/caffe-enet
python/spatial_dropout.py, Python 2 only), for the tests that run ENet's deploy nets.

Semantics written from the fork's module: ``param_str`` is a dict literal with ``phase`` and
``p``; outside TRAIN the top is ``bottom / (1 - p)``; in TRAIN whole channels of each image are
dropped with probability ``p`` and the kept ones scaled by ``1 / (1 - p)``.
"""
from __future__ import annotations

import ast

import numpy as np

import caffelike


class SpatialDropoutLayer(caffelike.Layer):
    """ENet's spatial dropout (see the module docstring)."""

    def setup(self, bottom, top):
        param = ast.literal_eval(self.param_str)
        self.train = param["phase"] == "TRAIN"
        self.p = float(param["p"])
        self.scale = 1.0 / (1.0 - self.p)
        self.keep = None

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        if self.train:
            n, c = bottom[0].data.shape[:2]
            self.keep = (np.random.random_sample((n, c, 1, 1)) >= self.p) * self.scale
            top[0].data[...] = bottom[0].data * self.keep
        else:
            top[0].data[...] = bottom[0].data * self.scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * (self.keep if self.train else self.scale)
