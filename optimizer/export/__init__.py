"""Exporters: the deployable files written from a compressed module (``tflite``: LiteRT/TFLite
for phones, with the quantized module's own scales; the native ``.eom`` writer follows)."""
