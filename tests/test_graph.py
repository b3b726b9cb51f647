"""Dependency rules of the channel graph: which channels go together, and clear refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimizer
from optimizer.graph.attention import MultiheadSelfAttention
from optimizer.graph.dependency import DependencyGraph, UnsupportedOpError
from tests.zoo import ZOO


def _roots(dg: DependencyGraph) -> dict[str, int]:
    return {g.root: len(g) for g in dg.groups()}


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + torch.relu(self.bn(self.a(x)))
        return self.fc(self.b(x).flatten(1))


def test_residual_add_puts_both_producers_in_one_group():
    dg = DependencyGraph(Residual(), (torch.randn(1, 3, 4, 4),))
    g = dg.group_of("stem")
    producers = {m.module for m in g.members if m.role == "out"}
    assert producers == {"stem", "a"}
    assert {m.module for m in g.members if m.role == "in"} == {"a", "b"}
    assert "stem" in g.details() and "=>" in g.details()


def test_flatten_maps_each_channel_to_its_block_of_features():
    dg = DependencyGraph(Residual(), (torch.randn(1, 3, 4, 4),))
    g = dg.group_of("b")
    fc = next(i for i, m in enumerate(g.members) if m.module == "fc")
    # channel c of `b` is features c*16 .. c*16+15 of `fc` (4x4 spatial positions)
    for c in range(8):
        assert g.unit_index[fc][c].tolist() == list(range(c * 16, c * 16 + 16))


def test_concat_offsets_and_chunk_constraint():
    dg = DependencyGraph(*ZOO["yolo_c2f"]())
    g = dg.group_of("c2f2.cv1.conv")
    assert g.segments == 2  # chunk(2) needs equal halves
    cv2 = next(i for i, m in enumerate(g.members) if m.module == "c2f2.cv2.conv")
    # cv1's 64 channels are cv2's inputs 0..63; the bottleneck adds its output to the second
    # half, so its channel j (inputs 64 + j) goes with cv1's channel 32 + j.
    assert g.unit_index[cv2][0].tolist() == [0]
    assert g.unit_index[cv2][32 + 5].tolist() == [37, 69]


def test_depthwise_conv_follows_its_input_channels():
    dg = DependencyGraph(*ZOO["mobilenetv2"]())
    for g in dg.groups():
        for m in g.members:
            if m.tensor == "depthwise":
                assert any(o.role == "out" for o in g.members)


def test_grouped_conv_and_groupnorm_remove_equally_per_group():
    model, x = ZOO["resnet_bottleneck"]()
    dg = DependencyGraph(model, x)
    gs = [g for g in dg.groups() if g.segments > 1]
    assert gs and all(g.prunable for g in gs)
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0, name
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0, name
    model(*x)


def test_attention_heads_are_a_group_and_nn_mha_is_replaced_exactly():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    ours = MultiheadSelfAttention.from_torch(mha).eval()
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(ours(x, x, x)[0], mha(x, x, x)[0], rtol=1e-5, atol=1e-6)

    model, x = ZOO["transformer"]()
    dg = DependencyGraph(model, x)
    heads = [g for g in dg.groups() if g.heads]
    assert len(heads) == 2 and all(len(g) == 4 for g in heads)
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    attn = [m for m in model.modules() if isinstance(m, MultiheadSelfAttention)]
    assert len(attn) == 2
    assert all(a.num_heads == 2 and a.q_proj.out_features == 2 * a.head_dim for a in attn)
    assert model.embed.embedding_dim == 32 and model.pos.shape[-1] == 32


def test_model_outputs_and_inputs_are_locked():
    dg = DependencyGraph(*ZOO["vgg"]())
    last = [g for g in dg.groups() if not g.prunable]
    assert last and all(g.locked.all() for g in last)


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        return y.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shuffle = Shuffle()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.shuffle(x))


def test_unknown_op_raises_before_any_change_and_names_module_and_ignore():
    model, x = Net(), (torch.randn(1, 3, 4, 4),)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedOpError) as e:
        optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    msg = str(e.value)
    assert "`shuffle`" in msg and "ignore" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Ignoring the module leaves its channels alone; the rest still prunes.
    optimizer.prune_channels_(
        model, x, optimizer.ChannelPruneConfig(ratio=0.5, ignore=("shuffle",))
    )
    assert model.shuffle.conv.out_channels == 8
    model(*x)


def test_ignore_names_a_missing_module():
    with pytest.raises(ValueError, match="not a module"):
        DependencyGraph(*ZOO["mlp"](), ignore=("nope",))


def test_untraceable_model_gets_a_clear_error():
    class Dyn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(ValueError, match="could not trace"):
        DependencyGraph(Dyn(), (torch.randn(2, 4),))


def test_shared_module_called_twice_keeps_one_channel_set():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 16)
            self.b = nn.Linear(16, 16)
            self.c = nn.Linear(16, 4)

        def forward(self, x):
            return self.c(self.b(torch.relu(self.b(torch.relu(self.a(x))))))

    model, x = Twice(), (torch.randn(3, 8),)
    optimizer.prune_channels_(model, x, optimizer.ChannelPruneConfig(ratio=0.5))
    assert model.b.in_features == model.b.out_features == model.a.out_features == 8
    model(*x)
