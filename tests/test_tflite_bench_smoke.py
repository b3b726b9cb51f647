"""benchmarks/tflite.py runs end to end (a smoke run: the table and the peer line, never speed),
with TensorFlow absent ("peer n/a") and, where it is installed, with TFLiteConverter's file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from optimizer.examples import digits

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_tflite", ROOT / "benchmarks" / "tflite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick_vgg():
    """A one-epoch VGG (the benchmark's ``pretrained`` trains 15): plumbing, not accuracy."""
    torch.manual_seed(0)
    train_loader, _ = digits.loaders(batch_size=64, seed=0)
    return digits.train(digits.MODELS["vgg"](), train_loader, epochs=1)


def test_tflite_benchmark_runs_without_tensorflow(quick_vgg, monkeypatch, capsys):
    bench = _bench()
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` fails
    monkeypatch.setattr(bench.digits, "pretrained", lambda name: quick_vgg)
    (row,) = bench.main(["--models", "vgg", "--repeats", "3"])
    out = capsys.readouterr().out
    assert "vgg: peer n/a: TensorFlow is not installed" in out, out
    assert "| vgg | " in out and " n/a " in out
    assert not row["peer"] and row["exact"] and row["ours_x"] > 0 and row["ours_b"] > 0
    assert row["ours_ops"].get("TRANSPOSE", 0) == 0 and 0 <= row["ours_acc"] <= 1


def test_tflite_benchmark_rejects_unknown_models(capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--models", "alexnet"])
    assert "unknown model 'alexnet'" in capsys.readouterr().err


def test_tflite_converter_peer_is_the_same_model(quick_vgg):
    pytest.importorskip("tensorflow", reason="the TFLiteConverter peer needs TensorFlow")
    bench = _bench()
    x_train, _, x_test, _ = digits.load_digits_split(seed=0)
    blob, why = bench.tf_converter_int8(quick_vgg, x_train[:32], x_test)
    assert blob is not None, why  # the Keras twin matched PyTorch, then converted
    ops = bench.op_counts(blob)
    assert "CONV_2D" in ops and not {"CUSTOM", "FLEX", "DELEGATE"} & set(ops), ops
    x = x_test[:1].permute(0, 2, 3, 1).numpy()
    (lat,) = bench.interleaved_latency_us([blob], x, repeats=3, builtin=False)
    assert lat > 0
