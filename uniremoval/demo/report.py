"""The demo's report: score tables, image grids and loss curves as ``report.md`` and ``report.html``.

:func:`write_report` turns the results dict of :func:`uniremoval.demo.pipeline.run_demo` into
Markdown tables (:func:`markdown_table`) and converts that Markdown to a standalone HTML page
(:func:`markdown_to_html`, the report's small subset only); :func:`save_grid` and
:func:`save_curves` write the PNGs the report shows.
"""
import html
from os import path as osp

import cv2
import numpy as np

from uniremoval.demo.options import NO_REFERENCE


def save_grid(outputs, kind, path, n_rows=3):
    """One PNG per type: rows of samples, columns input / each network / ground truth, labelled."""
    columns = list(outputs)
    h, w = outputs[columns[0]][kind][0].shape[:2]
    bar = np.full((18, w * len(columns), 3), 255, np.uint8)
    for i, label in enumerate(columns):
        cv2.putText(bar, label[:16], (i * w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    n_rows = min(n_rows, len(outputs[columns[0]][kind]))
    rows = [np.concatenate([outputs[c][kind][r] for c in columns], axis=1) for r in range(n_rows)]
    cv2.imwrite(path, np.concatenate([bar] + rows, axis=0))


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


def markdown_table(columns, kinds, metrics):
    """Markdown table lines: one row per column (network), one cell per type, mean PSNR last."""
    header = '| | ' + ' | '.join(kinds) + ' | mean PSNR |'
    lines = [header, '|---|' + '---|' * (len(kinds) + 1)]
    for name, by_type in columns.items():
        cells = [' / '.join(f'{by_type[k][m]:.3f}' if m == 'ssim' else f'{by_type[k][m]:.2f}' for m in metrics
                            if m in by_type[k]) for k in kinds]
        mean = np.mean([by_type[k]['psnr'] for k in kinds])
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {mean:.2f} |')
    return lines


def markdown_to_html(lines):
    """The report's small Markdown subset (headings, paragraphs, tables, images) as an HTML page."""
    out, table = [], []

    def flush_table():
        if table:
            rows = [[html.escape(c.strip()) for c in line.strip('|').split('|')] for line in table
                    if not set(line) <= set('|-')]
            out.append('<table>' + ''.join(
                '<tr>' + ''.join(f'<{"th" if i == 0 else "td"}>{c}</{"th" if i == 0 else "td"}>' for c in row) + '</tr>'
                for i, row in enumerate(rows)) + '</table>')
            table.clear()

    for line in lines:
        if line.startswith('|'):
            table.append(line)
            continue
        flush_table()
        if line.startswith('#'):
            level = len(line) - len(line.lstrip('#'))
            out.append(f'<h{level}>{html.escape(line[level:].strip())}</h{level}>')
        elif line.startswith('!['):
            src = line[line.index('(') + 1:line.rindex(')')]
            out.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.strip():
            out.append(f'<p>{html.escape(line)}</p>')
    flush_table()
    style = ('body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}'
             'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}'
             'img{image-rendering:pixelated;max-width:100%}')
    return f'<!doctype html><meta charset="utf-8"><title>uniremoval demo</title><style>{style}</style>\n' + \
        '\n'.join(out) + '\n'


def write_report(results, out_dir):
    """Write ``report.md`` and ``report.html`` (tables, image grids, loss curves) from the results dict."""
    s, minutes = results['settings'], results['minutes']
    kinds = list(next(iter(results['synthetic'].values())))
    nr = [n for n in NO_REFERENCE if n in next(iter(results['real']['input'].values()))]
    lines = [
        '# uniremoval demo report', '',
        f"Uni-Removal at toy scale on CPU in {minutes['total']:.1f} min: three tiny MPRNet teachers "
        f"({s['teacher_iters']} iterations each), knowledge transfer into one student ({s['kt_iters']} iterations) "
        f"and domain adaptation on the unpaired real split ({s['da_iters']} iterations); {s['patch']}x{s['patch']} "
        f"patches, batch {s['batch']}, seed {s['seed']}.", '',
        'PSNR (dB) / SSIM: RGB, no border crop, BasicSR `calculate_psnr` / `calculate_ssim`. "input" scores the '
        'degraded image itself. These ~100k-parameter networks trained for minutes show the pipeline working '
        "end to end; they are not the paper's numbers.", '',
        '## Synthetic validation split (PSNR / SSIM)', '',
        *markdown_table(results['synthetic'], kinds, ('psnr', 'ssim')), '',
        '## Real split: different degradation settings, ground truth kept aside for scoring', '',
        'PSNR / SSIM' + ''.join(f' / {n.upper()}' for n in nr) + (' (no-reference, lower is better)' if nr else ''),
        '', *markdown_table(results['real'], kinds, ('psnr', 'ssim', *nr)), '']
    if results.get('kt_ablation'):
        lines += ['## Knowledge-transfer ablation (synthetic val, PSNR / SSIM of the student)', '',
                  f"Equal iterations ({s['kt_iters']}), same seed and data order.", '',
                  *markdown_table(results['kt_ablation'], kinds, ('psnr', 'ssim')), '']
    if results.get('da_ablation'):
        lines += ['## Domain-adaptation ablation (real split)', '',
                  f"Equal iterations ({s['da_iters']}) from the same KT student.", '',
                  *markdown_table(results['da_ablation'], kinds, ('psnr', 'ssim', *nr)), '']
    if results.get('curves'):
        lines += ['## Loss curves', '', '![loss curves](curves.png)', '']
    lines += ['## Restored images', '']
    for kind in kinds:
        lines += [f'### {kind}: synthetic', '', f'![{kind} synthetic](grid_synthetic_{kind}.png)', '',
                  f'### {kind}: real', '', f'![{kind} real](grid_real_{kind}.png)', '']
    lines += ['## Time per stage (minutes)', '', '| stage | minutes |', '|---|---|'] + \
        [f'| {k} | {v:.1f} |' for k, v in minutes.items()] + ['']
    with open(osp.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    with open(osp.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write(markdown_to_html(lines))
