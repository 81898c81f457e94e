"""The demo's report writer, option builders and scoring (the training itself runs in `make demo`)."""
import cv2
import numpy as np
import pytest

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.demo import options, pipeline, report


def _scores(psnr):
    return {k: {'psnr': psnr + i, 'ssim': 0.5 + i / 10, 'piqe': 40.0 + i}
            for i, k in enumerate(('haze', 'rain', 'blur'))}


def test_report_tables_markdown_and_html(tmp_path):
    results = {
        'synthetic': {'input': _scores(10), 'KT student': _scores(20)},
        'real': {'input': _scores(5), 'DA student': _scores(15)},
        'kt_ablation': {'L1 to teacher only': _scores(21)},
        'curves': False,
        'minutes': {'teachers': 1.0, 'total': 2.5},
        'settings': dict(teacher_iters=1, kt_iters=2, da_iters=3, patch=32, batch=4, seed=0),
    }
    report.write_report(results, str(tmp_path))
    md = (tmp_path / 'report.md').read_text()
    assert '| KT student | 20.00 / 0.500 | 21.00 / 0.600 | 22.00 / 0.700 | 21.00 |' in md
    assert '| DA student | 15.00 / 0.500 / 40.00 | 16.00 / 0.600 / 41.00 | 17.00 / 0.700 / 42.00 | 16.00 |' in md
    assert 'Knowledge-transfer ablation' in md and 'Domain-adaptation ablation' not in md
    assert '![haze real](grid_real_haze.png)' in md and 'curves.png' not in md
    page = (tmp_path / 'report.html').read_text()
    assert '<td>20.00 / 0.500</td>' in page and '<img src="grid_synthetic_blur.png"' in page
    assert page.count('<table>') == sum(line.startswith('|---') for line in md.splitlines()) == 4
    assert '<h1>uniremoval demo report</h1>' in page


def test_option_builders_point_at_the_demo_data_and_select_ablations(tmp_path):
    ckpts = {k: f'/ckpt/{k}.pth' for k in ('haze', 'rain', 'blur')}
    kt = options.kt_options(str(tmp_path), ckpts, 7, 32, 4, temperature=1e-6, feature_cl=False, name='x')
    assert kt['name'] == 'x' and kt['train']['total_iter'] == 7 and kt['train']['scheduler']['periods'] == [7]
    assert 'feature_cl_opt' not in kt['train'] and kt['train']['image_cl_opt']['temperature'] == 1e-6
    assert [t['pretrain_path'] for t in kt['teachers']] == ['/ckpt/haze.pth', '/ckpt/rain.pth', '/ckpt/blur.pth']
    assert kt['datasets']['val']['sources'][1]['dataroot_lq'] == str(tmp_path / 'val' / 'rain' / 'lq')
    da = options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4)
    assert da['path']['pretrain_network_g'] == '/ckpt/kt.pth'
    assert da['datasets']['train']['dataroot_clear'] == str(tmp_path / 'real' / 'clear')
    assert all('dataroot_gt' not in s for s in da['datasets']['train']['sources'])  # gt only for scoring
    assert all('dataroot_gt' in s for s in da['datasets']['val']['sources'])
    assert options.is_main_variant(da, 0.1, True, True) and not options.is_main_variant(da, 1e-6, True, True)
    with pytest.raises(KeyError):
        options.kt_options(str(tmp_path), {}, 1, 32, 4)  # a teacher checkpoint per type is required


def test_scores_are_basicsr_metrics_on_uint8_bgr_images(tmp_path):
    """score_networks (via uniremoval.evaluate.score_images) gives the means of BasicSR's functions, crop 0, RGB."""
    rng = np.random.default_rng(0)
    images = {}
    for kind in ('haze', 'rain', 'blur'):
        for sub in ('lq', 'gt'):
            (tmp_path / 'val' / kind / sub).mkdir(parents=True)
        for i in range(3):
            gt = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (5, 5), 1.0)
            lq = np.clip(gt.astype(np.int16) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / 'val' / kind / 'gt' / f'{i}.png'), gt)
            cv2.imwrite(str(tmp_path / 'val' / kind / 'lq' / f'{i}.png'), lq)
            images.setdefault(kind, []).append((lq, gt))
    scores, outputs = pipeline.score_networks({'half': lambda x: x * 0.5}, str(tmp_path), 'val', no_reference=True)
    assert list(scores) == list(outputs)[:2] == ['input', 'half'] and list(outputs)[2] == 'ground truth'
    for kind, pairs in images.items():
        gts = [gt for _, gt in pairs]
        for column, outs in (('input', [lq for lq, _ in pairs]), ('half', outputs['half'][kind])):
            expected = {
                'psnr': float(np.mean([calculate_psnr(o, g, crop_border=0) for o, g in zip(outs, gts)])),
                'ssim': float(np.mean([calculate_ssim(o, g, crop_border=0) for o, g in zip(outs, gts)]))}
            for name, opt in options.NO_REFERENCE.items():
                if opt['type'] in METRIC_REGISTRY:
                    expected[name] = float(np.mean([METRIC_REGISTRY.get(opt['type'])(o, crop_border=0) for o in outs]))
            assert scores[column][kind] == expected
    assert list(pipeline.score_networks({}, str(tmp_path), 'val')[0]['input']['haze']) == ['psnr', 'ssim']
