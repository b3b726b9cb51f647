"""Tests of optimizer.examples.digits: split, loaders, models, training and the cache."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")

from optimizer.examples import digits  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one thread is fastest, and immune to a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_split_is_deterministic_stratified_and_scaled():
    x_train, y_train, x_test, y_test = digits.load_digits_split(seed=0)
    again = digits.load_digits_split(seed=0)
    assert all(torch.equal(a, b) for a, b in zip((x_train, y_train, x_test, y_test), again))
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert float(x_train.min()) == 0.0 and float(x_train.max()) == 1.0
    # stratified: every class holds 25 % of its images out (to within one image)
    for c in range(10):
        n_test, n_all = int((y_test == c).sum()), int((y_test == c).sum() + (y_train == c).sum())
        assert abs(n_test - 0.25 * n_all) <= 1


def test_split_changes_with_seed():
    _, _, x_a, _ = digits.load_digits_split(seed=0)
    _, _, x_b, _ = digits.load_digits_split(seed=1)
    assert not torch.equal(x_a, x_b)


def test_bad_test_size_raises_value_error():
    with pytest.raises(ValueError, match="load_digits_split: test_size"):
        digits.load_digits_split(test_size=1.5)


def test_loaders_give_the_same_batches_for_the_same_seed():
    (train_a, test_a), (train_b, _) = digits.loaders(seed=0), digits.loaders(seed=0)
    xa, ya = next(iter(train_a))
    xb, yb = next(iter(train_b))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (64, 1, 8, 8)
    assert sum(len(y) for _, y in test_a) == 450


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("vgg", 250_000, 500_000),  # 1-2 MB of fp32 weights
        ("resnet", 100_000, 300_000),
        ("mobilenetv2", 20_000, 200_000),
        ("mlp", 20_000, 200_000),
    ],
)
def test_models_map_digit_images_to_ten_logits_with_stated_sizes(name, low, high):
    model = digits.MODELS[name]()
    assert low <= _params(model) <= high
    assert model.eval()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_mobilenetv2_uses_depthwise_convs_and_relu6():
    model = digits.mobilenetv2_digits()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(m.groups == m.in_channels > 1 for m in convs)
    assert any(isinstance(m, torch.nn.ReLU6) for m in model.modules())


def test_models_trace_with_fx():
    x = torch.rand(2, 1, 8, 8)
    for name, factory in digits.MODELS.items():
        model = factory().eval()
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), model(x), msg=name)


def test_a_few_epochs_of_the_mlp_learn_the_task():
    train_loader, test_loader = digits.loaders()
    torch.manual_seed(0)
    model = digits.mlp_digits()
    before = digits.evaluate(model, test_loader)
    digits.train(model, train_loader, epochs=3)
    assert not model.training
    assert before < 30.0 < 90.0 < digits.evaluate(model, test_loader)


def test_training_is_repeatable_with_the_same_seed():
    train_loader, _ = digits.loaders()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(digits.train(digits.mlp_digits(), train_loader, epochs=1, seed=3))
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluate_restores_training_mode():
    _, test_loader = digits.loaders()
    model = digits.mlp_digits().train()
    digits.evaluate(model, test_loader)
    assert model.training


def test_pretrained_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    calls = []
    real_train = digits.train

    def counting_train(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(digits, "train", counting_train)
    first = digits.pretrained("mlp", cache_dir=tmp_path, epochs=2)
    path = digits.cache_path("mlp", tmp_path, epochs=2)
    assert path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    second = digits.pretrained("mlp", cache_dir=tmp_path, epochs=2)
    assert len(calls) == 1
    assert not second.training
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)


def test_pretrained_cache_key_changes_with_settings(tmp_path):
    assert digits.cache_path("mlp", tmp_path, epochs=2) != digits.cache_path("mlp", tmp_path, 3)
    assert digits.cache_path("mlp", tmp_path) != digits.cache_path("vgg", tmp_path)


def test_pretrained_uses_edgeopt_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPT_CACHE", str(tmp_path))
    assert digits.cache_path("mlp").parent == tmp_path


def test_pretrained_retrains_over_a_corrupt_cache_file(tmp_path):
    path = digits.cache_path("mlp", tmp_path, epochs=1)
    path.write_bytes(b"not a state dict")
    model = digits.pretrained("mlp", cache_dir=tmp_path, epochs=1)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["net.0.weight"], model.net[0].weight)


def test_unknown_model_name_raises_value_error():
    with pytest.raises(ValueError, match="pretrained: unknown digits model"):
        digits.pretrained("alexnet")


def test_shift_images_moves_each_image_by_at_most_one_pixel_with_zero_fill():
    import torch

    from optimizer.examples.digits import shift_images

    x = torch.rand(64, 1, 8, 8) + 0.5  # no zeros inside the images
    y = shift_images(x, 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    moved = 0
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(
                y[i, 0, max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)],
                x[i, 0, max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)],
            )
        ]
        assert len(matches) == 1, i  # exactly one offset explains the image
        dy, dx = matches[0]
        moved += (dy, dx) != (0, 0)
        assert int((y[i] == 0).sum()) == 8 * (abs(dy) + abs(dx)) - abs(dy * dx)  # zero fill
    assert moved > 40  # 8 of 9 offsets move the image


def test_shift_views_are_every_shift_once_with_the_batch_first():
    import pytest
    import torch

    from optimizer.examples.digits import shift_views

    x = torch.rand(3, 2, 8, 8) + 0.5
    views = shift_views(x)
    assert len(views) == 9 and views[0] is x
    seen = set()
    for v in views[1:]:
        assert v.shape == x.shape
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if torch.equal(
                    v[..., max(dy, 0) : 8 + min(dy, 0), max(dx, 0) : 8 + min(dx, 0)],
                    x[..., max(-dy, 0) : 8 + min(-dy, 0), max(-dx, 0) : 8 + min(-dx, 0)],
                ):
                    seen.add((dy, dx))
                    assert int((v == 0).sum()) == 3 * 2 * (8 * (abs(dy) + abs(dx)) - abs(dy * dx))
    assert seen == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)} - {(0, 0)}
    assert len(shift_views(x, 2)) == 25 and shift_views(x, 0) == [x]
    with pytest.raises(ValueError, match=r"\[N, C, H, W\].*\(8, 8\)"):
        shift_views(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        shift_views(x, -1)
