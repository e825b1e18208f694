"""Caffe's legacy-format upgrades (src/caffe/util/upgrade_proto.cpp), as data-driven rules.

Steps, in Caffe's order (UpgradeNetAsNeeded):

1. V0 (``layers { layer { type: "conv" ... } }``) -> V1: padding layers fold into the next
   conv/pool, flat V0 fields move into the per-type parameter messages;
2. V1 data layers: ``scale``/``mean_file``/``crop_size``/``mirror`` move into ``transform_param``;
3. V1 (``layers { type: CONVOLUTION blobs_lr ... }``) -> current ``layer``: enum type -> string,
   ``blobs_lr``/``weight_decay``/param names/share modes -> ``param { }``;
4. legacy ``input``/``input_dim``/``input_shape`` -> one ``Input`` layer named "input" in front;
5. BatchNorm layers declaring three ``param`` get lr_mult = decay_mult = 0.

Where Caffe logs "had one or more problems upgrading ... continuing anyway" or aborts, this
module raises :class:`PrototxtError` naming the file, line and layer.
"""
from __future__ import annotations

from typing import Callable

from google.protobuf.message import Message

from ..errors import PrototxtError, SolverError, Where
from ..glog import get_logger
from ..proto import caffe_pb2

log = get_logger("io")

V1 = caffe_pb2.V1LayerParameter

# V0 type string -> V1 enum name (UpgradeV0LayerType).
V0_TYPES: dict[str, str] = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V1 enum name -> current type string (UpgradeV1LayerType).
V1_TYPES: dict[str, str] = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
    "BN": "BN",  # ChenglongChen's BN (lim0606's GoogLeNet-BN nets; issue 16)
}

_ANY = "*"  # a V0 field that applies to every layer type
# V0 flat field -> {V0 type (or _ANY): (V1 parameter message, its field)}, in Caffe's order.
V0_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"), "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"), "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"), "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {_ANY: ("transform_param", "scale")},
    "meanfile": {_ANY: ("transform_param", "mean_file")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "cropsize": {_ANY: ("transform_param", "crop_size")},
    "mirror": {_ANY: ("transform_param", "mirror")},
    "rand_skip": {"data": ("data_param", "rand_skip"), "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "")},
}

# V1 per-type parameter messages that the V1 -> current upgrade carries over.
V1_COPIED_PARAMS: tuple[str, ...] = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param", "image_data_param",
    "infogain_loss_param", "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param",
    "slice_param", "tanh_param", "threshold_param", "window_data_param", "transform_param",
    "loss_param", "bn_param",
)

# V1 data layer types whose own parameter message held the transform fields.
DATA_TRANSFORM_PARAMS: dict[str, str] = {
    "DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param",
}
TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

# The legacy SolverType enum is closed: solver types added since have only the ``type`` string.
SOLVER_TYPES: dict[str, str] = {
    "SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta", "ADAM": "Adam",
}

Locate = Callable[[int], Where]


# -- checks ------------------------------------------------------------------------------
def net_needs_v0_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether ``layers`` hold V0 ``layer`` sub-messages (Caffe's NetNeedsV0ToV1Upgrade)."""
    return any(layer.HasField("layer") for layer in net.layers)


def net_needs_data_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether a V1 data layer keeps transform fields in its own param (NetNeedsDataUpgrade)."""
    for layer in net.layers:
        param_name = DATA_TRANSFORM_PARAMS.get(V1.LayerType.Name(layer.type))
        if param_name and any(getattr(layer, param_name).HasField(f) for f in TRANSFORM_FIELDS):
            return True
    return False


def net_needs_v1_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether the net uses V1 ``layers`` (Caffe's NetNeedsV1ToV2Upgrade)."""
    return len(net.layers) > 0


def net_needs_input_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether the net declares legacy ``input`` fields (Caffe's NetNeedsInputUpgrade)."""
    return len(net.input) > 0


def net_needs_batchnorm_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether a BatchNorm still lists its three deprecated param specs (NetNeedsBatchNormUpgrade)."""
    return any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)


def net_needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Whether any of Caffe's legacy upgrades applies (Caffe's NetNeedsUpgrade)."""
    return (net_needs_v0_upgrade(net) or net_needs_v1_upgrade(net) or net_needs_data_upgrade(net)
            or net_needs_input_upgrade(net) or net_needs_batchnorm_upgrade(net))


# -- the whole net -----------------------------------------------------------------------
def upgrade_net(net: caffe_pb2.NetParameter, filename: str = "<net>",
                source_map: object | None = None) -> caffe_pb2.NetParameter:
    """Upgrade ``net`` in place to the current format, as Caffe's UpgradeNetAsNeeded.

    ``source_map`` (a :class:`caffelike.io.SourceMap`) lets errors name the line of the
    offending layer. Returns ``net``.
    """
    def locate_v0(index: int) -> Where:
        if source_map is not None and hasattr(source_map, "where_index"):
            return source_map.where_index("layers", index)  # type: ignore[attr-defined]
        layer = net.layers[index].layer if index < len(net.layers) else None
        return Where(file=filename, layer=layer.name if layer else None,
                     type=layer.type if layer else None)

    def locate_layer(layer: Message) -> Where:
        if source_map is not None and hasattr(source_map, "where"):
            return source_map.where(layer)  # type: ignore[attr-defined]
        return Where(file=filename, layer=getattr(layer, "name", None) or None)

    if net_needs_v0_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V0LayerParameter: %s", filename)
        upgrade_v0_net(net, locate_v0, filename)
        log.info("Successfully upgraded file specified using deprecated V0LayerParameter")
        log.warning("V0 nets are deprecated (as in Caffe); convert this file once with "
                    "`caffelike upgrade_net_proto_text` (or upgrade_net_proto_binary for weights)")
    if net_needs_data_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "transformation parameters: %s", filename)
        upgrade_data_transformation(net)
        log.info("Successfully upgraded file specified using deprecated data "
                 "transformation parameters.")
        log.warning("data-layer transformation fields are deprecated (as in Caffe); "
                    "put them in transform_param")
    if net_needs_v1_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated "
                 "V1LayerParameter: %s", filename)
        upgrade_v1_net(net, locate_layer, filename)
        log.info("Successfully upgraded file specified using deprecated V1LayerParameter")
    if net_needs_input_upgrade(net):
        log.info("Attempting to upgrade input file specified using deprecated input "
                 "fields: %s", filename)
        upgrade_net_input(net, filename)
        log.info("Successfully upgraded file specified using deprecated input fields.")
        log.warning("net-level input fields are deprecated (as in Caffe); use an Input layer")
    if net_needs_batchnorm_upgrade(net):
        log.info("Attempting to upgrade batch norm layers using deprecated params: %s", filename)
        upgrade_batchnorm(net)
        log.info("Successfully upgraded batch norm layers using deprecated params.")
    return net


# -- V0 -> V1 ----------------------------------------------------------------------------
def _fold_padding_layers(net: caffe_pb2.NetParameter, locate: Locate) -> list[tuple[int, V1]]:
    """Caffe's UpgradeV0PaddingLayers: drop "padding" layers, giving their pad to the consumer.

    Returns the kept layers with their original index (for error locations).
    """
    last_producer: dict[str, int] = {name: -1 for name in net.input}
    kept: list[tuple[int, V1]] = []
    for i, connection in enumerate(net.layers):
        v0_type = connection.layer.type
        if v0_type != "padding":
            copy = V1()
            copy.CopyFrom(connection)
            kept.append((i, copy))
        for j, blob in enumerate(connection.bottom):
            if blob not in last_producer:
                raise PrototxtError(f"unknown bottom blob '{blob}' (input {j}); it is neither a "
                                    "net input nor the top of an earlier layer", locate(i))
            source_index = last_producer[blob]
            if source_index == -1:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0_type not in ("conv", "pool"):
                raise PrototxtError(f"a V0 padding layer feeds layer type '{v0_type}'; only conv "
                                    "and pool layers can take a padding layer's output", locate(i))
            if len(connection.bottom) != 1 or len(source.bottom) != 1 or len(source.top) != 1:
                raise PrototxtError("a V0 padding layer and the conv/pool it feeds must each "
                                    "have exactly one bottom (and the padding layer one top)",
                                    locate(i))
            target = kept[-1][1]
            target.layer.pad = source.layer.pad
            target.bottom[j] = source.bottom[0]
        for blob in connection.top:
            last_producer[blob] = i
    return kept


def _set_v0_value(target_param: Message, field_name: str, v0: caffe_pb2.V0LayerParameter,
                  v0_field: str) -> None:
    value = getattr(v0, v0_field)
    if not field_name:  # the whole message moves (hdf5_output_param)
        target_param.CopyFrom(value)
        return
    descriptor = target_param.DESCRIPTOR.fields_by_name[field_name]
    if descriptor.message_type is not None:
        getattr(target_param, field_name).CopyFrom(value)
    elif descriptor.enum_type is not None:
        name = v0.DESCRIPTOR.fields_by_name[v0_field].enum_type.values_by_number[value].name
        setattr(target_param, field_name, descriptor.enum_type.values_by_name[name].number)
    elif descriptor.is_repeated:
        getattr(target_param, field_name).append(value)
    else:
        setattr(target_param, field_name, value)


def upgrade_v0_layer(connection: V1, where: Where) -> V1:
    """Caffe's UpgradeV0LayerParameter: one V0 layer (inside a V1 ``layers``) -> V1 layer."""
    layer = V1()
    layer.bottom.extend(connection.bottom)
    layer.top.extend(connection.top)
    if not connection.HasField("layer"):
        return layer
    v0 = connection.layer
    v0_type = v0.type
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        enum_name = V0_TYPES.get(v0_type)
        if enum_name is None:
            raise PrototxtError(f"unknown V0 layer type '{v0_type}'; known: "
                                f"{', '.join(sorted(V0_TYPES))}", where)
        layer.type = V1.LayerType.Value(enum_name)
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)
    for v0_field, targets in V0_FIELDS.items():
        if not v0.HasField(v0_field):
            continue
        target = targets.get(v0_type) or targets.get(_ANY)
        if target is None:
            raise PrototxtError(
                f"V0 parameter '{v0_field}' does not apply to layer type '{v0_type}' (it applies "
                f"to {', '.join(sorted(targets))}); Caffe's upgrade refuses it", where)
        param_name, field_name = target
        _set_v0_value(getattr(layer, param_name), field_name, v0, v0_field)
    return layer


def upgrade_v0_net(net: caffe_pb2.NetParameter, locate: Locate, filename: str = "<net>") -> None:
    """Caffe's UpgradeV0Net: only name, layers, input, input_dim and force_backward survive."""
    kept = _fold_padding_layers(net, locate)
    upgraded = [upgrade_v0_layer(connection, locate(i)) for i, connection in kept]
    old = caffe_pb2.NetParameter()
    old.CopyFrom(net)
    net.Clear()
    if old.HasField("name"):
        net.name = old.name
    net.layers.extend(upgraded)
    net.input.extend(old.input)
    net.input_dim.extend(old.input_dim)
    if old.HasField("force_backward"):
        net.force_backward = old.force_backward


# -- V1 data transform fields --------------------------------------------------------------
def upgrade_data_transformation(net: caffe_pb2.NetParameter) -> None:
    """Caffe's UpgradeNetDataTransformation: move data-layer transform fields into transform_param."""
    for layer in net.layers:
        param_name = DATA_TRANSFORM_PARAMS.get(V1.LayerType.Name(layer.type))
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        param.SetInParent()
        layer.transform_param.SetInParent()
        for name in TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(layer.transform_param, name, getattr(param, name))
                param.ClearField(name)


# -- V1 -> current ---------------------------------------------------------------------------
def upgrade_v1_layer(v1: V1, where: Where) -> caffe_pb2.LayerParameter:
    """Caffe's UpgradeV1LayerParameter: one V1 ``layers`` entry -> a current ``layer``."""
    if v1.HasField("layer"):
        raise PrototxtError("a V1 'layers' entry also holds a V0 'layer' block; Caffe ignores it "
                            "and reports the upgrade as failed; remove one of the two", where)
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        layer.type = V1_TYPES[V1.LayerType.Name(v1.type)]
    layer.blobs.extend(v1.blobs)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        mode_name = V1.DimCheckMode.Name(mode)
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(mode_name)
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for param_name in V1_COPIED_PARAMS:
        if v1.HasField(param_name):
            getattr(layer, param_name).CopyFrom(getattr(v1, param_name))
    return layer


def _v1_where(where: Where, v1: V1) -> Where:
    type_name = V1_TYPES.get(V1.LayerType.Name(v1.type)) if v1.HasField("type") else None
    return where.with_layer(v1.name or None, type_name or None)


def upgrade_v1_net(net: caffe_pb2.NetParameter, locate: Callable[[Message], Where],
                   filename: str = "<net>") -> None:
    """Caffe's UpgradeV1Net: every V1 ``layers`` entry becomes a ``layer``; refuses a mix."""
    if len(net.layer):
        where = _v1_where(locate(net.layers[0]), net.layers[0])
        raise PrototxtError(
            "the net mixes current 'layer { type: \"Type\" }' blocks with legacy "
            "'layers { type: ENUM }' blocks; Caffe refuses to upgrade it; convert every block "
            "to the 'layer' format", where)
    upgraded = [upgrade_v1_layer(v1, _v1_where(locate(v1), v1)) for v1 in net.layers]
    net.ClearField("layers")
    net.ClearField("layer")
    net.layer.extend(upgraded)


# -- legacy inputs, BatchNorm -----------------------------------------------------------------
def upgrade_net_input(net: caffe_pb2.NetParameter, filename: str = "<net>") -> None:
    """Caffe's UpgradeNetInput: legacy input fields -> an ``Input`` layer named "input" in front.

    Inputs without any shape (legacy .caffemodels) are just dropped, as in Caffe.
    """
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise PrototxtError(f"{n} legacy inputs but only {len(net.input_shape)} input_shape "
                                "entries; give one input_shape per input", Where(file=filename))
        if not has_shape and len(net.input_dim) < 4 * n:
            raise PrototxtError(f"{n} legacy inputs need {4 * n} input_dim values (num, channels, "
                                f"height, width each); got {len(net.input_dim)}",
                                Where(file=filename))
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, top in enumerate(net.input):
            layer.top.append(top)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        existing = list(net.layer)
        net.ClearField("layer")
        net.layer.append(layer)
        net.layer.extend(existing)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_batchnorm(net: caffe_pb2.NetParameter) -> None:
    """Caffe's UpgradeNetBatchNorm: a BatchNorm with 3 ``param`` specs gets lr/decay mult 0."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# -- solver ------------------------------------------------------------------------------
def solver_needs_upgrade(solver: caffe_pb2.SolverParameter) -> bool:
    """Whether the solver uses the legacy ``solver_type`` enum (Caffe's SolverNeedsTypeUpgrade)."""
    return solver.HasField("solver_type")


def upgrade_solver(solver: caffe_pb2.SolverParameter, filename: str = "<solver>"
                   ) -> caffe_pb2.SolverParameter:
    """Caffe's UpgradeSolverAsNeeded: ``solver_type: ADAM`` -> ``type: "Adam"`` (in place)."""
    if not solver_needs_upgrade(solver):
        return solver
    if solver.HasField("type"):
        raise SolverError("the legacy solver_type field (enum) and the type field (string) "
                          "cannot both be given; keep only type", Where(file=filename))
    log.info("Attempting to upgrade input file specified using deprecated 'solver_type' "
             "field (enum)': %s", filename)
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    solver.type = SOLVER_TYPES[enum_name]
    solver.ClearField("solver_type")
    log.info("Successfully upgraded file specified using deprecated 'solver_type' field "
             "(enum) to 'type' field (string).")
    return solver
