"""Caffe's protobuf schema (``caffelike.proto.caffe_pb2``), generated from proto/caffe.proto."""
