"""Demo-scale checkpoints that ship with the package: ``python -m uniremoval.demo.pretrain``.

``make demo`` has about 15 minutes on two CPU cores, less than the tiny networks need to learn the demo's
degradations from scratch. This command trains them for longer, on the same demo data and with the same
option files (``options/demo/*.yml`` through :mod:`uniremoval.demo.options`), and writes their weights to
``uniremoval/demo/checkpoints/`` (about 0.4 MB each) with a ``manifest.json`` saying how each was made
and how long it took. ``make demo`` starts its teacher and knowledge-transfer stages from them (and says
so in its report) and still trains every stage in its own run; ``python -m uniremoval.demo --from-scratch``
ignores them.

Stages, in order: one teacher per degradation type (``haze``, ``rain``, ``blur``; MPRNet's own loss,
arXiv 2307.05075 §III-B), then ``kt``: the student distilled from the shipped teachers (Eqs. 1-6). Teachers
are independent, so two can run side by side on two cores (``--stages haze rain`` in one shell,
``--stages blur`` in another, each with ``OMP_NUM_THREADS=1``).
"""
import argparse
import json
import os
import shutil
import sys
import time
from os import path as osp

import torch

from uniremoval.demo.data import KINDS, build_demo_data
from uniremoval.demo.options import kt_options, set_learning_rate, teacher_options
from uniremoval.demo.pipeline import load_stage_network, score_networks, train_stage
from uniremoval.demo.shipped import CHECKPOINT_DIR, MANIFEST, STAGES, checkpoint_file, read_manifest
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.checkpoint import atomic_torch_save

# Settings of the shipped checkpoints (the defaults of this command).
DEFAULTS = dict(teacher_iters=1200, kt_iters=800, patch=64, batch=8, teacher_lr=2e-3, kt_lr=1e-3, seed=0)


def _publish(checkpoint, stage, folder, record):
    """Copy the ``params`` of a trained checkpoint into ``folder`` and add ``record`` to the manifest."""
    os.makedirs(folder, exist_ok=True)
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)['params']
    atomic_torch_save({'params': params}, checkpoint_file(stage, folder))
    manifest = read_manifest(folder)
    manifest[stage] = record
    with atomic_open(osp.join(folder, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2)


def pretrain(stages, data_root, work_dir, folder=CHECKPOINT_DIR, teacher_iters=DEFAULTS['teacher_iters'],
             kt_iters=DEFAULTS['kt_iters'], patch=DEFAULTS['patch'], batch=DEFAULTS['batch'],
             teacher_lr=DEFAULTS['teacher_lr'], kt_lr=DEFAULTS['kt_lr'], seed=DEFAULTS['seed']):
    """Train ``stages`` (a subset of :data:`STAGES`, run in that order) and publish their checkpoints."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f'unknown stages {unknown}; choose from {list(STAGES)}')
    data_root, work_dir = osp.abspath(data_root), osp.abspath(work_dir)
    if not osp.isfile(osp.join(data_root, 'manifest.json')):
        build_demo_data(data_root, seed=0)
    for stage in [s for s in STAGES if s in stages]:
        start = time.time()
        if stage == 'kt':
            teachers = {k: checkpoint_file(k, folder) for k in KINDS}
            missing = [p for p in teachers.values() if not osp.isfile(p)]
            if missing:
                raise FileNotFoundError(f'the kt stage distils the shipped teachers; missing: {missing}')
            opt, lr, iters = kt_options(data_root, teachers, kt_iters, patch, batch), kt_lr, kt_iters
            opt['name'] = 'pretrain_kt_student'
        else:
            opt, lr, iters = teacher_options(stage, data_root, teacher_iters, patch, batch), teacher_lr, teacher_iters
            opt['name'] = f'pretrain_teacher_{stage}'
        set_learning_rate(opt, lr)
        opt['manual_seed'] = seed
        print(f'[pretrain] {stage}: {iters} iterations, lr {lr}, patch {patch}, batch {batch}', flush=True)
        checkpoint = train_stage(opt, work_dir)
        minutes = (time.time() - start) / 60
        scores = score_networks({'net': load_stage_network(opt, checkpoint)}, data_root, 'val')[0]
        kinds = KINDS if stage == 'kt' else (stage, )
        record = dict(iterations=iters, lr=lr, patch=patch, batch=batch, seed=seed, minutes=round(minutes, 1),
                      threads=torch.get_num_threads(), option_file=opt['name'] + '.yml',
                      val_psnr={k: round(scores['net'][k]['psnr'], 2) for k in kinds},
                      input_psnr={k: round(scores['input'][k]['psnr'], 2) for k in kinds})
        _publish(checkpoint, stage, folder, record)
        shutil.copy(osp.join(work_dir, 'options', opt['name'] + '.yml'), osp.join(folder, opt['name'] + '.yml'))
        print(f'[pretrain] {stage}: {minutes:.1f} min, val PSNR {record["val_psnr"]} (input {record["input_psnr"]})',
              flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m uniremoval.demo.pretrain', description=__doc__.split('\n')[0])
    parser.add_argument('--stages', nargs='+', default=list(STAGES), choices=STAGES)
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--work', default='results/pretrain', help='experiments folder of the training runs')
    parser.add_argument('--out', default=CHECKPOINT_DIR, help='where the checkpoints and manifest.json go')
    for key, value in DEFAULTS.items():
        parser.add_argument('--' + key.replace('_', '-'), type=type(value), default=value)
    args = parser.parse_args(argv)
    pretrain(args.stages, args.data, args.work, args.out, args.teacher_iters, args.kt_iters, args.patch, args.batch,
             args.teacher_lr, args.kt_lr, args.seed)
    return 0


if __name__ == '__main__':
    sys.exit(main())
