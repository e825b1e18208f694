"""SSD's MultiBoxLoss (weiliu89/caffe branch ssd, multibox_loss_layer.cpp and bbox_util.cpp)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Shape, register_layer
from .loss import LossLayer, Norm, _normalization, normalizer
from .ssd_bbox import encode_boxes, match_boxes

Tensor = torch.Tensor
P = caffe_pb2.MultiBoxLossParameter
LOG_FLT_MIN = float(np.log(np.finfo(np.float32).tiny))


def _unsupported(p: caffe_pb2.MultiBoxLossParameter) -> list[str]:
    """The fork's MultiBoxLoss settings that caffelike does not implement."""
    names = []
    if p.conf_loss_type != P.SOFTMAX:
        names.append("conf_loss_type LOGISTIC")
    if p.mining_type == P.HARD_EXAMPLE:
        names.append("mining_type HARD_EXAMPLE")
    if p.HasField("nms_param") and p.nms_param.nms_threshold > 0 and p.mining_type != P.NONE:
        names.append("nms_param (NMS while mining)")
    for field in ("ignore_cross_boundary_bbox", "bp_inside", "map_object_to_agnostic"):
        if getattr(p, field):
            names.append(field)
    if not p.use_prior_for_matching:
        names.append("use_prior_for_matching false")
    return names


@register_layer("MultiBoxLoss", bottoms=4, tops=1, loss=True)
class MultiBoxLoss(LossLayer):
    """SSD's training loss: box regression on matched priors plus softmax confidence.

    Bottoms: loc (N, P * L * 4), conf (N, P * C) logits, priors (1, 2, P * 4), ground truth
    (1, 1, M, 8) as AnnotatedData writes it. Fork semantics: ground-truth rows with item -1 are
    skipped (difficult ones too unless ``use_difficult_gt``); the priors of each image are
    matched to its boxes (bipartite, then PER_PREDICTION at ``overlap_threshold``); with
    MAX_NEGATIVE mining (needs share_location) the unmatched priors whose best overlap is below
    ``neg_overlap`` are ranked by their background loss -log p(background) and the top
    ``neg_pos_ratio`` x positives kept. Loss = loc_weight * sum SmoothL1 (or L2 / 2) of the
    matched offsets against the encoded ground truth + sum -log p(label) over matched and
    mined priors (all priors without mining, background for the unmatched), each divided by
    the normaliser of ``loss_param.normalization`` (default VALID: the number of matches,
    at least 1). Only the terms of bottoms 0 and 1 whose ``propagate_down`` is true count
    (default true, true, false, false). Gradients as the fork's: matching and mining are fixed.
    Not implemented (a user error names each): LOGISTIC, HARD_EXAMPLE, NMS in mining,
    ignore_cross_boundary_bbox, bp_inside, map_object_to_agnostic, use_prior_for_matching false.
    """

    check_first_axis = False

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return bottom < 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.multibox_loss_param
        if not p.HasField("num_classes"):
            raise self.error("multibox_loss_param: must provide num_classes")
        self.p = p
        self.num_classes = int(p.num_classes)
        self.share = bool(p.share_location)
        self.loc_classes = 1 if self.share else self.num_classes
        self.background = int(p.background_label_id)
        self.mining = int(p.mining_type) != P.NONE
        if p.HasField("do_neg_mining") and p.do_neg_mining != self.mining:
            raise self.error("do_neg_mining (deprecated) disagrees with mining_type")
        if self.mining and not self.share:
            raise self.error("negative mining needs share_location: true (as the fork)")
        if not 0 <= self.background < self.num_classes:
            raise self.error(f"background_label_id {self.background} should be within [0, "
                             f"{self.num_classes}) for the softmax loss")
        missing = _unsupported(p)
        if missing:
            raise self.error(f"multibox_loss_param {', '.join(missing)}: not implemented by caffelike")
        self.mode = _normalization(self, Norm.VALID)
        down = list(self.param.propagate_down) or [True, True, False, False]
        self.terms = (bool(down[0]), bool(down[1]))
        self._check(self.bottom_shapes)

    def _check(self, shapes: Sequence[Shape]) -> int:
        loc, conf, prior = (tuple(s) for s in shapes[:3])
        num_priors = (prior[2] if len(prior) > 2 else 1) // 4
        if loc[0] != conf[0]:
            raise self.error(f"loc bottom has {loc[0]} images, conf bottom {conf[0]}; expected the same")
        if num_priors * self.loc_classes * 4 != (loc[1] if len(loc) > 1 else 1):
            raise self.error("number of priors must match number of location predictions")
        if num_priors * self.num_classes != (conf[1] if len(conf) > 1 else 1):
            raise self.error("number of priors must match number of confidence predictions")
        return num_priors

    def _ground_truth(self, gt: np.ndarray) -> dict[int, np.ndarray]:
        """Rows (label, xmin, ymin, xmax, ymax) per image, the fork's GetGroundTruth."""
        per_image: dict[int, list] = {}
        for row in gt.reshape(-1, 8):
            if int(row[0]) == -1:
                continue
            if int(row[1]) == self.background:
                raise self.error(f"found background label {self.background} in the ground truth")
            if row[7] and not self.p.use_difficult_gt:
                continue
            per_image.setdefault(int(row[0]), []).append([row[1], *row[3:7]])
        return {i: np.asarray(rows, np.float32) for i, rows in per_image.items()}

    def _matches(self, truth: dict[int, np.ndarray], priors: np.ndarray, num: int):
        """Per image: {label: match index per prior} and the best overlaps (fork's FindMatches)."""
        all_matches, all_overlaps = [], []
        for i in range(num):
            if i not in truth:
                all_matches.append({})
                all_overlaps.append(None)
                continue
            match, overlap = match_boxes(priors, truth[i][:, 1:], self.p.match_type == P.PER_PREDICTION,
                                         float(self.p.overlap_threshold))
            if self.share:
                all_matches.append({-1: match})
            else:
                labels = truth[i][:, 0].astype(np.int64)
                all_matches.append({c: np.where((match > -1) & (labels[np.maximum(match, 0)] == c), match, -1)
                                    for c in range(self.loc_classes) if c != self.background})
            all_overlaps.append(overlap)
        return all_matches, all_overlaps

    def _negatives(self, conf: np.ndarray, matches, overlaps, num_priors: int) -> list[np.ndarray]:
        """The fork's MineHardExamples, MAX_NEGATIVE: mined prior indices per image, ascending."""
        logits = conf.reshape(len(matches), num_priors, self.num_classes).astype(np.float64)
        shifted = logits - logits.max(axis=2, keepdims=True)
        prob = np.exp(shifted[..., self.background]) / np.exp(shifted).sum(axis=2)
        loss = (-np.log(np.maximum(prob, np.finfo(np.float32).tiny))).astype(np.float32)
        negatives = []
        for i, image in enumerate(matches):
            chosen = np.zeros(0, dtype=np.int64)
            for match in image.values():
                eligible = np.nonzero((match == -1) & (overlaps[i] < np.float32(self.p.neg_overlap)))[0]
                count = min(int(np.float32((match > -1).sum()) * np.float32(self.p.neg_pos_ratio)), len(eligible))
                order = eligible[np.argsort(-loss[i, eligible], kind="stable")][:count]
                chosen = np.union1d(chosen, order)
            negatives.append(np.sort(chosen))
        return negatives

    def forward(self, loc: Tensor, conf: Tensor, prior: Tensor, gt: Tensor) -> list[Tensor]:
        num_priors = self._check([loc.shape, conf.shape, prior.shape])
        if loc.device.type == "meta":
            return [torch.empty((), device="meta")]
        num = loc.shape[0]
        prior_np = prior.detach().reshape(-1).cpu().numpy().astype(np.float32)
        priors = prior_np[:num_priors * 4].reshape(num_priors, 4)
        variances = prior_np[num_priors * 4:num_priors * 8].reshape(num_priors, 4)
        truth = self._ground_truth(gt.detach().cpu().numpy())
        matches, overlaps = self._matches(truth, priors, num)
        negatives = self._negatives(conf.detach().cpu().numpy(), matches, overlaps, num_priors) \
            if self.mining else [np.zeros(0, np.int64)] * num
        # matched (image, loc slot, prior, gt row) in the fork's order: image, label, prior
        pos = [(i, 0 if self.share else label, j, int(m[j]))
               for i, image in enumerate(matches) for label, m in sorted(image.items())
               for j in np.nonzero(m > -1)[0]]
        n_match = len(pos)
        norm = normalizer(self.mode, num, num_priors, n_match)
        total = loc.new_zeros(())
        if self.terms[0] and pos:
            total = total + self.p.loc_weight * self._loc_loss(loc, pos, truth, priors, variances) / norm
        if self.terms[1]:
            total = total + self._conf_loss(conf, pos, truth, negatives, num_priors) / norm
        return [total]

    def _loc_loss(self, loc: Tensor, pos, truth, priors: np.ndarray, variances: np.ndarray) -> Tensor:
        i, slot, j, g = (np.asarray(v) for v in zip(*pos))
        gt_boxes = np.stack([truth[a][b, 1:] for a, b in zip(i, g)])
        try:
            target = encode_boxes(priors[j], variances[j], gt_boxes, self.p.code_type,
                                  self.p.encode_variance_in_target)
        except ValueError as exc:  # the fork's CHECK_GT on box sizes
            raise self.error(f"{exc}; CENTER_SIZE encoding needs positive sizes") from None
        pred = loc.reshape(loc.shape[0], -1, self.loc_classes, 4)[torch.from_numpy(i), torch.from_numpy(j),
                                                                   torch.from_numpy(slot)]
        if self.p.encode_variance_in_target:
            scale = torch.from_numpy(variances[j]).to(pred.dtype)
            pred, target = pred / scale, target / variances[j]
        diff = pred - torch.from_numpy(np.asarray(target, np.float32)).to(pred.dtype)
        if self.p.loc_loss_type == P.L2:  # EuclideanLoss over a 1-row blob: sum / 2
            return (diff * diff).sum() / 2
        absd = diff.abs()
        return torch.where(absd < 1, 0.5 * diff * diff, absd - 0.5).sum()

    def _conf_loss(self, conf: Tensor, pos, truth, negatives, num_priors: int) -> Tensor:
        logits = conf.reshape(conf.shape[0], num_priors, self.num_classes)
        labels = [int(truth[i][g, 0]) for i, _, _, g in pos]
        if self.mining:
            rows = [(i, j) for i, _, j, _ in pos] + [(i, int(j)) for i, neg in enumerate(negatives) for j in neg]
            if not rows:
                return conf.new_zeros(())
            image, prior = (torch.tensor(v, dtype=torch.int64) for v in zip(*rows))
            picked = logits[image, prior]
            target = torch.tensor(labels + [self.background] * (len(rows) - len(pos)), dtype=torch.int64)
        else:
            picked = logits.reshape(-1, self.num_classes)
            full = np.full((conf.shape[0], num_priors), self.background, dtype=np.int64)
            for (i, _, j, _), label in zip(pos, labels):
                full[i, j] = label
            target = torch.from_numpy(full.reshape(-1))
        logp = torch.log_softmax(picked, dim=1).gather(1, target[:, None])[:, 0]
        clamped = logp.clamp(min=LOG_FLT_MIN)  # Caffe's log(max(p, FLT_MIN)); its gradient is p - 1
        return -(logp + (clamped - logp).detach()).sum()

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check(bottom_shapes)
        return [()]
