"""PackedNet: K paper networks as one stacked network are exactly the K networks (forward, SGD, BN, CReLU order).

The step-level checks run in float64, where grouped and plain convolutions agree to ~1e-13: a float32 comparison
of deep BatchNorm nets is chaotic (a ~1e-6 difference flips a ReLU near zero and changes one gradient entry by
O(1)), which says nothing about the packing.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from crelu.config import compose_config
from crelu.data.tensor_loader import TensorBatches
from crelu.models import build_model
from crelu.models.packed import PackedNet, merge_optimizer_states, split_optimizer_state, stack_inputs
from crelu.training.engine import ModelStep, train_epoch
from crelu.training.optim import build_optimizer
from crelu.training.packed import PackedStep

NO_DROPOUT = ["model.dropout=0", "model.dropout_input=0", "model.dropout_first=0", "model.dropout_fc=0"]
ROWS = {
    "convpool_crelu": ["experiment=table1/crelu"],
    "convpool_avr": ["experiment=table1/avr"],
    "convpool_crelu_half": ["experiment=table1/crelu_half"],
    "vgg_bn": ["experiment=table2/vgg"],
    "vgg_crelu_1_3_5": ["experiment=table2/crelu_conv1_3_5"],
    "vgg_crelu_post_act_bn": ["experiment=table2/crelu_conv1_3", "model.bn_position=post_act"],
}


def _cfg(row, *extra, width=0.125):
    return compose_config([*ROWS[row], f"model.width_scale={width}", *extra])


def _members(cfg, k=3, dtype=torch.float32):
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(cfg.model, 10).to(dtype))
    return out


def _batches(k, b=16, dtype=torch.float32, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(b, 3, size, size, generator=g, dtype=dtype) for _ in range(k)],
            [torch.randint(0, 10, (b,), generator=g) for _ in range(k)])


@pytest.mark.parametrize("row", list(ROWS))
def test_forward_equals_members_and_unpack_roundtrips(row):
    members = [m.eval() for m in _members(_cfg(row, *NO_DROPOUT))]
    net = PackedNet(members).eval()
    xs, _ = _batches(3)
    out = net(stack_inputs(xs))
    assert out.shape == (16, 3, 10)
    for i, (m, x) in enumerate(zip(members, xs)):
        torch.testing.assert_close(out[:, i], m(x), rtol=1e-5, atol=1e-5)
    back = net.unpack()
    assert [type(b) for b in back] == [type(m) for m in members] and back[0].plan == members[0].plan
    for m, b in zip(members, back):
        assert m.state_dict().keys() == b.state_dict().keys()
        for key, v in m.state_dict().items():
            assert torch.equal(v, b.state_dict()[key]), key
    again = PackedNet(back)
    for key, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[key]), key


def test_crelu_channel_order_is_per_member():
    members = _members(_cfg("convpool_crelu", *NO_DROPOUT))
    net = PackedNet(members)
    xs, _ = _batches(3)
    got = net.features[:3](stack_inputs(xs))  # conv1 -> act1 (CReLU) -> conv2
    acts = net.features.act1(net.features.conv1(stack_inputs(xs)))
    f = members[0].conv(1).out_channels
    assert acts.shape[1] == 3 * 2 * f
    for i, (m, x) in enumerate(zip(members, xs)):
        z = m.features.conv1(x)
        block = acts[:, i * 2 * f:(i + 1) * 2 * f]
        torch.testing.assert_close(block[:, :f], F.relu(z))  # positive phases first,
        torch.testing.assert_close(block[:, f:], F.relu(-z))  # then the negative phases of the same member
        torch.testing.assert_close(got.chunk(3, 1)[i], m.features[:3](x), rtol=1e-5, atol=1e-5)


def test_channels_last_packed_net_matches_and_stays_channels_last():
    members = [m.eval() for m in _members(_cfg("vgg_crelu_1_3_5", *NO_DROPOUT))]
    net = PackedNet(members).eval()
    xs, _ = _batches(3)
    ref = net(stack_inputs(xs))
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x_cl = stack_inputs([x.contiguous(memory_format=torch.channels_last) for x in xs])
    act = net_cl.features.act1(net_cl.features.bn1(net_cl.features.conv1(x_cl)))
    assert act.is_contiguous(memory_format=torch.channels_last)  # no layout round trip around each CReLU
    torch.testing.assert_close(net_cl(x_cl), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("row", list(ROWS))
def test_sgd_steps_equal_separate_runs(row):
    """Loss = sum of per-member mean CE: weights, BN batch/running statistics and momentum match K separate runs."""
    cfg = _cfg(row, *NO_DROPOUT, "optim.weight_decay=0.01")
    members = _members(cfg, dtype=torch.float64)
    net = PackedNet(copy.deepcopy(members))
    opts = [build_optimizer(cfg.optim, m.parameters()) for m in members]
    opt = build_optimizer(cfg.optim, net.parameters())
    for step in range(3):
        xs, ys = _batches(3, dtype=torch.float64, seed=step, size=16)  # 16x16: float64 convs are slow
        losses = []
        for m, o, x, y in zip(members, opts, xs, ys):
            loss = F.cross_entropy(m(x), y)
            o.zero_grad()
            loss.backward()
            o.step()
            losses.append(loss.item())
        per = F.cross_entropy(net(stack_inputs(xs)).transpose(1, 2), torch.stack(ys, 1), reduction="none").mean(0)
        opt.zero_grad()
        per.sum().backward()
        opt.step()
        assert per.tolist() == pytest.approx(losses, rel=1e-10)
    for m, state in zip(members, net.member_state_dicts()):
        for key, v in m.state_dict().items():
            torch.testing.assert_close(state[key], v, rtol=1e-8, atol=1e-9, msg=key)
    if "vgg" in row:
        assert any("running_var" in k for k in state) and int(state["features.bn1.num_batches_tracked"]) == 3
    for o, part in zip(opts, split_optimizer_state(opt.state_dict(), 3)):
        for idx, st in o.state_dict()["state"].items():
            torch.testing.assert_close(part["state"][idx]["momentum_buffer"], st["momentum_buffer"],
                                       rtol=1e-8, atol=1e-9)
    merged = merge_optimizer_states(split_optimizer_state(opt.state_dict(), 3))
    for idx, st in opt.state_dict()["state"].items():
        assert torch.equal(merged["state"][idx]["momentum_buffer"], st["momentum_buffer"])


@pytest.mark.parametrize("row", ["convpool_crelu", "vgg_crelu_1_3_5"])
def test_uneven_member_epochs_sit_out_exactly(row):
    """Members with fewer batches or a smaller last batch (drop_last=False) sit out: each sees only its own steps."""
    cfg = _cfg(row, *NO_DROPOUT, "optim.lr=0.01")
    sizes = [72, 40, 64]  # batch 16: 5 steps (the last of 8), 3 steps (the last of 8), 4 full steps
    g = torch.Generator().manual_seed(3)
    data = [TensorBatches(torch.randn(n, 3, 16, 16, generator=g, dtype=torch.float64),
                          torch.randint(0, 10, (n,), generator=g), batch_size=16, drop_last=False, flip=True,
                          shift=2) for n in sizes]
    members = _members(cfg, dtype=torch.float64)
    net = PackedNet(copy.deepcopy(members))
    opts = [build_optimizer(cfg.optim, m.parameters()) for m in members]
    opt = build_optimizer(cfg.optim, net.parameters())
    cpu = torch.device("cpu")
    for epoch in range(2):
        sep = [train_epoch(ModelStep(m, o, d, torch.Generator().manual_seed(100 * epoch + 7), device=cpu,
                                     amp_dtype=None), quiet=True)[0] for m, o, d in zip(members, opts, data)]
        gens = [torch.Generator().manual_seed(100 * epoch + 7) for _ in data]
        packed = train_epoch(PackedStep(net, opt, data, gens, device=cpu, amp_dtype=None), quiet=True)
        assert [s.examples for s in packed] == [s.examples for s in sep] == sizes
        assert [s.loss for s in packed] == pytest.approx([s.loss for s in sep], rel=1e-5)
        assert [s.error for s in packed] == pytest.approx([s.error for s in sep], abs=1e-9)
    for m, state in zip(members, net.member_state_dicts()):
        for key, v in m.state_dict().items():
            torch.testing.assert_close(state[key].double(), v.double(), rtol=1e-5, atol=1e-6, msg=key)
    if "vgg" in row:  # BN counters: 2 epochs of 5 / 3 / 4 steps, not the shared 2 x 5
        counts = [int(s["features.bn1.num_batches_tracked"]) for s in net.member_state_dicts()]
        assert counts == [10, 6, 8]


@pytest.mark.parametrize("row", ["convpool_crelu", "vgg_crelu_1_3_5"])
def test_dropout_masks_differ_between_members(row):
    cfg = _cfg(row)  # the recipe's dropout
    torch.manual_seed(0)
    one = build_model(cfg.model, 10)
    net = PackedNet([copy.deepcopy(one) for _ in range(3)])  # identical members, identical inputs
    x = torch.randn(8, 3, 32, 32)
    net.eval()
    out = net(stack_inputs([x] * 3))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    drop = next(m for m in net.features if isinstance(m, torch.nn.Dropout))
    net.train()
    seen = []
    drop.register_forward_hook(lambda mod, inp, o: seen.append((inp[0] != 0, o == 0)))
    net(stack_inputs([x] * 3))
    live, zero = seen[0]
    dropped = live & zero
    m0, m1, m2 = dropped.chunk(3, dim=1)
    assert m0.any() and not torch.equal(m0, m1) and not torch.equal(m1, m2)
    for i in range(3):  # each member still drops its live units at the recipe's rate
        rate = dropped.chunk(3, 1)[i].sum().item() / live.chunk(3, 1)[i].sum().item()
        assert rate == pytest.approx(drop.p, abs=0.05)


def test_pack_rejects_mismatched_members():
    a = build_model(_cfg("convpool_crelu").model, 10)
    b = build_model(_cfg("convpool_avr").model, 10)
    with pytest.raises(ValueError, match="architecture"):
        PackedNet([a, b])
    c = build_model(_cfg("convpool_crelu", width=0.25).model, 10)
    with pytest.raises(ValueError):
        PackedNet([a, c])
