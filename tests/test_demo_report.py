"""The demo's report writer, option builders and scoring (the training itself runs in `make demo`)."""
from os import path as osp

import cv2
import numpy as np
import pytest
import torch

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.demo import evidence, options, pipeline, report, shipped
from uniremoval.options import load_option_file


def _scores(psnr):
    return {k: {'psnr': psnr + i, 'ssim': 0.5 + i / 10, 'piqe': 40.0 + i}
            for i, k in enumerate(('haze', 'rain', 'blur'))}


def _results():
    syn = {'input': _scores(10), 'teacher (own type)': _scores(14), 'KT student': _scores(13),
           'DA student': _scores(12)}
    real = {'input': _scores(5), 'KT student': _scores(15), 'DA student': _scores(15.5)}
    for column in real.values():
        for scores in column.values():
            scores.update(brisque=30.0, cast=1.0)
    for scores in real['DA student'].values():
        scores['piqe'] += 5  # DA worse than KT in PIQE
    return {'synthetic': syn, 'real': real, 'curves': False,
            'minutes': {'teachers': 1.0, 'total': 2.5, 'main pipeline': 2.0},
            'settings': dict(teacher_iters=1, kt_iters=2, da_iters=3, patch=32, batch=4, seed=0, seeds=[0, 1],
                             kt_ablation_iters=5, kt_ablation_lr=2e-3, da_ablation_iters=4, from_scratch=True)}


def test_goal_table_known_answers():
    results = _results()
    goals = {g['goal'].split(' (')[0]: g for g in evidence.demo_goals(results)}
    haze = goals['haze teacher >= input + 3 dB']
    assert haze['met'] and haze['measured'] == '+4.00 dB'
    assert goals['blur teacher >= input + 1 dB']['met']
    kt_over = goals['KT student mean >= input mean + 2 dB']
    assert kt_over['measured'] == '+3.00 dB' and kt_over['met']
    assert goals['KT student mean >= teachers mean - 1 dB']['met']  # -1.00 dB is within 1 dB
    assert goals['real split: DA mean PSNR >= KT mean']['met']
    assert goals['real split: DA mean PIQE <= KT mean']['met'] is False
    assert goals['real split: no colour cast from DA']['met']
    results['synthetic']['KT student'] = _scores(12.5)
    goals = {g['goal'].split(' (')[0]: g for g in evidence.demo_goals(results)}
    assert goals['KT student mean >= teachers mean - 1 dB']['met'] is False


def test_ladder_summary_spread_and_verdicts():
    def run(psnr):
        return {k: {'psnr': psnr, 'ssim': 0.5} for k in ('haze', 'rain')}

    ladder = {'a': [run(10), run(12)], 'b': [run(10.5), run(11.5)], 'c': [run(14), run(14.2)], 'alt': [run(1), run(1)]}
    summary = evidence.summarise_ladder(ladder, n_ladder=3)
    assert summary['a']['mean_psnr'] == {'mean': 11.0, 'std': 1.0, 'n': 2}
    assert summary['b']['vs'] == 'a' and summary['b']['verdict'] == 'no difference'  # 0.0 <= spread 1.0
    assert summary['c']['vs'] == 'b' and summary['c']['verdict'] == 'better'  # +3.1 > spread 0.5
    assert summary['alt']['vs'] == 'c' and summary['alt']['verdict'] == 'worse'  # alternatives vs the full model
    assert not evidence.ordering_holds(summary, 3)
    summary['b']['verdict'] = 'better'
    assert evidence.ordering_holds(summary, 3)


def test_color_cast_ignores_uniform_offsets_and_measures_tints():
    gt = np.full((8, 8, 3), 100, np.uint8)
    assert pipeline.color_cast([gt + 20], [gt]) == 0.0  # brighter, no cast
    tinted = gt.copy()
    tinted[..., 1] += 12  # green
    assert pipeline.color_cast([tinted, gt], [gt, gt]) == pytest.approx(6.0)


def test_seam_ratio_is_one_without_a_seam_and_measures_a_step_at_the_middle():
    ramp = np.tile(np.arange(32, dtype=np.float64)[:, None, None] * 2 + np.arange(32)[None, :, None], (1, 1, 3))
    assert pipeline.seam_ratio(ramp) == pytest.approx(1.0)  # every step equal: rows 2, columns 1
    seam = ramp.copy()
    seam[16:] += 30  # the bottom halves lifted: a step of 32 at the middle row instead of 2
    assert pipeline.seam_ratio(seam) == pytest.approx((32 / 2 + 1) / 2)
    noise = np.random.default_rng(0).uniform(0, 255, (96, 96, 3))
    assert 0.8 < pipeline.seam_ratio(noise) < 1.2
    streak = ramp.copy()
    streak[4:14, 15] += 100  # a rain streak lying on the middle column, along a third of it: no seam
    assert pipeline.seam_ratio(streak) == pytest.approx(1.0)
    split = ramp.copy()
    split[:, 16:, 1] += 9  # the right halves' green lifted along the whole border: steps (1 + 10 + 1) / 3 = 4
    assert pipeline.seam_ratio(split) == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match='at least 10 pixels'):
        pipeline.seam_ratio(np.zeros((8, 32, 3)))


def test_seam_goal_names_the_worst_network_and_the_ground_truth(tmp_path):
    results = _results()
    assert evidence.seam_goal(results)['met'] is None  # no seam ratios: judged by eye
    for split in ('synthetic', 'real'):
        for column in results[split].values():
            for scores in column.values():
                scores['seam'] = 1.05
    results['synthetic']['input']['haze']['seam'] = 3.0  # the input is not judged
    results['real']['KT student']['rain']['seam'] = 1.4
    results['seam_ground_truth'] = {'synthetic': {'rain': 1.0}, 'real': {'rain': 1.02}}
    goal = evidence.seam_goal(results)
    assert goal['met'] is False and goal['measured'] == 'worst 1.40: KT student, real rain (ground truth 1.02)'
    results['real']['KT student']['rain']['seam'] = 1.1
    assert evidence.seam_goal(results)['met'] is True
    results['goals'] = evidence.demo_goals(results)
    report.write_report(results, str(tmp_path))
    md = (tmp_path / 'report.md').read_text()
    assert 'Ground truth: synthetic rain 1.00; real rain 1.02.' in md
    # real split, per type: PSNR / SSIM / PIQE / BRISQUE / cast / seam
    row = '| KT student | 15.00 / 0.500 / 40.00 / 30.00 / 1.00 / 1.05 | 16.00 / 0.600 / 41.00 / 30.00 / 1.00 / 1.10 |'
    assert row in md


def test_identity_drift_measures_change_on_the_clear_images(tmp_path):
    clear = tmp_path / 'real' / 'clear'
    clear.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(clear / f'{i}.png'), np.full((8, 8, 3), 100 + 10 * i, np.uint8))

    def darken_green(x):  # a "network" on [0, 1] tensors: green channel of BGR 6 grey levels darker
        return x - torch.tensor([0.0, 6.0, 0.0]).view(1, 3, 1, 1) / 255

    drift = pipeline.identity_drift({'id': torch.nn.Identity(), 'tint': darken_green}, str(tmp_path))
    assert drift['id'] == {'mean_abs': 0.0, 'channel_shift': [0.0, 0.0, 0.0]}
    assert drift['tint']['mean_abs'] == pytest.approx(2.0)
    assert drift['tint']['channel_shift'] == pytest.approx([0.0, -6.0, 0.0])
    results = _results()
    results['goals'] = evidence.demo_goals(results)
    results['identity_on_clear'] = drift
    report.write_report(results, str(tmp_path))
    assert '| tint | 2.00 | +0.0 | -6.0 | +0.0 |' in (tmp_path / 'report.md').read_text()


def test_report_names_each_training_run_of_the_shipped_checkpoints(tmp_path):
    first = dict(iterations=2000, lr=0.002, minutes=40.9)
    record = dict(iterations=500, lr=0.0005, minutes=10.5, continued_from=first)
    assert shipped.training_runs(record) == [first, dict(iterations=500, lr=0.0005, minutes=10.5)]
    assert shipped.training_runs({}) == []
    results = _results()
    results['goals'] = evidence.demo_goals(results)
    results['shipped_checkpoints'] = {'kt': 'kt_student.pth'}
    results['pretraining'] = {'kt': record}
    report.write_report(results, str(tmp_path))
    assert ('(kt: 2000 iterations at lr 0.002, 40.9 min, then 500 iterations at lr 0.0005, 10.5 min) from random '
            'weights') in (tmp_path / 'report.md').read_text()


def test_stages_fine_tune_a_shipped_checkpoint_or_train_from_scratch_at_its_rate(tmp_path):
    opt = options.teacher_options('rain', str(tmp_path), 5, 32, 4)
    configured = opt['train']['optim_g']['lr']
    pipeline.start_from(opt, '/ckpt/teacher_rain.pth', 3, options.SCRATCH_LR['rain'])
    assert opt['train']['optim_g']['lr'] == pytest.approx(configured * pipeline.FINETUNE_LR_SCALE)
    assert opt['path']['pretrain_network_g'] == '/ckpt/teacher_rain.pth' and opt['manual_seed'] == 3
    opt = options.kt_options(str(tmp_path), {k: '/t.pth' for k in ('haze', 'rain', 'blur')}, 5, 32, 4)
    pipeline.start_from(opt, None, 1, options.SCRATCH_LR['kt'])
    assert opt['train']['optim_g']['lr'] == options.KT_SCRATCH_LR == 2e-3 and not opt['path']['pretrain_network_g']
    assert opt['train']['scheduler']['eta_min'] < 2e-3  # the cosine floor stays below the new rate
    results = _results()
    results['goals'] = evidence.demo_goals(results)
    results['settings']['learning_rates'] = {'haze': 2e-4, 'kt': 2e-3, 'da': 2e-5}
    report.write_report(results, str(tmp_path))
    assert ('Every stage starts from random weights (no shipped checkpoints used). Learning rates of this run: '
            'haze 0.0002, kt 0.002, da 2e-05.') in (tmp_path / 'report.md').read_text()


def test_report_goals_first_ladders_and_html(tmp_path):
    results = _results()
    results['goals'] = evidence.demo_goals(results)
    ladder = {'BKT': [_scores(10), _scores(11)], 'BKT + ICL': [_scores(12), _scores(12)]}
    results['kt_ladder_summary'] = evidence.summarise_ladder(ladder, 2)
    results['kt_ladder_ordering_holds'] = evidence.ordering_holds(results['kt_ladder_summary'], 2)
    results['settings']['network'] = {'type': 'MPRNet', 'padding_mode': 'replicate'}
    report.write_report(results, str(tmp_path))
    md = (tmp_path / 'report.md').read_text()
    assert 'The MPRNets pad their convolutions with `replicate`, not the official zeros' in md
    assert md.index('## Goals') < md.index('## Knowledge-transfer ladder') < md.index('## Restored images')
    assert '| haze teacher >= input + 3 dB (synthetic val) | +4.00 dB | met |' in md
    assert '| BKT + ICL | 12.00 ± 0.00 | 13.00 ± 0.00 | 14.00 ± 0.00 | 13.00 ± 0.00 | BKT | better |' in md
    assert 'ordering holds here' in md
    assert 'Each row trained its student from random weights for 5 iterations at lr 0.002 with seeds [0, 1]' in md
    assert '| KT student | 13.00 / 0.500 | 14.00 / 0.600 | 15.00 / 0.700 | 14.00 |' in md
    assert 'Domain-adaptation ladder' not in md and '![haze real](grid_real_haze.png)' in md
    page = (tmp_path / 'report.html').read_text()
    assert '<td>13.00 / 0.500</td>' in page and '<img alt="blur synthetic" src="grid_synthetic_blur.png">' in page
    assert page.count('<table>') == sum(line.startswith('|---') for line in md.splitlines())
    assert '<code>replicate</code>' in page and '`' not in page  # every code span rendered


def test_markdown_to_html_renders_inline_markup_in_tables_and_escapes_text():
    lines = ['# Report & <notes>', '', 'first line, x < 3 & y > 2 <b>not bold</b>', 'second line', '',
             '| | haze | mean |', '|---|---|---|', '| **mean** | `seam_ratio` | [docs](docs/findings.md) |',
             '| KT student | 13.00 / 0.500 | 14.00 |', '', '![loss curves](curves.png)', '', '* a', '* b']
    page = report.markdown_to_html(lines)
    assert page.startswith('<!doctype html><meta charset="utf-8"><title>uniremoval demo</title><style>')
    assert '<h1>Report &amp; &lt;notes&gt;</h1>' in page
    assert '<p>first line, x &lt; 3 &amp; y &gt; 2 &lt;b&gt;not bold&lt;/b&gt;<br>\nsecond line</p>' in page
    table = page[page.index('<table>'):page.index('</table>')]
    assert table.count('<tr>') == 3 and table.count('<th>') == 3 and table.count('<td>') == 6
    assert '<td><strong>mean</strong></td>' in table and '<td><code>seam_ratio</code></td>' in table
    assert '<td><a href="docs/findings.md">docs</a></td>' in table and '<td>13.00 / 0.500</td>' in table
    assert '<p><img alt="loss curves" src="curves.png"></p>' in page and '<li>b</li>' in page
    assert '**' not in page and '`' not in page and '](' not in page


def test_grid_images_are_at_least_192_pixels_and_labelled(tmp_path):
    img = np.zeros((96, 80, 3), np.uint8)
    outputs = {'input': {'haze': [img] * 4}, 'a long column label': {'haze': [img + 50] * 4},
               'ground truth': {'haze': [img + 100] * 4}}
    path = str(tmp_path / 'grid.png')
    report.save_grid(outputs, 'haze', path, n_rows=2)
    grid = cv2.imread(path)
    factor = 3  # ceil(192 / 80)
    assert grid.shape[1] == 3 * 80 * factor and grid.shape[0] - 2 * 96 * factor > 0
    bar = grid.shape[0] - 2 * 96 * factor
    assert (grid[bar:bar + 96 * factor, 80 * factor:2 * 80 * factor] == 50).all()
    assert (grid[:bar] < 128).any(axis=2).sum() > 50  # dark label text on the white bar


def test_variants_merge_delete_and_replace():
    opt = {'train': {'a': {'type': 'L', 'w': 1, 'k': 2}, 'b': 1}, 'network_d': {'type': 'U', 'skip': True}}
    options.apply_variant(opt, {'train': {'a': {'w': 5}, 'b': None, 'c': 'x'},
                                'network_d': {'type': 'P', 'num_feat': 4}})
    assert opt == {'train': {'a': {'type': 'L', 'w': 5, 'k': 2}, 'c': 'x'}, 'network_d': {'type': 'P', 'num_feat': 4}}


def test_option_builders_point_at_the_demo_data_and_select_ablations(tmp_path):
    ckpts = {k: f'/ckpt/{k}.pth' for k in ('haze', 'rain', 'blur')}
    kt = options.kt_options(str(tmp_path), ckpts, 7, 32, 4, variant=options.KT_LADDER[1][1], name='x')
    assert kt['name'] == 'x' and kt['train']['total_iter'] == 7 and kt['train']['scheduler']['periods'] == [7]
    assert 'feature_cl_opt' not in kt['train'] and 'image_cl_opt' in kt['train']
    assert [t['pretrain_path'] for t in kt['teachers']] == ['/ckpt/haze.pth', '/ckpt/rain.pth', '/ckpt/blur.pth']
    assert kt['datasets']['val']['sources'][1]['dataroot_lq'] == str(tmp_path / 'val' / 'rain' / 'lq')
    bkt = options.kt_options(str(tmp_path), ckpts, 7, 32, 4, variant=options.KT_LADDER[0][1])
    assert 'image_cl_opt' not in bkt['train'] and 'feature_cl_opt' not in bkt['train']
    da = options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4)
    assert da['path']['pretrain_network_g'] == '/ckpt/kt.pth'
    assert da['datasets']['train']['dataroot_clear'] == str(tmp_path / 'real' / 'clear')
    assert all('dataroot_gt' not in s for s in da['datasets']['train']['sources'])  # gt only for scoring
    assert all('dataroot_gt' in s for s in da['datasets']['val']['sources'])
    patch = dict(options.DA_FIDELITY)['EX-MGCL, PatchGAN 70x70 + LSGAN']
    da = options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4, variant=patch)
    assert da['network_d']['type'] == 'PatchGANDiscriminator' and 'skip_connection' not in da['network_d']
    assert da['train']['gan_opt']['gan_type'] == 'lsgan' and da['train']['gan_opt']['loss_weight'] == 0.01
    with pytest.raises(KeyError):
        options.kt_options(str(tmp_path), {}, 1, 32, 4)  # a teacher checkpoint per type is required
    # teachers, students and the evaluation table build the same network (the KT model's teachers use network_g)
    teacher = options.teacher_options('haze', str(tmp_path), 1, 32, 4)
    evaluation = load_option_file(osp.join(options.OPTIONS_DIR, 'eval_tiny.yml'))
    assert teacher['network_g'] == kt['network_g'] == da['network_g'] == evaluation['network_g']
    assert kt['network_g']['padding_mode'] == 'replicate'


def test_every_fidelity_row_changes_the_demo_config(tmp_path):
    """A fidelity row that equals the demo config (e.g. after the config adopted its setting) measures nothing."""
    ckpts = {k: f'/ckpt/{k}.pth' for k in ('haze', 'rain', 'blur')}
    kt_base = options.kt_options(str(tmp_path), ckpts, 7, 32, 4)
    for label, variant in options.KT_FIDELITY:
        assert options.kt_options(str(tmp_path), ckpts, 7, 32, 4, variant=variant) != kt_base, label
    da_base = options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4)
    for label, variant in options.DA_FIDELITY:
        assert options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4, variant=variant) != da_base, label
    plain = dict(options.KT_FIDELITY)['BKT + ICL + FCL, without the contrast augmentation (paper)']
    assert kt_base['datasets']['train']['contrast_range'] == [0.5, 1.0]
    plain_kt = options.kt_options(str(tmp_path), ckpts, 7, 32, 4, variant=plain)
    assert 'contrast_range' not in plain_kt['datasets']['train']
    paper = dict(options.DA_FIDELITY)['EX-MGCL, EICL negatives: the whole batch, own input included (paper, Eq. 11)']
    assert da_base['train']['image_cl_negatives'] == 'other_types'
    assert options.da_options(str(tmp_path), '/ckpt/kt.pth', 5, 32, 4, variant=paper)['train'][
        'image_cl_negatives'] == 'all'


def test_shipped_checkpoints_load_into_the_demo_networks(tmp_path):
    """The checkpoints in uniremoval/demo/checkpoints load strictly into the demo's tiny MPRNet, as listed in
    their manifest (and a folder without them gives none)."""
    from uniremoval.restoration import load_network
    assert shipped.shipped_checkpoints(str(tmp_path)) == {} and shipped.read_manifest(str(tmp_path)) == {}
    found = shipped.shipped_checkpoints()
    manifest = shipped.read_manifest()
    assert set(found) == set(manifest) == set(shipped.STAGES)
    network = options.teacher_options('haze', str(tmp_path), 1, 32, 4)['network_g']
    for stage, path in found.items():
        net = load_network(path, network, param_key='params')
        assert sum(p.numel() for p in net.parameters()) > 0 and manifest[stage]['iterations'] > 0
    with pytest.raises(ValueError):
        shipped.checkpoint_file('snow')


def _write_val_pairs(root, n=3):
    """A val split of ``n`` noisy 48x48 pairs per type under ``root``; returns {type: [(lq, gt)]}."""
    rng = np.random.default_rng(0)
    images = {}
    for kind in ('haze', 'rain', 'blur'):
        for sub in ('lq', 'gt'):
            (root / 'val' / kind / sub).mkdir(parents=True)
        for i in range(n):
            gt = cv2.GaussianBlur(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (5, 5), 1.0)
            lq = np.clip(gt.astype(np.int16) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / 'val' / kind / 'gt' / f'{i}.png'), gt)
            cv2.imwrite(str(root / 'val' / kind / 'lq' / f'{i}.png'), lq)
            images.setdefault(kind, []).append((lq, gt))
    return images


def test_teacher_followed_counts_the_nearest_teacher_and_the_cost(tmp_path):
    """A student identical to the rain teacher follows it on every image; it costs nothing on rain images and,
    on the others, exactly the gap between the own teacher and the identity."""
    images = _write_val_pairs(tmp_path, n=2)
    teachers = {'haze': lambda x: x * 0.5, 'rain': torch.nn.Identity(), 'blur': lambda x: x * 0.9}
    followed = pipeline.teacher_followed(teachers['rain'], teachers, str(tmp_path))
    assert {k: f['counts'] for k, f in followed.items()} == {k: {'haze': 0, 'rain': 2, 'blur': 0} for k in images}
    assert followed['rain']['below_teacher'] == {'own': 0.0, 'other': None}
    for kind, scale in (('haze', 0.5), ('blur', 0.9)):
        expected = np.mean([calculate_psnr(np.round(lq * scale), gt, crop_border=0)
                            - calculate_psnr(lq, gt, crop_border=0) for lq, gt in images[kind]])
        assert followed[kind]['below_teacher']['own'] is None
        assert followed[kind]['below_teacher']['other'] == pytest.approx(expected, abs=0.05)
    assert followed['haze']['worst'][1:] == ['rain', pytest.approx(max(
        calculate_psnr(np.round(lq * 0.5), gt, crop_border=0) - calculate_psnr(lq, gt, crop_border=0)
        for lq, gt in images['haze']), abs=0.05)]
    assert followed['rain']['worst'][1:] == ['rain', 0.0]
    lines = report.followed_table(followed)
    assert '| blur | 0 | 2 | 0 | - / ' in '\n'.join(lines) and '| rain | 0 | 2 | 0 | 0.00 / - | ' in '\n'.join(lines)


def test_scores_are_basicsr_metrics_on_uint8_bgr_images(tmp_path):
    """score_networks (via metrics.scoring.score_images) gives the means of BasicSR's functions, crop 0, RGB."""
    images = _write_val_pairs(tmp_path)
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


def test_goal_ordering_counts_only_the_papers_rows():
    """The ordering goal looks at the paper's ladder steps, not at the alternatives listed after them."""
    def run(psnr):
        return {k: {'psnr': psnr} for k in ('haze', 'rain', 'blur')}

    results = _results()
    ladder = {'BKT': [run(10), run(10)], '+ICL': [run(11), run(11)], '+FCL': [run(12), run(12)],
              'alternative': [run(1), run(1)]}
    results['kt_ladder_rows'] = 3
    results['kt_ladder_summary'] = evidence.summarise_ladder(ladder, 3)
    goal = [g for g in evidence.demo_goals(results) if g['goal'].startswith('Table IV')][0]
    assert goal['measured'] == 'better, better' and goal['met'] is True
