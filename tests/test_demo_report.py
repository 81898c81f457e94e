"""The demo's report writer and option builders (the training itself runs in `make demo`)."""
import pytest

from uniremoval import demo


def _scores(psnr):
    return {k: {'psnr': psnr + i, 'ssim': 0.5 + i / 10, 'piqe': 40.0 + i} for i, k in enumerate(('haze', 'rain', 'blur'))}


def test_report_tables_markdown_and_html(tmp_path):
    results = {
        'synthetic': {'input': _scores(10), 'KT student': _scores(20)},
        'real': {'input': _scores(5), 'DA student': _scores(15)},
        'kt_ablation': {'L1 to teacher only': _scores(21)},
        'curves': False,
        'minutes': {'teachers': 1.0, 'total': 2.5},
        'settings': dict(teacher_iters=1, kt_iters=2, da_iters=3, patch=32, batch=4, seed=0),
    }
    demo.write_report(results, str(tmp_path))
    md = (tmp_path / 'report.md').read_text()
    assert '| KT student | 20.00 / 0.500 | 21.00 / 0.600 | 22.00 / 0.700 | 21.00 |' in md
    assert '| DA student | 15.00 / 0.500 / 40.00 | 16.00 / 0.600 / 41.00 | 17.00 / 0.700 / 42.00 | 16.00 |' in md
    assert 'Knowledge-transfer ablation' in md and 'Domain-adaptation ablation' not in md
    assert '![haze real](grid_real_haze.png)' in md and 'curves.png' not in md
    page = (tmp_path / 'report.html').read_text()
    assert '<td>20.00 / 0.500</td>' in page and '<img src="grid_synthetic_blur.png"' in page
    assert page.count('<table>') == sum(line.startswith('|---') for line in md.splitlines()) == 4 and '<h1>uniremoval demo report</h1>' in page


def test_option_builders_point_at_the_demo_data_and_select_ablations(tmp_path):
    ckpts = {k: f'/ckpt/{k}.pth' for k in ('haze', 'rain', 'blur')}
    kt = demo.kt_options(str(tmp_path), ckpts, 7, 32, 4, temperature=1e-6, feature_cl=False, name='x')
    assert kt['name'] == 'x' and kt['train']['total_iter'] == 7 and kt['train']['scheduler']['periods'] == [7]
    assert 'feature_cl_opt' not in kt['train'] and kt['train']['image_cl_opt']['temperature'] == 1e-6
    assert [t['pretrain_path'] for t in kt['teachers']] == ['/ckpt/haze.pth', '/ckpt/rain.pth', '/ckpt/blur.pth']
    assert kt['datasets']['val']['sources'][1]['dataroot_lq'] == str(tmp_path / 'val' / 'rain' / 'lq')
    da = demo.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4)
    assert da['path']['pretrain_network_g'] == '/ckpt/kt.pth'
    assert da['datasets']['train']['dataroot_clear'] == str(tmp_path / 'real' / 'clear')
    assert all('dataroot_gt' not in s for s in da['datasets']['train']['sources'])  # gt only for scoring
    assert all('dataroot_gt' in s for s in da['datasets']['val']['sources'])
    assert demo.is_main_variant(da, 0.1, True, True) and not demo.is_main_variant(da, 1e-6, True, True)
    with pytest.raises(KeyError):
        demo.kt_options(str(tmp_path), {}, 1, 32, 4)  # a teacher checkpoint per type is required
