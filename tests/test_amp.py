"""Mixed precision (``train:amp``): the MixedPrecision helper on its own."""
import copy

import pytest
import torch

from uniremoval.models.amp import MixedPrecision, amp_mode


def tiny_net(seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d
    return torch.nn.Sequential(conv(3, 8, 3, padding=1), torch.nn.ReLU(), conv(8, 3, 3, padding=1))


def _steps(net, opt, amp, gen, n):
    """``n`` mixed-precision steps of an L1 identity task on random batches drawn from ``gen``; the losses."""
    losses = []
    for _ in range(n):
        x = torch.rand(2, 3, 16, 16, generator=gen)
        opt.zero_grad()
        with amp.autocast():
            loss = torch.nn.functional.l1_loss(net(x), x)
        amp.backward(loss)
        amp.step(opt)
        amp.update()
        losses.append(loss.item())
    return losses


def train(mode, iters=5, seed=0):
    net = tiny_net(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    amp = MixedPrecision(mode, 'cpu')
    losses = _steps(net, opt, amp, torch.Generator().manual_seed(1), iters)
    return net, losses, amp


def test_amp_mode_accepts_the_three_values_and_refuses_others():
    assert [amp_mode({'amp': m}) for m in (None, 'bf16', 'fp16')] == [None, 'bf16', 'fp16']
    assert amp_mode({}) is None
    with pytest.raises(ValueError, match="train:amp.*'float16'"):
        amp_mode({'amp': 'float16'})


def test_fp32_mode_is_exactly_plain_training():
    net, losses, _ = train(None)
    ref = tiny_net(0)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.rand(2, 3, 16, 16, generator=gen)
        opt.zero_grad()
        torch.nn.functional.l1_loss(ref(x), x).backward()
        opt.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize('mode', ['bf16', 'fp16'])
def test_reduced_precision_follows_fp32_within_tolerance(mode):
    """bf16 keeps 8 mantissa bits, fp16 11: after 5 Adam steps of lr 1e-3 the weights stay within 2e-3
    of the fp32 run's (each step moves a weight by about lr), and the losses within 2%."""
    ref, ref_losses, _ = train(None)
    net, losses, amp = train(mode)
    assert all(p.dtype == torch.float32 for p in net.parameters())  # master weights stay fp32
    for a, b in zip(net.parameters(), ref.parameters()):
        assert (a - b).abs().max() < 2e-3
    for a, b in zip(losses, ref_losses):
        assert abs(a - b) / b < 0.02
    moved = max((a - b).abs().max() for a, b in zip(net.parameters(), tiny_net(0).parameters()))
    assert moved > 2e-3  # the tolerance is tighter than the training's own movement


def test_autocast_runs_the_convolutions_in_the_reduced_type():
    net = tiny_net()
    for mode, dtype in (('bf16', torch.bfloat16), ('fp16', torch.float16), (None, torch.float32)):
        with MixedPrecision(mode, 'cpu').autocast():
            assert net(torch.rand(1, 3, 8, 8)).dtype == dtype


def test_fp16_scaler_skips_a_non_finite_step_and_halves_the_scale():
    net = tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    amp = MixedPrecision('fp16', 'cpu')
    before = copy.deepcopy(net.state_dict())
    scale = amp.scaler.get_scale()
    with amp.autocast():
        loss = net(torch.rand(1, 3, 8, 8)).sum() * float('inf')
    amp.backward(loss)
    amp.step(opt)
    amp.update()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert amp.scaler.get_scale() == scale / 2


def _growing_fp16():
    """fp16 with a scale that changes at every step, so a resume that lost its state would differ."""
    amp = MixedPrecision('fp16', 'cpu')
    amp.scaler = torch.amp.GradScaler('cpu', growth_interval=1)
    return amp


def test_fp16_scaler_state_resumes_exactly():
    """A run resumed from the saved scaler state ends with the weights and scale of an uninterrupted run."""
    ref, ref_amp = tiny_net(0), _growing_fp16()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    _steps(ref, ref_opt, ref_amp, torch.Generator().manual_seed(1), 6)

    net, amp = tiny_net(0), _growing_fp16()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    _steps(net, opt, amp, gen, 3)
    saved = {'net': copy.deepcopy(net.state_dict()), 'opt': copy.deepcopy(opt.state_dict()),
             'amp': copy.deepcopy(amp.state_dict()), 'gen': gen.get_state()}
    assert saved['amp']['scale'] != _growing_fp16().scaler.get_scale()  # the state carries information

    net2, amp2 = tiny_net(5), _growing_fp16()
    net2.load_state_dict(saved['net'])
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    opt2.load_state_dict(saved['opt'])
    amp2.load_state_dict(saved['amp'])
    gen2 = torch.Generator()
    gen2.set_state(saved['gen'])
    _steps(net2, opt2, amp2, gen2, 3)
    assert amp2.scaler.get_scale() == ref_amp.scaler.get_scale()
    for a, b in zip(net2.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_fp32_and_bf16_have_no_scaler_state():
    assert MixedPrecision(None, 'cpu').state_dict() == {} and MixedPrecision('bf16', 'cpu').state_dict() == {}


def test_reduce_frozen_casts_only_when_enabled():
    net = tiny_net()
    assert MixedPrecision(None, 'cpu').reduce_frozen(net)[0].weight.dtype == torch.float32
    assert MixedPrecision('bf16', 'cpu').reduce_frozen(net)[0].weight.dtype == torch.bfloat16
