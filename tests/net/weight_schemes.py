"""NETS.md's weight scheme ``scheme_v1`` (tests/golden/NETS.md §1): the weights Caffe's golden
deploy nets were run with, regenerated here and checked against Caffe's recorded sha256."""
from __future__ import annotations

import numpy as np


def scheme_v1(net, seed: int, gain: float) -> dict[str, list[np.ndarray]]:
    """NETS.md's "Weight scheme scheme_v1": one numpy PCG64 stream walked in net.params order."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        arrays = []
        for i, blob in enumerate(blobs):
            s = blob.shape
            if kind in ("Convolution", "Deconvolution", "InnerProduct", "Embed"):
                a = rng.standard_normal(s) * np.sqrt(gain / np.prod(s[1:])) if i == 0 else 0.1 * rng.standard_normal(s)
            elif kind == "BatchNorm":
                a = (0.1 * rng.standard_normal(s) if i == 0 else
                     rng.uniform(0.5, 1.5, s) if i == 1 else np.ones(s))
            elif kind == "Scale":
                a = 1 + 0.1 * rng.standard_normal(s) if i == 0 else 0.1 * rng.standard_normal(s)
            elif kind == "Bias":
                a = 0.1 * rng.standard_normal(s)
            elif kind == "PReLU":
                a = np.full(s, 0.25)
            else:
                raise AssertionError(f"scheme_v1 has no rule for {kind}")
            arrays.append(np.asarray(a).astype(np.float32))
        out[name] = arrays
    return out
