"""MPRNet losses (Charbonnier, EdgeLoss) and the teacher model MPRNetModel (losses summed over the stages)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.losses import build_loss
from basicsr.models import build_model
from uniremoval.losses.mprnet_loss import GAUSS_TAPS, laplacian
from uniremoval.options import parse_options
from conftest import TINY_TEACHER_OPT


def _reference_laplacian(img):
    """Independent numpy version of MPRNet's EdgeLoss.laplacian_kernel (scipy, 'nearest' = replicate)."""
    k = np.outer(GAUSS_TAPS, GAUSS_TAPS)
    blur = lambda x: ndimage.correlate(x, k, mode='nearest')  # noqa: E731
    filtered = blur(img)
    up = np.zeros_like(filtered)
    up[::2, ::2] = filtered[::2, ::2] * 4
    return img - blur(up)


def test_laplacian_matches_reference_and_vanishes_on_constant_interior():
    rng = np.random.default_rng(0)
    img = rng.random((2, 3, 9, 12)).astype(np.float64)
    ours = laplacian(torch.from_numpy(img)).numpy()
    ref = np.stack([np.stack([_reference_laplacian(c) for c in im]) for im in img])
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    const = laplacian(torch.full((1, 1, 12, 12), 0.7, dtype=torch.float64))[0, 0]
    assert torch.allclose(const[2:-3, 2:-3], torch.zeros(7, 7, dtype=torch.float64), atol=1e-12)


def test_edge_and_charbonnier_known_answers():
    edge = build_loss({'type': 'EdgeLoss', 'loss_weight': 0.05, 'eps': 1e-3})
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    assert edge(x, x).item() == pytest.approx(0.05 * 1e-3, rel=1e-9)  # sqrt(0 + eps^2) = eps
    y = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    d = _reference_laplacian(x[0, 0].numpy()) - _reference_laplacian(y[0, 0].numpy())
    expected = 0.05 * np.sqrt(d**2 + 1e-6).mean()
    assert edge(x[:, :1], y[:, :1]).item() == pytest.approx(expected, rel=1e-9)
    # BasicSR's Charbonnier with eps=1e-6 is MPRNet's sqrt(d^2 + (1e-3)^2)
    char = build_loss({'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-6})
    assert char(torch.full((1, 1, 2, 2), 0.8), torch.full((1, 1, 2, 2), 0.5)).item() == pytest.approx(
        np.sqrt(0.09 + 1e-6), rel=1e-6)


# --------------------------------------------------------------------------- teacher model
def _tiny_model(tmp_path, **root):
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), is_train=True, check_paths=False)
    opt.update(root)
    return build_model(opt)


def test_mprnet_model_sums_losses_over_the_three_stages(tmp_path):
    torch.manual_seed(0)
    model = _tiny_model(tmp_path)
    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    model.feed_data({'lq': lq, 'gt': gt})
    with torch.no_grad():
        stages = model.net_g(lq)
    assert len(stages) == 3
    expected_pix = sum(torch.sqrt((s - gt)**2 + 1e-6).mean() for s in stages).item()
    expected_edge = sum(model.cri_edge(s, gt) for s in stages).item()
    before = [p.detach().clone() for p in model.net_g.parameters()]
    model.optimize_parameters(1)
    assert model.log_dict['l_pix'] == pytest.approx(expected_pix, rel=1e-5)
    assert model.log_dict['l_edge'] == pytest.approx(expected_edge, rel=1e-5)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.net_g.parameters()))


@pytest.mark.parametrize('pixel_range, expected', [([0, 1], (0.0, 1.0)), ([-1, 1], (-1.0, 1.0))])
def test_pixel_range_option(tmp_path, pixel_range, expected):
    model = _tiny_model(tmp_path, pixel_range=pixel_range)
    seen = []
    model.net_g.register_forward_hook(lambda m, inp, out: seen.append((inp[0].min().item(), inp[0].max().item())))
    lq = torch.linspace(0, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)
    model.feed_data({'lq': lq})
    model.test()
    assert seen[-1] == pytest.approx(expected)
    with torch.no_grad():
        raw = model.net_g(model.to_network_range(lq))[0]
    assert torch.allclose(model.output, model.from_network_range(raw))
    with pytest.raises(ValueError, match='pixel_range'):
        _tiny_model(tmp_path, pixel_range=[0, 255])
