"""``python -m uniremoval.evaluate``: the comparison table on tiny sets with tiny random MPRNets (CPU).

Expected values are computed here independently of the evaluation code: images read with OpenCV,
the networks called directly, BasicSR's ``calculate_psnr`` / ``calculate_ssim`` and our PIQE.
"""
import csv
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from uniremoval.commands.evaluate import evaluate_pipeline, main
from uniremoval.evaluation import parse_eval_options
from uniremoval.metrics.piqe_metric import calculate_piqe
from uniremoval.options import OptionsError, load_option_file
from uniremoval.utils.tiling import tiled_forward
from conftest import DEMO_CONFIGS, REPO, write_pairs

TINY = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2}
SIZE = 32
ROWS = ('haze', 'rain', 'real_haze')
COLUMNS = ('degraded input', 'KT student', 'DA student', 'teacher')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny convolutions on a shared 2-core machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_random_net(path, seed, key):
    torch.manual_seed(seed)
    net = build_network(dict(TINY))
    torch.save({key: net.state_dict()}, path)
    return net.eval()


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny data (two paired types, one lq-only set), three checkpoints and an option file."""
    root = tmp_path_factory.mktemp('evaluate')
    haze_gt, haze_lq = write_pairs(str(root / 'haze'), 2, seed=11, size=SIZE)
    rain_gt, rain_lq = write_pairs(str(root / 'rain'), 2, seed=12, size=SIZE)
    _, real_lq = write_pairs(str(root / 'real'), 2, seed=13, size=SIZE)  # its gt folder is not used
    nets = {'KT student': save_random_net(str(root / 'kt.pth'), 1, 'params'),
            'DA student': save_random_net(str(root / 'da.pth'), 2, 'params'),
            'teacher': save_random_net(str(root / 'teacher_haze.pth'), 3, 'state_dict')}
    disk = {'type': 'disk'}
    opt = {
        'name': 'eval_test',
        'num_gpu': 0,
        'pixel_range': [0, 1],
        'network_g': dict(TINY),
        'input_column': 'degraded input',
        'checkpoints': [
            {'name': 'KT student', 'path': str(root / 'kt.pth'), 'param_key': 'params'},
            {'name': 'DA student', 'path': str(root / 'da.pth'), 'param_key': 'params'},
            {'name': 'teacher', 'path': {'haze': str(root / 'teacher_haze.pth')}, 'param_key': 'state_dict'},
        ],
        'datasets': {
            'haze': {'name': 'tiny haze', 'type': 'PairedImageDataset', 'dataroot_gt': haze_gt,
                     'dataroot_lq': haze_lq, 'io_backend': disk},
            'rain': {'name': 'tiny rain', 'type': 'MultiDegradationDataset', 'io_backend': disk,
                     'sources': [{'name': 'rain', 'dataroot_gt': rain_gt, 'dataroot_lq': rain_lq}]},
            'real_haze': {'name': 'tiny real (no gt)', 'type': 'SingleImageDataset', 'dataroot_lq': real_lq,
                          'io_backend': disk},
        },
        'metrics': {
            'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False, 'digits': 4},
            'piqe': {'type': 'calculate_piqe'},
        },
        'save_img': True,
    }
    opt_path = str(root / 'eval_test.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    folders = {'haze': (haze_lq, haze_gt), 'rain': (rain_lq, rain_gt), 'real_haze': (real_lq, None)}
    return {'root': str(root), 'opt': opt, 'opt_path': opt_path, 'nets': nets, 'folders': folders}


def expected_table(setup, tile=None):
    """{column: {row: {metric: value or None}}} computed directly."""
    out = {}
    for column in COLUMNS:
        out[column] = {}
        for row, (lq_dir, gt_dir) in setup['folders'].items():
            if column == 'teacher' and row != 'haze':
                out[column][row] = {'psnr': None, 'ssim': None, 'piqe': None}
                continue
            scores = {'psnr': [], 'ssim': [], 'piqe': []}
            for name in sorted(os.listdir(lq_dir)):
                lq = cv2.imread(osp.join(lq_dir, name))
                if column == 'degraded input':
                    restored = lq
                else:
                    net = setup['nets'][column]
                    tensor = img2tensor(lq.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0)
                    with torch.no_grad():
                        if tile is None:
                            result = net(tensor)[0]
                        else:
                            result = tiled_forward(lambda x, net=net: net(x)[0], tensor, tile['tile'],
                                                   overlap=tile['overlap'])
                    restored = tensor2img(result)
                scores['piqe'].append(calculate_piqe(restored))
                if gt_dir is not None:
                    gt = cv2.imread(osp.join(gt_dir, name))
                    scores['psnr'].append(calculate_psnr(restored, gt, crop_border=0))
                    scores['ssim'].append(calculate_ssim(restored, gt, crop_border=0))
            out[column][row] = {m: (float(np.mean(v)) if v else None) for m, v in scores.items()}
    return out


@pytest.fixture(scope='module')
def evaluated(setup):
    table = evaluate_pipeline(['-opt', setup['opt_path']], root_path=setup['root'])
    folder = osp.join(setup['root'], 'results', 'eval_test')
    with open(osp.join(folder, 'table.md'), encoding='utf-8') as f:
        markdown = f.read()
    with open(osp.join(folder, 'table.csv'), encoding='utf-8') as f:
        csv_rows = list(csv.DictReader(f))
    with open(osp.join(folder, 'table.json'), encoding='utf-8') as f:
        js = json.load(f)
    return {'table': table, 'md': markdown, 'csv': csv_rows, 'json': js, 'folder': folder,
            'expected': expected_table(setup)}


def expected_mean(expected, column, metric):
    values = [expected[column][row][metric] for row in ROWS if expected[column][row][metric] is not None]
    return float(np.mean(values)) if values else None


def approx_or_none(value):
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-9)


def test_json_values_match_independent_computation(evaluated):
    js, expected = evaluated['json'], evaluated['expected']
    assert js['columns'] == list(COLUMNS)
    assert [r['type'] for r in js['rows']] == list(ROWS)
    assert [r['num_images'] for r in js['rows']] == [2, 2, 2]
    assert [r['num_with_gt'] for r in js['rows']] == [2, 2, 0]
    for row in js['rows']:
        for column in COLUMNS:
            for metric in ('psnr', 'ssim', 'piqe'):
                assert row['values'][column][metric] == approx_or_none(expected[column][row['type']][metric]), \
                    (column, row['type'], metric)
    for column in COLUMNS:
        for metric in ('psnr', 'ssim', 'piqe'):
            assert js['mean'][column][metric] == approx_or_none(expected_mean(expected, column, metric))
    # the two random students differ, and restoring changes the scores
    assert js['mean']['KT student']['psnr'] != pytest.approx(js['mean']['DA student']['psnr'])
    assert js['metrics']['psnr']['reference'] == 'full' and js['metrics']['piqe']['reference'] == 'none'
    assert js == json.loads(json.dumps(evaluated['table']))


def test_csv_matches(evaluated):
    rows, expected = evaluated['csv'], evaluated['expected']
    assert [r['type'] for r in rows] == list(ROWS) + ['mean']
    for line in rows:
        for column in COLUMNS:
            for metric in ('psnr', 'ssim', 'piqe'):
                want = expected_mean(expected, column, metric) if line['type'] == 'mean' \
                    else expected[column][line['type']][metric]
                got = line[f'{column} {metric}']
                if want is None:
                    assert got == ''
                else:
                    assert float(got) == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert rows[-1]['num_images'] == '6'


def markdown_cells(markdown):
    """{first cell: [cells]} of the Markdown table lines."""
    table = {}
    for line in markdown.splitlines():
        if line.startswith('| ') and not line.startswith('|---'):
            cells = [c.strip() for c in line.strip('|').split('|')]
            table[cells[0]] = cells
    return table


def test_markdown_table(evaluated):
    md, expected = evaluated['md'], evaluated['expected']
    cells = markdown_cells(md)
    assert cells['Type'] == ['Type', 'Test set', 'Images'] + list(COLUMNS)
    assert 'PSNR↑ / SSIM↑ / PIQE↓' in md

    def fmt(values):
        return ' / '.join('-' if values[m] is None else f'{values[m]:.{d}f}'
                          for m, d in (('psnr', 3), ('ssim', 4), ('piqe', 3)))

    for row, test_set in zip(ROWS, ('tiny haze', 'tiny rain', 'tiny real (no gt)')):
        assert cells[row][:3] == [row, test_set, '2']
        assert cells[row][3:] == [fmt(expected[c][row]) for c in COLUMNS]
    mean = {c: {m: expected_mean(expected, c, m) for m in ('psnr', 'ssim', 'piqe')} for c in COLUMNS}
    assert cells['**mean**'][3:] == [fmt(mean[c]) for c in COLUMNS]

    # GT-less set: '-' for PSNR and SSIM, a number for PIQE
    psnr, ssim, piqe = cells['real_haze'][COLUMNS.index('KT student') + 3].split(' / ')
    assert psnr == '-' and ssim == '-' and float(piqe) > 0
    # teacher given for haze only: every other cell of its column is '-'
    assert cells['rain'][3 + COLUMNS.index('teacher')] == '- / - / -'
    # how PSNR/SSIM are computed is stated, from the metric options
    assert 'RGB channels' in md and 'crop_border 0' in md
    assert 'no ground truth' in md and 'teacher: no checkpoint for rain' in md


def test_outputs_written_atomically_and_images_saved(evaluated, setup):
    names = sorted(os.listdir(evaluated['folder']))
    assert {'table.md', 'table.csv', 'table.json', 'visualization'} <= set(names)
    assert not [n for n in names if n.endswith('.tmp')]
    saved = sorted(os.listdir(osp.join(evaluated['folder'], 'visualization', 'KT_student', 'real_haze')))
    assert saved == sorted(os.listdir(setup['folders']['real_haze'][0]))


def test_tiled_restoration(setup, tmp_path):
    opt = load_option_file(setup['opt_path'])
    opt.update(name='eval_tiled', tile=24, tile_overlap=8, input_column=None, save_img=False,
               metrics={'psnr': opt['metrics']['psnr']}, checkpoints=opt['checkpoints'][:1])
    path = str(tmp_path / 'tiled.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    table = evaluate_pipeline(['-opt', path], root_path=str(tmp_path))
    expected = expected_table(setup, tile={'tile': 24, 'overlap': 8})['KT student']
    for row in table['rows']:
        assert row['values']['KT student']['psnr'] == approx_or_none(expected[row['type']]['psnr'])
    assert 'tiles of 24 px overlapping by 8 px' in open(tmp_path / 'results' / 'eval_tiled' / 'table.md').read()


def test_missing_checkpoint_names_the_file(setup, tmp_path, capsys):
    opt = load_option_file(setup['opt_path'])
    missing = str(tmp_path / 'no_such_dir' / 'net_g_latest.pth')
    opt['checkpoints'][1]['path'] = missing
    path = str(tmp_path / 'bad.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    with pytest.raises(OptionsError, match='no_such_dir/net_g_latest.pth') as err:
        parse_eval_options(path)
    assert "checkpoints[1] ('DA student')" in str(err.value) and path in str(err.value)
    assert main(['-opt', path]) == 2
    assert missing in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'results')


@pytest.mark.parametrize('change, message', [
    ({'metrics': {'psnr': {'type': 'calculate_nothing'}}}, "metrics:psnr: metric type 'calculate_nothing'"),
    ({'datasets': {}}, "'datasets' must be a non-empty mapping"),
    ({'tile': 16, 'tile_overlap': 16}, "'tile_overlap' (16) must be smaller than 'tile' (16)"),
])
def test_bad_options(setup, tmp_path, change, message):
    opt = load_option_file(setup['opt_path'])
    opt.update(change)
    path = str(tmp_path / 'bad.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    with pytest.raises(OptionsError) as err:
        parse_eval_options(path)
    assert message in str(err.value) and path in str(err.value)


@pytest.mark.parametrize('path', [osp.join(REPO, 'options', 'eval_paired.yml'),
                                  osp.join(REPO, 'options', 'eval_real.yml'),
                                  osp.join(DEMO_CONFIGS, 'eval_tiny.yml')], ids=osp.basename)
def test_shipped_option_files_parse_up_to_checkpoints(path):
    """The shipped files are valid; only their placeholder checkpoints may be missing."""
    opt = load_option_file(path)
    assert opt['checkpoints'] and opt['datasets'] and opt['metrics']
    try:
        parse_eval_options(path)
    except OptionsError as err:  # expected unless the checkpoints were trained / the data built here (make demo)
        assert any(m in str(err) for m in ('checkpoint file not found', 'does not exist', 'holds no images'))
