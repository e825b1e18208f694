"""Caffe's companion tools as ``caffelike`` commands (parse_log, plot, classify, export, ...)."""
