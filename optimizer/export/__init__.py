"""Exporters: the deployable files written from a compressed module (``native``: the ``.eom``
file the project's C++ runtime runs, see ``kernels/runtime/FORMAT.md``; ``tflite``: LiteRT/TFLite
for phones, with the quantized module's own scales)."""
