"""SSD's DetectionOutput layer (weiliu89/caffe branch ssd, detection_output_layer.cpp, CPU)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..proto import caffe_pb2
from .base import Layer, Shape, register_layer
from .ssd_bbox import decode_boxes, jaccard, nms

Tensor = torch.Tensor


@register_layer("DetectionOutput", bottoms=3, tops=1)
class DetectionOutput(Layer):
    """Decodes SSD's location and confidence predictions into detections.

    Bottoms: loc (N, P * L * 4) with L = 1 when ``share_location`` else num_classes, conf
    (N, P * num_classes) (already softmaxed), priors (1, 2, P * 4) as PriorBox writes them. Top
    (1, 1, K, 7): rows ``[image, label, score, xmin, ymin, xmax, ymax]``.

    Fork semantics: per image and per class other than ``background_label_id``, NMS (see
    :func:`.ssd_bbox.nms`) over the boxes scoring above ``confidence_threshold`` (all boxes when
    unset); when ``keep_top_k`` > -1 and more were kept, the keep_top_k best over all classes
    stay. Rows go image by image, classes in increasing label order, best score first within a
    class. No box is clipped. With ``share_location`` and ``background_label_id: -1`` the fork's
    CPU code skips decoding the shared boxes (their label is -1 too) and aborts ("Could not find
    location predictions for label -1"); its GPU code decodes them: caffelike follows the GPU. When no image has a detection the top is (1, 1, N, 7), all -1
    except column 0, the image index. Writing results to files (``save_output_param``) and
    ``visualize`` are not done here: they raise a user error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("detection_output_param: must specify num_classes")
        self.num_classes = int(p.num_classes)
        self.share_location = bool(p.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        self.code_type = int(p.code_type)
        self.variance_encoded = bool(p.variance_encoded_in_target)
        self.keep_top_k = int(p.keep_top_k)
        self.confidence_threshold = float(p.confidence_threshold) \
            if p.HasField("confidence_threshold") else -float(np.finfo(np.float32).max)
        nms = p.nms_param
        self.nms_threshold, self.eta = float(nms.nms_threshold), float(nms.eta)
        if self.nms_threshold < 0:
            raise self.error("nms_param.nms_threshold must be non negative")
        if not 0 < self.eta <= 1:
            raise self.error(f"nms_param.eta {self.eta:g} must be in (0, 1]")
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if p.save_output_param.output_directory:
            raise self.error("detection_output_param.save_output_param.output_directory: writing "
                             "detections to files is not supported by caffelike; remove it")
        if p.visualize:
            raise self.error("detection_output_param.visualize is not supported by caffelike; "
                             "remove it")
        self._check_shapes(self.bottom_shapes)

    def _check_shapes(self, shapes: Sequence[Shape]) -> int:
        loc, conf, priors = (tuple(s) for s in shapes[:3])
        if loc[0] != conf[0]:
            raise self.error(f"loc bottom has {loc[0]} images, conf bottom {conf[0]}; expected the same")
        num_priors = (priors[2] if len(priors) > 2 else 1) // 4
        loc_c = loc[1] if len(loc) > 1 else 1
        conf_c = conf[1] if len(conf) > 1 else 1
        if num_priors * self.num_loc_classes * 4 != loc_c:
            raise self.error(f"number of priors ({num_priors}) must match number of location "
                             f"predictions ({loc_c} = priors * {self.num_loc_classes} * 4 expected)")
        if num_priors * self.num_classes != conf_c:
            raise self.error(f"number of priors ({num_priors}) must match number of confidence "
                             f"predictions ({conf_c} = priors * {self.num_classes} expected)")
        return num_priors

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        self._check_shapes(bottom_shapes)
        return [(1, 1, 1, 7)]

    def _image_detections(self, loc: np.ndarray, conf: np.ndarray, priors: np.ndarray,
                          variances: np.ndarray) -> list[tuple[int, float, np.ndarray]]:
        """(label, score, box) rows of one image in the fork's output order."""
        num_priors = priors.shape[0]
        loc = loc.reshape(num_priors, self.num_loc_classes, 4)
        conf = conf.reshape(num_priors, self.num_classes)
        decoded: dict[int, np.ndarray] = {}
        for c in range(self.num_loc_classes):
            label = -1 if self.share_location else c
            if self.share_location or label != self.background:
                try:
                    decoded[label] = decode_boxes(priors, variances, loc[:, c], self.code_type,
                                                  self.variance_encoded)
                except ValueError as exc:  # the fork's CHECK_GT(prior_width, 0)
                    raise self.error(f"{exc} ({caffe_pb2.PriorBoxParameter.CodeType.Name(self.code_type)} "
                                     "decoding needs positive prior sizes)") from None
        kept: dict[int, list[int]] = {}
        for c in range(self.num_classes):
            if c == self.background:
                continue
            boxes = decoded[-1 if self.share_location else c]
            kept[c] = nms(boxes, conf[:, c], self.confidence_threshold, self.nms_threshold,
                          self.eta, self.top_k)
        total = sum(len(v) for v in kept.values())
        if -1 < self.keep_top_k < total:
            pairs = [(conf[i, c], c, i) for c, idx in kept.items() for i in idx]
            order = sorted(range(len(pairs)), key=lambda k: -pairs[k][0])[:self.keep_top_k]
            kept = {}
            for k in order:
                kept.setdefault(pairs[k][1], []).append(pairs[k][2])
        rows = []
        for c in sorted(kept):
            boxes = decoded[-1 if self.share_location else c]
            rows += [(c, float(conf[i, c]), boxes[i]) for i in kept[c]]
        return rows

    def forward(self, loc: Tensor, conf: Tensor, prior: Tensor) -> list[Tensor]:
        num_priors = self._check_shapes([loc.shape, conf.shape, prior.shape])
        if loc.device.type == "meta":
            return [torch.empty((1, 1, 1, 7), device="meta")]
        num = loc.shape[0]
        loc_np = loc.detach().reshape(num, -1).cpu().numpy().astype(np.float32)
        conf_np = conf.detach().reshape(num, -1).cpu().numpy().astype(np.float32)
        prior_np = prior.detach().reshape(-1).cpu().numpy().astype(np.float32)
        priors = prior_np[:num_priors * 4].reshape(num_priors, 4)
        if self.variance_encoded:  # unused: a one-channel prior blob is enough
            variances = np.ones((num_priors, 4), np.float32)
        else:
            if prior_np.size < num_priors * 8:
                raise self.error(f"prior bottom {tuple(prior.shape)} holds no variances (expected "
                                 "1 x 2 x priors*4, as PriorBox writes it)")
            variances = prior_np[num_priors * 4:num_priors * 8].reshape(num_priors, 4)
        rows: list[list[float]] = []
        for i in range(num):
            for label, score, box in self._image_detections(loc_np[i], conf_np[i], priors, variances):
                rows.append([i, label, score, *box.tolist()])
        if rows:
            top = np.asarray(rows, dtype=np.float32)
        else:  # the fork's empty result: one row per image, all -1 but the image index
            top = np.full((num, 7), -1, dtype=np.float32)
            top[:, 0] = np.arange(num)
        out = torch.from_numpy(top.reshape(1, 1, -1, 7))
        return [out.to(device=loc.device, dtype=loc.dtype)]

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return False


@register_layer("DetectionEvaluate", bottoms=2, tops=1)
class DetectionEvaluate(Layer):
    """Marks SSD's detections true or false positive against the ground truth, for mAP.

    Bottoms: detections (1, 1, K, 7) as DetectionOutput writes them, ground truth (1, 1, M, 8)
    as AnnotatedData writes it. Top (1, 1, P + D, 5): first one row per class other than the
    background, ``[-1, label, number of positives, -1, -1]``, then one row per detection
    ``[image, label, score, tp, fp]``.

    Fork semantics (detection_evaluate_layer.cpp, bbox_util.cpp): ground-truth rows stop at the
    first item id -1; detection rows with item id -1 are skipped, and rows with label -1 are not
    counted. Positives leave out difficult boxes unless ``evaluate_difficult_gt``. Detections go
    image by image, label by label, by descending score; each takes the ground-truth box of its
    label it overlaps most (Jaccard): at least ``overlap_threshold`` and not taken yet is a true
    positive, taken already a false positive; a difficult box (when they are not evaluated)
    gives the row tp = fp = 0; no box of its label or too little overlap a false positive.
    ``name_size_file`` (evaluation in pixels) is not implemented: a user error says so.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        p = self.param.detection_evaluate_param
        if not p.HasField("num_classes"):
            raise self.error("detection_evaluate_param: must provide num_classes")
        self.num_classes = int(p.num_classes)
        self.background = int(p.background_label_id)
        self.overlap_threshold = float(np.float32(p.overlap_threshold))
        if not self.overlap_threshold > 0:
            raise self.error("detection_evaluate_param.overlap_threshold must be positive")
        self.difficult = bool(p.evaluate_difficult_gt)
        if p.name_size_file:
            raise self.error("detection_evaluate_param.name_size_file (evaluation in pixels) is "
                             "not implemented by caffelike; remove it to evaluate normalised boxes")
        for i, (shape, width) in enumerate(zip(self.bottom_shapes, (7, 8))):
            legacy = tuple(shape) + (1,) * (4 - len(shape))
            if legacy[0] != 1 or legacy[1] != 1 or legacy[3] != width:
                raise self.error(f"bottom {i} has shape {tuple(shape)}; expected (1, 1, rows, {width})")

    @property
    def positive_classes(self) -> list[int]:
        return [c for c in range(self.num_classes) if c != self.background]

    def top_shapes(self, bottom_shapes: Sequence[Shape]) -> list[Shape]:
        return [(1, 1, len(self.positive_classes) + 1, 5)]

    def _ground_truth(self, gt: np.ndarray) -> dict[int, dict[int, list[np.ndarray]]]:
        boxes: dict[int, dict[int, list[np.ndarray]]] = {}
        for row in gt:
            if int(row[0]) == -1:
                break
            if int(row[1]) == self.background:
                raise self.error(f"found background label {self.background} in the ground truth")
            boxes.setdefault(int(row[0]), {}).setdefault(int(row[1]), []).append(row)
        return boxes

    def _rows(self, det: np.ndarray, gt: np.ndarray) -> list[list[float]]:
        truth = self._ground_truth(gt)
        rows: list[list[float]] = []
        for c in self.positive_classes:
            count = sum(1 for image in truth.values() for box in image.get(c, [])
                        if self.difficult or not box[7])
            rows.append([-1, c, count, -1, -1])
        detections: dict[int, dict[int, list[np.ndarray]]] = {}
        for row in det:
            if int(row[0]) == -1:
                continue
            if int(row[1]) == self.background:
                raise self.error(f"found background label {self.background} in the detections")
            detections.setdefault(int(row[0]), {}).setdefault(int(row[1]), []).append(row)
        for image in sorted(detections):
            for label in sorted(detections[image]):
                if label == -1:
                    continue
                found = sorted(detections[image][label], key=lambda r: -r[2])
                gt_rows = truth.get(image, {}).get(label, [])
                gt_boxes = np.asarray([r[3:7] for r in gt_rows], np.float32).reshape(-1, 4)
                taken = [False] * len(gt_rows)
                for d in found:
                    tp, fp = 0, 1
                    if gt_rows:
                        overlaps = jaccard(np.asarray(d[3:7], np.float32), gt_boxes)
                        j = int(np.argmax(overlaps))
                        if overlaps[j] >= self.overlap_threshold:
                            if self.difficult or not gt_rows[j][7]:
                                tp, fp = (0, 1) if taken[j] else (1, 0)
                                taken[j] = True
                            else:
                                tp, fp = 0, 0
                    rows.append([image, label, float(d[2]), tp, fp])
        return rows

    def forward(self, det: Tensor, gt: Tensor) -> list[Tensor]:
        if det.device.type == "meta":
            return [torch.empty(self.top_shapes([det.shape, gt.shape])[0], device="meta")]
        rows = self._rows(det.detach().reshape(-1, 7).cpu().numpy().astype(np.float32),
                          gt.detach().reshape(-1, 8).cpu().numpy().astype(np.float32))
        top = torch.tensor(rows, dtype=torch.float32).reshape(1, 1, -1, 5)
        return [top.to(device=det.device, dtype=det.dtype)]

    @classmethod
    def allow_force_backward(cls, bottom: int) -> bool:
        return False
