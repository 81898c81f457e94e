"""Values of the right type but out of range are refused by the option checker (rc 2, one line naming the
file and the key) instead of failing deep in torch or numpy: NaN, optimiser and scheduler ranges, seeds,
worker counts, network sizes, total_iter; and keys given twice in one option file."""
import pytest
import yaml

from uniremoval.options import OptionsError, load_option_file, parse_options
from conftest import run_cli, tiny_teacher_options


@pytest.fixture
def tiny(tmp_path, paired_folders):
    return tiny_teacher_options(tmp_path, paired_folders, 'ranges')


def _error(tmp_path, opt_path, change):
    opt = load_option_file(opt_path)
    change(opt)
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    with pytest.raises(OptionsError) as info:
        parse_options(['-opt', opt_path], root_path=str(tmp_path), is_train=True)
    msg = str(info.value)
    assert opt_path in msg, msg
    return msg


def _set(*keys_value):
    *keys, value = keys_value

    def change(opt):
        node = opt
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return change


@pytest.mark.parametrize('change, expected', [
    (_set('train', 'optim_g', 'lr', float('nan')), 'train:optim_g:lr: expected a finite number, got nan'),
    (_set('train', 'optim_g', 'lr', float('inf')), 'train:optim_g:lr: expected a finite number, got inf'),
    (_set('train', 'optim_g', 'betas', [2.0, -1]), 'train:optim_g:betas: expected betas each in [0, 1)'),
    (_set('train', 'optim_g', 'eps', 0), 'train:optim_g:eps: expected a positive eps'),
    (_set('train', 'optim_g', 'weight_decay', -0.1), 'train:optim_g:weight_decay: expected a weight decay >= 0'),
    (_set('manual_seed', -1), 'manual_seed: expected a seed in [0, 4294967295], got -1'),
    (_set('manual_seed', 2**32), 'manual_seed: expected a seed in [0, 4294967295]'),
    (_set('scale', 0), 'scale: expected a scale >= 1, got 0'),
    (_set('datasets', 'train', 'num_worker_per_gpu', -1), 'datasets:train:num_worker_per_gpu: expected a worker'),
    (_set('network_g', 'n_feat', 0), 'network_g:n_feat: expected a positive integer (the default of MPRNet.n_feat'),
    (_set('train', 'total_iter', 2**40), 'train:total_iter: expected at most 2147483647'),
    (_set('val', 'some_weight', float('nan')), 'val:some_weight: expected a finite number, got nan'),
])
def test_out_of_range_values_are_refused(tmp_path, tiny, change, expected):
    assert expected in _error(tmp_path, tiny, change)


def test_scheduler_ranges(tmp_path, tiny):
    msg = _error(tmp_path, tiny, _set('train', 'scheduler', {'type': 'MultiStepLR', 'milestones': [0, 5],
                                                             'gamma': 0.5}))
    assert 'train:scheduler:milestones: expected positive integer milestones' in msg
    msg = _error(tmp_path, tiny, _set('train', 'scheduler', {'type': 'MultiStepLR', 'milestones': [5],
                                                             'gamma': -0.5}))
    assert 'train:scheduler:gamma: expected a positive gamma' in msg


def test_duplicate_key_names_both_lines(tmp_path, tiny):
    text = open(tiny).read()
    with open(tiny, 'w') as f:
        f.write(text + '\nnetwork_g:\n  type: MPRNet\n')
    with pytest.raises(OptionsError) as info:
        load_option_file(tiny)
    msg = str(info.value)
    assert 'duplicate key network_g (lines' in msg and tiny in msg
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith('network_g:'))
    assert f'lines {first} and {len(text.splitlines()) + 2}' in msg


def test_nested_duplicate_key(tmp_path):
    path = tmp_path / 'dup.yml'
    path.write_text('train:\n  optim_g:\n    lr: 1.0e-4\n    lr: 2.0e-4\n')
    with pytest.raises(OptionsError, match=r'duplicate key lr \(lines 3 and 4\)'):
        load_option_file(str(path))


def test_cli_one_line_exit_2(tmp_path, tiny):
    opt = load_option_file(tiny)
    opt['train']['optim_g']['betas'] = [2.0, -1]
    with open(tiny, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    proc = run_cli(['train', '-opt', tiny], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'train:optim_g:betas' in lines[0] and tiny in lines[0], proc.stderr


def test_every_shipped_option_file_loads_and_checks():
    """The range rules (e.g. positive int defaults stay positive) refuse no shipped file."""
    import glob
    from os import path as osp

    from uniremoval.options import check_options
    from conftest import REPO
    files = sorted(glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True)
                   + glob.glob(osp.join(REPO, 'uniremoval', 'demo', 'configs', '**', '*.yml'), recursive=True))
    assert len(files) >= 40
    checked = 0
    for path in files:
        opt = load_option_file(path)
        if 'model_type' in opt:
            check_options(opt, path, is_train='train' in opt, check_paths=False)
            checked += 1
    assert checked >= 30


def test_missing_pretrained_vgg_is_an_option_error(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_hub'))
    msg = _error(tmp_path, tiny, _set('train', 'image_cl_opt', {'type': 'ImageContrastiveLoss', 'pretrained': True}))
    assert 'train:image_cl_opt:pretrained: ImageNet vgg19 weights file' in msg
    assert str(tmp_path / 'empty_hub') in msg and 'vgg19-dcbb9e9d.pth' in msg
    msg = _error(tmp_path, tiny, _set('train', 'image_cl_opt', {'type': 'ImageContrastiveLoss', 'pretrained': True,
                                                                'vgg_weights_path': str(tmp_path / 'no.pth')}))
    assert f'train:image_cl_opt:vgg_weights_path: ImageNet vgg19 weights file {tmp_path / "no.pth"}' in msg


def test_network_too_big_for_memory_names_its_parameter_count(tmp_path, tiny, monkeypatch):
    import uniremoval.options as options
    monkeypatch.setattr(options, 'memory_bytes', lambda: 2**20)  # a 1 MiB machine
    msg = _error(tmp_path, tiny, lambda opt: None)
    assert 'network_g: MPRNet would have ' in msg and ' parameters: ' in msg and '0.0 GiB of memory' in msg
    count = int(msg.split('would have ')[1].split(' parameters')[0].replace(',', ''))
    opt = load_option_file(tiny)
    from basicsr.utils.registry import ARCH_REGISTRY
    net = ARCH_REGISTRY.get('MPRNet')(**{k: v for k, v in opt['network_g'].items() if k != 'type'})
    assert count == sum(p.numel() for p in net.parameters())
