"""The demo's report: score tables, image grids and loss curves as ``report.md`` and ``report.html``.

:func:`write_report` turns the results dict of :func:`uniremoval.demo.pipeline.run_demo` into
Markdown tables (:func:`markdown_table`) and converts that Markdown to a standalone HTML page
(:func:`markdown_to_html`, Python-Markdown); :func:`save_grid` and
:func:`save_curves` write the PNGs the report shows.
"""
from os import path as osp

import cv2
import markdown
import numpy as np

from uniremoval.demo.options import NO_REFERENCE
from uniremoval.demo.shipped import training_runs
from uniremoval.utils.atomic_io import atomic_open

GRID_MIN_SIZE = 192  # each image of the grids is shown at least this large (nearest-neighbour upscaling)
STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}'
         'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}'
         'td:first-child,th:first-child{text-align:left}code{background:#f4f4f4;padding:0 2px}'
         'img{image-rendering:pixelated;max-width:100%}')


def _label_bar(labels, width, height=28):
    bar = np.full((height, width * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        scale = 0.5
        while scale > 0.3 and cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 6:
            scale -= 0.05
        cv2.putText(bar, label, (i * width + 3, height - 9), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return bar


def save_grid(outputs, kind, path, n_rows=3, min_size=GRID_MIN_SIZE):
    """One PNG per type: rows of samples, columns input / each network / ground truth, labelled.

    Images are enlarged by an integer factor (nearest neighbour) to at least ``min_size`` pixels, so that
    rain streaks, haze and seams are visible; labels are shrunk to fit their column.
    """
    columns = list(outputs)
    h, w = outputs[columns[0]][kind][0].shape[:2]
    factor = max(1, -(-min_size // min(h, w)))
    n_rows = min(n_rows, len(outputs[columns[0]][kind]))
    rows = [np.concatenate([outputs[c][kind][r] for c in columns], axis=1) for r in range(n_rows)]
    grid = np.concatenate(rows, axis=0).repeat(factor, axis=0).repeat(factor, axis=1)
    cv2.imwrite(path, np.concatenate([_label_bar(columns, w * factor), grid], axis=0))


def save_curves(curves, path):
    """Loss curves of every training run as one PNG (matplotlib, log scale); returns False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [(name, logs) for name, logs in curves.items() if logs]
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    for ax, (name, logs) in zip(axes[0], runs):
        keys = [k for k in logs[0] if k.startswith('l_') and 'total' not in k]
        iters = [log['iter'] for log in logs]
        for key in keys:
            values = [abs(log[key]) + 1e-8 for log in logs]
            ax.plot(iters, values, label=key)
        ax.set_yscale('log')
        ax.set_title(name.replace('demo_', ''), fontsize=9)
        ax.set_xlabel('iteration')
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _cell(scores, metric):
    value = scores.get(metric)
    if value is None:
        return '-'
    return f'{value:.3f}' if metric == 'ssim' else f'{value:.2f}'


def markdown_table(columns, kinds, metrics):
    """Markdown table lines: one row per column (network), one cell per type, mean PSNR last."""
    header = '| | ' + ' | '.join(kinds) + ' | mean PSNR |'
    lines = [header, '|---|' + '---|' * (len(kinds) + 1)]
    for name, by_type in columns.items():
        cells = [' / '.join(_cell(by_type[k], m) for m in metrics if m in by_type[k]) for k in kinds]
        mean = np.mean([by_type[k]['psnr'] for k in kinds])
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {mean:.2f} |')
    return lines


def _spread(stats, digits=2):
    if stats is None:
        return '-'
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def ladder_table(summary, kinds, metrics):
    """Markdown lines of a ladder summary: mean ± seed-to-seed std per type, mean PSNR, verdict."""
    extra = [m for m in ('piqe', 'brisque') if m in metrics]
    header = '| | ' + ' | '.join(f'{k} PSNR' for k in kinds) + ' | mean PSNR | ' + \
        ''.join(f'mean {m.upper()} | ' for m in extra) + 'vs | verdict (PSNR) |'
    lines = [header, '|---|' + '---|' * (len(kinds) + 3 + len(extra))]
    for label, row in summary.items():
        cells = [_spread(row['per_type'][k]['psnr']) for k in kinds] + [_spread(row['mean_psnr'])]
        cells += [_spread(row.get('mean_' + m)) for m in extra]
        cells += [row.get('vs', '') or '', row.get('verdict', '') or '']
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return lines


def markdown_to_html(lines):
    """Markdown lines as a standalone HTML page (Python-Markdown: tables; a line break stays a line break).

    Raw HTML is not passed through: the report's text (option names, file names, captions) is escaped.
    Images stay relative links, so the page shows the PNGs written beside it.
    """
    md = markdown.Markdown(extensions=['tables', 'nl2br'], output_format='html')
    md.preprocessors.deregister('html_block')
    md.inlinePatterns.deregister('html')
    return f'<!doctype html><meta charset="utf-8"><title>uniremoval demo</title><style>{STYLE}</style>\n' + \
        md.convert('\n'.join(lines)) + '\n'


SEAM_CAPTION = ('Seam ratio: the median step across the middle row and column of an image, where MPRNet\'s '
                'stage-1 quarters and stage-2 halves meet, over the median steps a few pixels away (1.00: no '
                'seam; a seam runs the whole border, a streak lying on it does not count; '
                '`uniremoval.demo.pipeline.seam_ratio`).')


def real_caption(no_reference, cast, seam=()):
    """The caption of the real-split table: which scores each cell holds."""
    caption = 'PSNR / SSIM' + ''.join(f' / {n.upper()}' for n in no_reference)
    if no_reference:
        caption += ' (no-reference, lower is better)'
    if cast:
        caption += ' / colour cast (spread of the per-channel mean offsets to the ground truth, grey levels)'
    if seam:
        caption += ' / seam ratio'
    return caption


def followed_table(followed):
    """The report's section on which teacher the KT student imitates (``pipeline.teacher_followed``)."""
    if not followed:
        return []
    teachers = list(next(iter(followed.values()))['counts'])
    lines = ['## Which teacher the KT student follows (synthetic val)', '',
             "Per image, the teacher whose output is closest to the KT student's (PSNR between the two outputs; "
             'no ground truth): the student is blind and must recognise the degradation from the image (Eq. 1). '
             'Then how far (dB, against the ground truth) the student falls below the image\'s own-type teacher, '
             'on average where it follows that teacher / another one, and on its worst image. The deraining and '
             'deblurring teachers barely change a blurred image, so following either there costs little; the '
             'gap says what a wrong choice costs.', '',
             '| images | ' + ' | '.join(f'{t} teacher' for t in teachers)
             + ' | below own teacher: own / other | worst image: dB below (teacher followed) |',
             '|---' * (len(teachers) + 3) + '|']
    for kind, f in followed.items():
        b, (name, nearest, worst) = f['below_teacher'], f['worst']
        lines.append(f'| {kind} | ' + ' | '.join(str(f['counts'][t]) for t in teachers)
                     + f" | {_cell(b, 'own')} / {_cell(b, 'other')} | {name}: {worst:.2f} ({nearest}) |")
    return lines + ['']


def goal_table(goals):
    """Markdown lines of the goal table (goal, measured, met)."""
    marks = {True: 'met', False: 'NOT met', None: 'by eye'}
    return ['| goal | measured | met |', '|---|---|---|'] + \
        [f"| {g['goal']} | {g['measured']} | {marks[g['met']]} |" for g in goals]


def write_report(results, out_dir):
    """Write ``report.md`` and ``report.html`` from the results dict of ``run_demo``.

    Order: the goal table, the ablation ladders with their seed-to-seed spreads, per-type image rows, the
    score tables, loss curves and the time per stage.
    """
    s, minutes = results['settings'], results['minutes']
    kinds = list(next(iter(results['synthetic'].values())))
    nr = [n for n in NO_REFERENCE if n in next(iter(results['real']['input'].values()))]
    shipped = results.get('shipped_checkpoints') or {}
    if shipped:
        pre = results.get('pretraining') or {}
        made = '; '.join(f"{k}: " + ', then '.join(f"{r.get('iterations')} iterations at lr {r.get('lr')}, "
                                                   f"{r.get('minutes')} min" for r in training_runs(v))
                         for k, v in pre.items())
        start = (f"The teachers and the KT student start from the demo-scale checkpoints shipped in "
                 f"`uniremoval/demo/checkpoints/` ({', '.join(sorted(shipped.values()))}), made by "
                 f"`python -m uniremoval.demo.pretrain` ({made}) from random weights, and fine-tune here at a tenth of "
                 f"their learning rate; the domain-adaptation student starts from this run's KT student. The "
                 f"knowledge-transfer ladder trains its students from random weights. `--from-scratch` trains "
                 f"every stage from random weights.")
    else:
        start = 'Every stage starts from random weights (no shipped checkpoints used).'
    rates = s.get('learning_rates')
    if rates:
        start += ' Learning rates of this run: ' + ', '.join(f'{k} {v:g}' for k, v in rates.items()) + '.'
    padding = (s.get('network') or {}).get('padding_mode', 'zeros')
    if padding != 'zeros':
        start += (f" The MPRNets pad their convolutions with `{padding}`, not the official zeros, which left a seam "
                  f"along the middle row and column where the stage-1/2 patches meet (docs/demo.md).")
    lines = [
        '# uniremoval demo report', '',
        f"Uni-Removal at toy scale on CPU: three tiny MPRNet teachers ({s['teacher_iters']} iterations each), "
        f"knowledge transfer into one student ({s['kt_iters']} iterations) and domain adaptation on the unpaired "
        f"real split ({s['da_iters']} iterations); {s['patch']}x{s['patch']} patches, batch {s['batch']}, seed "
        f"{s['seed']}; {minutes['main pipeline']:.1f} min for the pipeline, {minutes['total']:.1f} min in all. "
        + start, '',
        'PSNR (dB) / SSIM: RGB, no border crop, BasicSR `calculate_psnr` / `calculate_ssim`. "input" scores the '
        'degraded image itself. These ~100k-parameter networks show the method working end to end at toy '
        "scale; they are not the paper's numbers.", '',
        '## Goals', '', *goal_table(results['goals']), '']
    for name, title, split_metrics, training in (
            ('kt_ladder', 'Knowledge-transfer ladder (Table IV at toy scale; synthetic val)', ('psnr', ),
             f"Each row trained its student from random weights for {s.get('kt_ablation_iters')} iterations at "
             f"lr {s.get('kt_ablation_lr')}"),
            ('da_ladder', 'Domain-adaptation ladder (Table V at toy scale; real split)', ('psnr', *nr),
             f"Each row fine-tuned this run's KT student for {s.get('da_ablation_iters')} iterations")):
        summary = results.get(name + '_summary')
        if summary:
            holds = results.get(name + '_ordering_holds')
            lines += [f'## {title}', '',
                      f"{training} with seeds {s['seeds']}: mean ± standard "
                      f"deviation over the seeds. A row is compared with the row before it (alternatives below the "
                      f"paper's ladder with its full model); a difference no larger than the larger of the two "
                      f"spreads is \"no difference\". The paper's ordering "
                      f"{'holds' if holds else 'does not hold'} here.", '',
                      *ladder_table(summary, kinds, split_metrics), '']
    lines += ['## Restored images', '',
              'Columns: input, each network, ground truth (the real split\'s ground truth is used for scoring '
              'only). Images enlarged (nearest neighbour) to show streaks, haze and seams.', '']
    for kind in kinds:
        lines += [f'### {kind}: synthetic', '', f'![{kind} synthetic](grid_synthetic_{kind}.png)', '',
                  f'### {kind}: real', '', f'![{kind} real](grid_real_{kind}.png)', '']
    cast = ['cast'] if 'cast' in next(iter(results['real']['input'].values())) else []
    seam = ['seam'] if 'seam' in next(iter(results['synthetic']['input'].values())) else []
    seam_note = []
    if seam:
        reference = results.get('seam_ground_truth') or {}
        seam_note = [SEAM_CAPTION + ' Ground truth: ' + '; '.join(
            f"{split} " + ', '.join(f'{k} {v:.2f}' for k, v in by_type.items())
            for split, by_type in reference.items()) + '.', '']
    lines += ['## Synthetic validation split (PSNR / SSIM' + ' / seam ratio' * bool(seam) + ')', '',
              *markdown_table(results['synthetic'], kinds, ('psnr', 'ssim', *seam)), '', *seam_note,
              *followed_table(results.get('kt_teacher_followed')),
              '## Real split: different degradation settings, ground truth kept aside for scoring', '',
              real_caption(nr, cast, seam), '',
              *markdown_table(results['real'], kinds, ('psnr', 'ssim', *nr, *cast, *seam)), '']
    if results.get('identity_on_clear'):
        lines += ['## Real clear images through each network (identity, Eq. 8)', '',
                  'The unpaired clear images domain adaptation trains on, restored: mean absolute change and the '
                  'change of each channel mean (grey levels; negative = darker). No ground truth involved.', '',
                  '| network | mean abs change | B | G | R |', '|---|---|---|---|---|']
        lines += [f"| {name} | {d['mean_abs']:.2f} | " + ' | '.join(f'{v:+.1f}' for v in d['channel_shift']) + ' |'
                  for name, d in results['identity_on_clear'].items()] + ['']
    if results.get('curves'):
        lines += ['## Loss curves', '', '![loss curves](curves.png)', '']
    lines += ['## Time per stage (minutes)', '', '| stage | minutes |', '|---|---|'] + \
        [f'| {k} | {v:.1f} |' for k, v in minutes.items()] + ['']
    with atomic_open(osp.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    with atomic_open(osp.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write(markdown_to_html(lines))
