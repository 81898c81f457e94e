"""uniremoval-ads-select, uniremoval-ads-compare and the ADS demo (smoke setting) on tiny data."""
import json
import os
from os import path as osp

import pytest
import torch
import yaml
from test_ads_model import BACKBONE, CLASSIFIER, KINDS, rbn_dataset, write_rbn

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.archs import build_network
from uniremoval.ads import compare_workflow
from uniremoval.ads.selection import load_masks, maskable_convs, num_selected_filters
from uniremoval.commands import ads_select

CHANGED_LAYER, CHANGED_FILTER = 'intro', 3


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny data, a UM, targets that differ from it in ONE filter (intro, filter 3) and a classifier."""
    root = tmp_path_factory.mktemp('ads_cmd')
    data = {'train': write_rbn(str(root / 'train'), 3, seed=11), 'val': write_rbn(str(root / 'val'), 2, seed=12)}
    torch.manual_seed(0)
    um = build_network(dict(BACKBONE))
    files = {'um': str(root / 'um.pth')}
    torch.save({'params': um.state_dict()}, files['um'])
    targets = {}
    for i, kind in enumerate(KINDS):
        state = {k: v.clone() for k, v in um.state_dict().items()}
        state[f'{CHANGED_LAYER}.weight'][CHANGED_FILTER] += 0.2 * (i + 1)
        targets[kind] = str(root / f'target_{kind}.pth')
        torch.save({'params': state}, targets[kind])
    files['classifier'] = str(root / 'classifier.pth')
    torch.save({'params': build_network(dict(CLASSIFIER)).state_dict()}, files['classifier'])
    select = {
        'name': 'select_test', 'num_gpu': 0, 'manual_seed': 0, 'pixel_range': [0, 1], 'network_g': dict(BACKBONE),
        'path': {'pretrain_network_um': files['um'], 'pretrain_network_targets': targets,
                 'output': str(root / 'select')},
        'datasets': {'select': dict(rbn_dataset(data['val'], 'sel', 'val'))},
        'select': {'method': 'faig', 'q': [10, 50], 'num_images': 2, 'steps': 3, 'crop_size': None},
    }
    files['select'] = str(root / 'select.yml')
    with open(files['select'], 'w') as f:
        yaml.safe_dump(select, f, sort_keys=False)
    ads = {
        'name': 'ads_cmp', 'model_type': 'ADSModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': rbn_dataset(data['train'], 'rbn_train'),
                     'val': rbn_dataset(data['val'], 'rbn_val', 'val')},
        'network_g': {'type': 'ADSNet', 'backbone': dict(BACKBONE), 'num_degradations': 3, 'masks': None,
                      'classifier': dict(CLASSIFIER), 'degradations': list(KINDS)},
        'path': {'pretrain_network_classifier': files['classifier'], 'strict_load_g': True},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-2}, 'total_iter': 5, 'warmup_iter': -1,
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [5], 'restart_weights': [1]},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 5, 'use_tb_logger': False},
    }
    files['ads'] = str(root / 'ads.yml')
    with open(files['ads'], 'w') as f:
        yaml.safe_dump(ads, f, sort_keys=False)
    files.update(root=str(root), targets=targets)
    return files


def test_select_faig_finds_the_only_changed_filter(setup, capsys):
    assert ads_select.main(['-opt', setup['select']]) == 0
    folder = osp.join(setup['root'], 'select')
    data = load_masks(osp.join(folder, 'masks_faig_q10.pth'))
    assert data['degradations'] == list(KINDS) and data['q'] == 10 and data['method'] == 'faig'
    net = build_network(dict(BACKBONE))
    convs = maskable_convs(net)
    for kind in KINDS:
        scores = data['scores'][kind]
        nonzero = sorted(layer for layer, s in scores.items() if torch.count_nonzero(s))
        assert nonzero == [CHANGED_LAYER]  # theta_d - theta_um is zero everywhere else
        assert torch.nonzero(scores[CHANGED_LAYER]).flatten().tolist() == [CHANGED_FILTER]
        assert data['masks'][kind][CHANGED_LAYER].tolist() == [CHANGED_FILTER]  # 10% of 8 filters: 1
        for layer, idx in data['masks'][kind].items():  # per-layer top-q%, rounded half up
            assert idx.numel() == num_selected_filters(convs[layer].out_channels, 10)
    out = capsys.readouterr().out
    assert 'top 10% per layer' in out and 'top 50% per layer' in out and CHANGED_LAYER in out
    summary = json.load(open(osp.join(folder, 'select_faig.json')))
    assert summary['by_q']['50']['overhead'] > summary['by_q']['10']['overhead'] > 1


@pytest.mark.parametrize('method', ['weight_diff', 'random', 'encoder_only'])
def test_select_baselines(setup, method):
    assert ads_select.main(['-opt', setup['select'], '--method', method]) == 0
    data = load_masks(osp.join(setup['root'], 'select', f'masks_{method}_q50.pth'))
    masks = data['masks']['rain']
    if method == 'weight_diff':
        assert CHANGED_FILTER in masks[CHANGED_LAYER].tolist()
    if method == 'encoder_only':
        outside = [layer for layer, idx in masks.items() if idx.numel()
                   and not layer.startswith(('intro', 'encoders', 'downs'))]
        assert outside == [] and sum(idx.numel() for idx in masks.values()) > 0
    if method == 'random':  # each degradation draws its own filters
        assert any(not torch.equal(masks[k], data['masks']['blur'][k]) for k in masks)


def test_select_reports_missing_targets(setup, tmp_path, capsys):
    opt = yaml.safe_load(open(setup['select']))
    opt['path']['pretrain_network_targets'] = {'rain': setup['targets']['rain']}
    path = str(tmp_path / 'bad.yml')
    yaml.safe_dump(opt, open(path, 'w'))
    assert ads_select.main(['-opt', path]) == 2
    assert "missing or not found: ['blur', 'noise']" in capsys.readouterr().err


def test_verdict_rule():
    a, b = {'mean': 30.0, 'std': 0.1}, {'mean': 29.8, 'std': 0.05}
    assert compare_workflow.verdict(a, b) == 'holds' and compare_workflow.verdict(b, a) == 'reversed'
    assert compare_workflow.verdict({'mean': 30.0, 'std': 0.3}, b) == 'no difference'


def test_compare_writes_the_slides_table(setup, tmp_path):
    cmp = {'name': 'cmp_test', 'select_opt': setup['select'], 'ads_opt': setup['ads'],
           'compare': {'methods': ['random', 'encoder_only', 'weight_diff', 'faig'], 'q': [50], 'seeds': [0, 1],
                       'total_iter': 2, 'jobs': 1, 'oracle': True}}
    path = str(tmp_path / 'cmp.yml')
    yaml.safe_dump(cmp, open(path, 'w'))
    opt = yaml.safe_load(open(path))
    compare_workflow.check_compare_options(opt, path)
    results = compare_workflow.run_compare(opt, root=str(tmp_path), log=lambda *_: None)
    md = open(osp.join(str(tmp_path), 'results', 'cmp_test', 'table.md')).read()
    main, oracle = md.split('## With the true degradation type as c')
    rows = [line.split('|')[1].strip() for line in main.splitlines() if line.startswith('| ')]
    assert rows == ['Added task', 'Rain', 'Blur', 'Noise', 'Avg.', 'Par.']
    assert [line.split('|')[1].strip() for line in oracle.splitlines() if line.startswith('| ')][1:5] == \
        ['Rain', 'Blur', 'Noise', 'Avg.']
    assert len(results['oracle_verdicts']) == 4
    header = md.splitlines()[2]
    for col in ('Ran (50%)', 'En (50%)', 'Δθ (50%)', 'Ours (50%)', 'Base UM', 'IM (fine-tuned)'):
        assert col in header
    assert len(results['runs']) == 4 * 1 * 2
    on_disk = json.load(open(osp.join(str(tmp_path), 'results', 'cmp_test', 'table.json')))
    claims = [(v['q'], v['claim']) for v in on_disk['verdicts']]
    assert claims == [(50, 'Ours > Δθ'), (50, 'Δθ > En'), (50, 'En > Ran'), (50, 'ADS (Ours) > UM')]
    assert all(v['verdict'] in ('holds', 'reversed', 'no difference') for v in on_disk['verdicts'])
    faig = results['summary']['faig@50']
    assert faig['avg']['n'] == 2 and faig['overhead'] > 1
    assert faig['params'] == pytest.approx(results['um']['params'] * faig['overhead'])
    # the seed-independent FAIG-SD masks are identical for both seeds
    masks = [load_masks(osp.join(str(tmp_path), 'results', 'cmp_test', 'masks', f'masks_faig_seed{s}_q50.pth'))
             for s in (0, 1)]
    rain = [m['masks']['rain'] for m in masks]
    assert all(torch.equal(rain[0][k], rain[1][k]) for k in rain[0])
    # UM row: the UM's own PSNR, the same for every seed (std 0)
    assert results['um']['avg']['std'] == 0


def test_demo_smoke(tmp_path):
    from uniremoval.demo.ads import SMOKE_DATA, run_ads_demo
    out = str(tmp_path / 'demo_ads')
    results = run_ads_demo(out, seeds=(0, ), um_iters=1, ft_iters=1, cls_iters=1, ads_iters=1, faig_steps=1,
                           faig_images=1, qs=(5, ), jobs=1, batch=3, data_kwargs=SMOKE_DATA, log=lambda *_: None)
    manifest = json.load(open(osp.join(out, 'data', 'manifest.json')))
    assert manifest['kinds'] == ['rain', 'blur', 'noise']
    for name in ('report.md', 'report.html', 'report.json'):
        assert osp.isfile(osp.join(out, name))
    md = open(osp.join(out, 'report.md')).read()
    assert '| Avg. |' in md and 'Ours (5%)' in md and 'accuracy' in md
    assert set(results['classifier']['per_type']) == set(KINDS)
    assert os.path.isfile(results['checkpoints']['um'])
