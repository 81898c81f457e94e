"""Compat shim, registration, safe options, checkpoints, MPRNet losses and the teacher model."""
import os
import subprocess
import sys
from os import path as osp

import numpy as np
import pytest
import torch
from scipy import ndimage

import uniremoval
from basicsr.losses import build_loss
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY
from conftest import TINY_TEACHER_OPT
from uniremoval.losses.mprnet_loss import GAUSS_TAPS, laplacian
from uniremoval.options import OptionsError, apply_force_yml, load_option_file, parse_options, yaml_load_safe
from uniremoval.utils.checkpoint import atomic_torch_save, load_state_dict_file


# --------------------------------------------------------------------------- compat + registration
def test_plain_basicsr_import_needs_the_shim_and_plugin_import_is_clean():
    code_plain = 'import basicsr'
    code_plugin = ('import uniremoval, basicsr, sys; '
                   'from torchvision.transforms.functional import rgb_to_grayscale as f; '
                   'from basicsr.data.degradations import rgb_to_grayscale as g; '
                   'print(sys.modules["torchvision.transforms.functional_tensor"].__name__)')
    plain = subprocess.run([sys.executable, '-c', code_plain], capture_output=True, text=True)
    plugin = subprocess.run([sys.executable, '-c', code_plugin], capture_output=True, text=True)
    import torchvision
    if int(torchvision.__version__.split('.')[1]) >= 17:  # functional_tensor was removed in 0.17
        assert plain.returncode != 0 and 'functional_tensor' in plain.stderr
    assert plugin.returncode == 0, plugin.stderr
    assert plugin.stdout.strip() == 'torchvision.transforms.functional_tensor'


def test_compat_install_is_idempotent():
    assert uniremoval.compat.install() == []  # already installed by `import uniremoval`
    alias = sys.modules[uniremoval.compat.LEGACY_MODULE]
    img = torch.rand(3, 4, 5)
    import torchvision.transforms.functional as F
    assert torch.equal(alias.rgb_to_grayscale(img), F.rgb_to_grayscale(img))


def test_registry_round_trip():
    assert ARCH_REGISTRY.get('MPRNet').__module__ == 'uniremoval.archs.uniremoval_arch'
    assert MODEL_REGISTRY.get('MPRNetModel').__module__ == 'uniremoval.models.mprnet_model'
    assert LOSS_REGISTRY.get('EdgeLoss').__module__ == 'uniremoval.losses.mprnet_loss'
    loss = build_loss({'type': 'EdgeLoss', 'loss_weight': 0.05})
    assert loss.loss_weight == 0.05 and loss.eps == 1e-3


# --------------------------------------------------------------------------- options
def test_safe_yaml_refuses_python_tags_and_reads_exponent_floats(tmp_path):
    evil = tmp_path / 'evil.yml'
    evil.write_text('name: !!python/object/apply:os.system ["echo pwned"]\n')
    with pytest.raises(OptionsError, match='evil.yml'):
        load_option_file(str(evil))
    assert yaml_load_safe('lr: 2e-4\nt: 1e-6\nf: !!float 3e-4\nx: 1.5\nn: 10') == {
        'lr': 2e-4, 't': 1e-6, 'f': 3e-4, 'x': 1.5, 'n': 10}


def test_force_yml_parses_values_without_eval():
    opt = {'name': 'a', 'train': {'total_iter': 5, 'periods': [1]}, 'val': {'save_img': False}}
    apply_force_yml(opt, ['train:total_iter=7', 'train:periods=[2, 3]', 'val:save_img=true',
                          "name=__import__('os').getcwd()"])
    assert opt == {'name': "__import__('os').getcwd()", 'train': {'total_iter': 7, 'periods': [2, 3]},
                   'val': {'save_img': True}}
    with pytest.raises(OptionsError, match='train:nope'):
        apply_force_yml(opt, ['train:nope=1'])
    with pytest.raises(OptionsError, match='key:subkey=value'):
        apply_force_yml(opt, ['train:total_iter'])


def test_parse_options_paths_and_errors(tmp_path):
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), is_train=True)
    assert opt['path']['experiments_root'] == osp.join(str(tmp_path), 'experiments', 'demo_teacher_tiny')
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['val']['phase'] == 'val'
    assert opt['train']['optim_g']['lr'] == 2e-4 and opt['dist'] is False and opt['num_gpu'] == 0
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: x\nmodel_type: MPRNetModel\n')
    with pytest.raises(OptionsError, match=r"bad.yml lacks the required key 'datasets'"):
        parse_options(['-opt', str(bad)], root_path=str(tmp_path))
    with pytest.raises(OptionsError, match='not found'):
        parse_options(['-opt', str(tmp_path / 'missing.yml')], root_path=str(tmp_path))


# --------------------------------------------------------------------------- checkpoints
def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_torch_save({'params': {'w': torch.ones(2)}}, str(path))
    with pytest.raises(Exception):
        atomic_torch_save({'params': {'w': lambda: None}}, str(path))  # unpicklable
    assert os.listdir(tmp_path) == ['net.pth']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert torch.equal(load_state_dict_file(str(path))['w'], torch.ones(2))


def test_load_state_dict_file_formats_and_refusals(tmp_path):
    sd = {'a.weight': torch.arange(3.)}
    torch.save({'state_dict': {'module.a.weight': sd['a.weight']}}, tmp_path / 'official.pth')
    torch.save({'params': sd, 'params_ema': {'a.weight': sd['a.weight'] + 1}}, tmp_path / 'basicsr.pth')
    torch.save({'params': sd}, tmp_path / 'no_ema.pth')
    assert torch.equal(load_state_dict_file(str(tmp_path / 'official.pth'))['a.weight'], sd['a.weight'])
    assert torch.equal(load_state_dict_file(str(tmp_path / 'basicsr.pth'), 'params_ema')['a.weight'],
                       sd['a.weight'] + 1)
    assert torch.equal(load_state_dict_file(str(tmp_path / 'no_ema.pth'), 'params_ema')['a.weight'], sd['a.weight'])
    torch.save({'params': sd, 'obj': np.dtype('float32').type}, tmp_path / 'pickled.pth')
    with pytest.raises(RuntimeError, match='pickled.pth'):  # weights_only refuses python objects
        load_state_dict_file(str(tmp_path / 'pickled.pth'))
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_state_dict_file(str(tmp_path / 'nothing.pth'))


# --------------------------------------------------------------------------- losses
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
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), is_train=True)
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
