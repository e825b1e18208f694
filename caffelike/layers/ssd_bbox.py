"""Box arithmetic of SSD's fork (weiliu89/caffe branch ssd, src/caffe/util/bbox_util.cpp):
decoding location predictions against prior boxes, Jaccard overlap and the greedy NMS.

Boxes are float32 arrays of shape (..., 4) holding xmin, ymin, xmax, ymax in normalised
coordinates, computed in float32 as the fork's NormalizedBBox fields are.
"""
from __future__ import annotations

import numpy as np

from ..proto import caffe_pb2

CodeType = caffe_pb2.PriorBoxParameter.CodeType
F32 = np.float32


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """Area of each box (the fork's BBoxSize, normalised): 0 when xmax < xmin or ymax < ymin."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)


def decode_boxes(priors: np.ndarray, variances: np.ndarray, loc: np.ndarray, code_type: int,
                 variance_encoded_in_target: bool) -> np.ndarray:
    """The fork's DecodeBBox for every prior: ``loc`` (P, 4) offsets against ``priors`` (P, 4)."""
    priors, variances, loc = (np.asarray(a, dtype=F32) for a in (priors, variances, loc))
    var = np.ones_like(variances) if variance_encoded_in_target else variances
    if code_type == caffe_pb2.PriorBoxParameter.CORNER:
        return (priors + var * loc).astype(F32)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if (pw <= 0).any() or (ph <= 0).any():
        raise ValueError("a prior box has no positive width or height")
    if code_type == caffe_pb2.PriorBoxParameter.CORNER_SIZE:
        size = np.stack([pw, ph, pw, ph], axis=1)
        return (priors + var * loc * size).astype(F32)
    if code_type != caffe_pb2.PriorBoxParameter.CENTER_SIZE:
        raise ValueError(f"unknown code_type {code_type}")
    pcx = ((priors[:, 0].astype(np.float64) + priors[:, 2]) / 2.0).astype(F32)
    pcy = ((priors[:, 1].astype(np.float64) + priors[:, 3]) / 2.0).astype(F32)
    cx = (var[:, 0] * loc[:, 0] * pw + pcx).astype(F32)
    cy = (var[:, 1] * loc[:, 1] * ph + pcy).astype(F32)
    w = (np.exp(var[:, 2] * loc[:, 2]) * pw).astype(F32)
    h = (np.exp(var[:, 3] * loc[:, 3]) * ph).astype(F32)
    cx, cy, w, h = (a.astype(np.float64) for a in (cx, cy, w, h))
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=1).astype(F32)


def jaccard(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Overlap (intersection over union) of ``box`` (4,) with each of ``boxes`` (K, 4), as the
    fork's JaccardOverlap: 0 unless the intersection has a positive width and height."""
    apart = (boxes[:, 0] > box[2]) | (boxes[:, 2] < box[0]) | (boxes[:, 1] > box[3]) | (boxes[:, 3] < box[1])
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = (iw * ih).astype(F32)
    union = (box_sizes(box[None])[0] + box_sizes(boxes) - inter).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = (inter / union).astype(F32)
    return np.where(apart | (iw <= 0) | (ih <= 0), F32(0), overlap)


def nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float,
        eta: float, top_k: int) -> list[int]:
    """The fork's ApplyNMSFast: indices kept, best score first.

    Candidates score strictly above ``score_threshold``, stable-sorted by descending score and
    cut to ``top_k`` (when top_k > -1); a candidate is kept when its overlap with every kept box
    is at most the threshold, which shrinks by ``eta`` after each keep while it is above 0.5.
    """
    candidates = np.nonzero(scores > F32(score_threshold))[0]
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    if -1 < top_k < len(candidates):
        candidates = candidates[:top_k]
    threshold = F32(nms_threshold)
    kept: list[int] = []
    for idx in candidates:
        if kept and not (jaccard(boxes[idx], boxes[kept]) <= threshold).all():
            continue
        kept.append(int(idx))
        if eta < 1 and threshold > 0.5:
            threshold = F32(threshold * F32(eta))
    return kept


def overlap_matrix(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Jaccard overlap of each of ``boxes`` (P, 4) with each of ``gt`` (G, 4): (P, G)."""
    out = np.zeros((len(boxes), len(gt)), dtype=F32)
    for j, g in enumerate(gt):
        out[:, j] = jaccard(np.asarray(g, F32), boxes)
    return out


def match_boxes(boxes: np.ndarray, gt: np.ndarray, per_prediction: bool,
                threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The fork's MatchBBox for all ground truth (label -1): ``(match index per box, -1 when
    unmatched; best overlap per box)``.

    Bipartite first: while ground-truth boxes are left, the largest overlap (> 1e-6) between an
    unmatched box and a remaining ground-truth box pairs them (ties: lowest box, then lowest
    ground truth). PER_PREDICTION then gives every other box its best ground truth when that
    overlap is at least ``threshold``.
    """
    overlaps = overlap_matrix(boxes, gt)
    valid = overlaps > F32(1e-6)
    best = np.where(valid, overlaps, F32(0)).max(axis=1) if gt.size else np.zeros(len(boxes), F32)
    match = np.full(len(boxes), -1, dtype=np.int64)
    pool = np.ones(len(gt), dtype=bool)
    for _ in range(len(gt)):
        candidates = np.where(valid & (match == -1)[:, None] & pool[None, :], overlaps, F32(-1))
        if not candidates.size or candidates.max() <= -1:
            break
        i, j = np.unravel_index(int(np.argmax(candidates)), candidates.shape)
        match[i], best[i], pool[j] = j, overlaps[i, j], False
    if per_prediction:
        for i in np.nonzero((match == -1) & valid.any(axis=1))[0]:
            row = np.where(valid[i] & (overlaps[i] >= F32(threshold)), overlaps[i], F32(-1))
            if row.max() > -1:
                match[i], best[i] = int(np.argmax(row)), row.max()
    return match, best


def encode_boxes(priors: np.ndarray, variances: np.ndarray, gt: np.ndarray, code_type: int,
                 encode_variance_in_target: bool) -> np.ndarray:
    """The fork's EncodeBBox for matched pairs: ``gt`` (K, 4) against ``priors`` (K, 4)."""
    priors, variances, gt = (np.asarray(a, dtype=np.float64) for a in (priors, variances, gt))
    var = np.ones_like(variances) if encode_variance_in_target else variances
    if code_type == caffe_pb2.PriorBoxParameter.CORNER:
        return ((gt - priors) / var).astype(F32)
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if code_type == caffe_pb2.PriorBoxParameter.CORNER_SIZE:
        return ((gt - priors) / np.stack([pw, ph, pw, ph], axis=1) / var).astype(F32)
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    if (gw <= 0).any() or (gh <= 0).any():
        raise ValueError("a ground-truth box has no positive width or height")
    pcx, pcy = (priors[:, 0] + priors[:, 2]) / 2, (priors[:, 1] + priors[:, 3]) / 2
    gcx, gcy = (gt[:, 0] + gt[:, 2]) / 2, (gt[:, 1] + gt[:, 3]) / 2
    return np.stack([(gcx - pcx) / pw / var[:, 0], (gcy - pcy) / ph / var[:, 1],
                     np.log(gw / pw) / var[:, 2], np.log(gh / ph) / var[:, 3]], axis=1).astype(F32)
