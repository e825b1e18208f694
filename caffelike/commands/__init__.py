"""The ``caffelike`` commands: one module per command, named after it, whose
``main(argv) -> int`` parses the command's flags and calls library code.

:mod:`.options` holds what several commands share (Caffe's flags, reading rules, -gpu).
:mod:`caffelike.cli` imports a command's module only when that command runs.
"""
