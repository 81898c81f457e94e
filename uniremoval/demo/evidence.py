"""What the demo's numbers show: the goal table and the ablation ladders' statistics.

:func:`demo_goals` checks the demo's results against the goals the project set itself for the demo
(issue [7]): teachers clearly above their inputs, a KT student close to its teachers, domain
adaptation that does not hurt the real split. :func:`summarise_ladder` turns an ablation ladder
trained with several seeds (arXiv 2307.05075 Tables IV and V at toy scale) into means and
seed-to-seed spreads and compares each row with the one before it: a difference no larger than the
spread is "no difference".
"""
import numpy as np

# Goal 1: least gain (dB) of each teacher over its input on the synthetic val split.
TEACHER_GAIN = {'haze': 3.0, 'rain': 3.0, 'blur': 1.0}
KT_OVER_INPUT = 2.0  # goal 2: KT student's mean PSNR at least this far above the input's ...
KT_BELOW_TEACHERS = 1.0  # ... and at most this far below the teachers' mean
SEAM_TOLERANCE = 1.2  # goal 1: seam ratio (pipeline.seam_ratio) of every network's outputs; ground truth ~1.0
CAST_TOLERANCE = 1.0  # goal 3: DA may add at most this much colour cast (grey levels) to the KT student's
DEMO_MINUTES = 15.0


def mean_over_types(by_type, metric):
    """Mean of ``metric`` over the degradation types (``None`` if a type lacks it)."""
    values = [scores.get(metric) for scores in by_type.values()]
    return None if any(v is None for v in values) else float(np.mean(values))


def _goal(goal, measured, met):
    return {'goal': goal, 'measured': measured, 'met': met}


def seam_goal(results):
    """Goal 1's "no visible seams": the worst seam ratio of any network, type and split (``met`` None, to be
    judged by eye, for results without seam ratios)."""
    worst = None
    for split in ('synthetic', 'real'):
        for column, by_type in results[split].items():
            for kind, scores in by_type.items():
                if column != 'input' and 'seam' in scores and (worst is None or scores['seam'] > worst[0]):
                    worst = (scores['seam'], column, split, kind)
    goal = f'no visible seams (stage-1/2 patch borders): seam ratio <= {SEAM_TOLERANCE:g} for every network'
    if worst is None:
        return _goal(goal, 'see the image rows', None)
    reference = (results.get('seam_ground_truth') or {}).get(worst[2], {}).get(worst[3])
    measured = f'worst {worst[0]:.2f}: {worst[1]}, {worst[2]} {worst[3]}' + (
        f' (ground truth {reference:.2f})' if reference is not None else '')
    return _goal(goal, measured, worst[0] <= SEAM_TOLERANCE)


def demo_goals(results):
    """The goal table: a list of ``{'goal', 'measured', 'met'}`` (``met`` None where judged by eye)."""
    syn, real = results['synthetic'], results['real']
    goals = []
    for kind, least in TEACHER_GAIN.items():
        if kind in syn['input']:
            gain = syn['teacher (own type)'][kind]['psnr'] - syn['input'][kind]['psnr']
            goals.append(_goal(f'{kind} teacher >= input + {least:g} dB (synthetic val)', f'{gain:+.2f} dB',
                               gain >= least))
    goals.append(seam_goal(results))
    inp, teachers, kt = (mean_over_types(syn[c], 'psnr') for c in ('input', 'teacher (own type)', 'KT student'))
    goals.append(_goal(f'KT student mean >= input mean + {KT_OVER_INPUT:g} dB', f'{kt - inp:+.2f} dB',
                       kt - inp >= KT_OVER_INPUT))
    goals.append(_goal(f'KT student mean >= teachers mean - {KT_BELOW_TEACHERS:g} dB', f'{kt - teachers:+.2f} dB',
                       kt - teachers >= -KT_BELOW_TEACHERS))
    for metric, sign, name in (('psnr', 1, 'PSNR'), ('piqe', -1, 'PIQE'), ('brisque', -1, 'BRISQUE')):
        kt_v, da_v = mean_over_types(real['KT student'], metric), mean_over_types(real['DA student'], metric)
        if kt_v is None or da_v is None:
            continue
        relation = '>=' if sign > 0 else '<='
        goals.append(_goal(f'real split: DA mean {name} {relation} KT mean', f'{da_v:.2f} vs {kt_v:.2f}',
                           sign * (da_v - kt_v) >= 0))
    kt_cast, da_cast = mean_over_types(real['KT student'], 'cast'), mean_over_types(real['DA student'], 'cast')
    if kt_cast is not None and da_cast is not None:
        goals.append(_goal(f'real split: no colour cast from DA (cast <= KT + {CAST_TOLERANCE:g} grey level)',
                           f'{da_cast:.2f} vs {kt_cast:.2f}', da_cast <= kt_cast + CAST_TOLERANCE))
    for name, ladder in (('kt', 'Table IV ordering: BKT < BKT+ICL < BKT+ICL+FCL (synthetic val, mean PSNR)'),
                         ('da', 'Table V ordering: KT < +DA < +EICL < +EICL+EFCL (real split, mean PSNR)')):
        summary, n_ladder = results.get(f'{name}_ladder_summary'), results.get(f'{name}_ladder_rows')
        if summary and n_ladder:
            steps = [summary[label]['verdict'] for label in list(summary)[1:n_ladder]]
            goals.append(_goal(ladder + ', beyond the seed-to-seed spread', ', '.join(steps),
                               ordering_holds(summary, n_ladder)))
    minutes = results['minutes'].get('main pipeline')
    if minutes is not None:
        goals.append(_goal(f'demo pipeline (data, 3 teachers, KT, DA, evaluation) <= {DEMO_MINUTES:g} min',
                           f'{minutes:.1f} min', minutes <= DEMO_MINUTES))
    return goals


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def compare(reference, row, metric='mean_psnr', higher_is_better=True):
    """``'better'``, ``'worse'`` or ``'no difference'`` of ``row`` against ``reference`` (summaries).

    A difference of the means no larger than the larger seed-to-seed standard deviation of the two rows
    is "no difference".
    """
    a, b = reference[metric], row[metric]
    if a is None or b is None:
        return None
    delta = (b['mean'] - a['mean']) * (1 if higher_is_better else -1)
    if abs(delta) <= max(a['std'], b['std']):
        return 'no difference'
    return 'better' if delta > 0 else 'worse'


def summarise_ladder(ladder, n_ladder):
    """Means and spreads of a ladder ``{label: [per-seed {type: scores}]}``.

    The first ``n_ladder`` rows are the paper's ladder, each compared with the row before it; the others
    are alternatives to the full model (the last ladder row) and compared with it. Returns ``{label:
    {'per_type': {type: {metric: stats}}, 'mean_<metric>': stats, 'vs': reference label, 'verdict': ...}}``
    with stats ``{'mean', 'std', 'n'}``.
    """
    labels = list(ladder)
    summary = {}
    for i, label in enumerate(labels):
        runs = ladder[label]
        kinds = list(runs[0])
        metrics = list(runs[0][kinds[0]])
        row = {'per_type': {k: {m: _stats([r[k].get(m) for r in runs]) for m in metrics} for k in kinds}}
        for m in metrics:
            row['mean_' + m] = _stats([mean_over_types(r, m) for r in runs])
        if i > 0:
            reference = labels[i - 1] if i < n_ladder else labels[n_ladder - 1]
            row['vs'] = reference
            row['verdict'] = compare(summary[reference], row)
            for m, higher in (('piqe', False), ('brisque', False)):
                if 'mean_' + m in row:
                    row[f'verdict_{m}'] = compare(summary[reference], row, 'mean_' + m, higher)
        summary[label] = row
    return summary


def ordering_holds(summary, n_ladder):
    """Whether every step of the paper's ladder (first ``n_ladder`` rows) is 'better' in mean PSNR."""
    labels = list(summary)[1:n_ladder]
    return all(summary[label]['verdict'] == 'better' for label in labels)
