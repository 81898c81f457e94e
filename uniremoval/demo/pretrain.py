"""Demo-scale checkpoints that ship with the package: ``python -m uniremoval.demo.pretrain``.

``make demo`` has about 15 minutes on two CPU cores, less than the tiny networks need to learn the demo's
degradations from scratch. This command trains them for longer, on the same demo data and with the same
option files (``uniremoval/demo/configs/*.yml`` through :mod:`uniremoval.demo.options`), and writes their weights to
``uniremoval/demo/checkpoints/`` (about 0.4 MB each) with a ``manifest.json`` saying how each was made and
how long it took, and the option file each stage ran with (``pretrain_teacher_<type>.yml``,
``pretrain_kt_student.yml``; paths relative to the repository root). ``make demo`` starts its teacher and
knowledge-transfer stages from them (and says so in its report) and still trains every stage in its own run;
``python -m uniremoval.demo --from-scratch`` ignores them.

Stages, in order: one teacher per degradation type (``haze``, ``rain``, ``blur``; MPRNet's own loss,
arXiv 2307.05075 §III-B), then ``kt``: the student distilled from the shipped teachers (Eqs. 1-6), with the
settings of :data:`STAGE_SETTINGS`. Teachers are independent, so two can run side by side on two cores
(``--stages haze rain`` in one shell, ``--stages blur`` in another, each with ``OMP_NUM_THREADS=1``; that is
how the shipped ones were made, then ``--stages kt``, then ``--stages kt --resume --iters 2000 --lr 5e-4``: a
second cosine cycle from the first one's weights at a quarter of its learning rate, then
``--stages kt --resume --iters 1000 --lr 5e-4``: a third, the first with kt_tiny.yml's contrast augmentation;
``manifest.json`` keeps all three runs and their times).
"""
import argparse
import json
import os
import sys
import time
from os import path as osp

import torch

from uniremoval.commands.common import add_version_argument
from uniremoval.demo.data import KINDS, build_demo_data
from uniremoval.demo.options import SCRATCH_LR, kt_options, set_learning_rate, teacher_options, write_option_file
from uniremoval.demo.pipeline import load_stage_network, score_networks, train_stage
from uniremoval.demo.shipped import CHECKPOINT_DIR, MANIFEST, STAGES, checkpoint_file, read_manifest, training_runs
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.checkpoint import atomic_torch_save

# Settings of the shipped checkpoints (what this command runs unless told otherwise), per stage: iterations,
# learning rate (SCRATCH_LR, the from-scratch rates), crop size and batch. The dehazing teacher trains on
# 48x48 crops at MPRNet's 2e-4: it overfits the four training photos on larger crops or at 2e-3.
# chosen by measurement: docs/findings.md, "Demo teachers and KT student"
STAGE_SETTINGS = {
    'haze': dict(iters=200, lr=SCRATCH_LR['haze'], patch=48, batch=8),
    'rain': dict(iters=600, lr=SCRATCH_LR['rain'], patch=64, batch=8),
    'blur': dict(iters=1200, lr=SCRATCH_LR['blur'], patch=64, batch=8),
    'kt': dict(iters=2000, lr=SCRATCH_LR['kt'], patch=64, batch=8),
}
SEED = 0


def _publish(checkpoint, stage, folder, record):
    """Copy the ``params`` of a trained checkpoint into ``folder`` and add ``record`` to the manifest."""
    os.makedirs(folder, exist_ok=True)
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)['params']
    atomic_torch_save({'params': params}, checkpoint_file(stage, folder))
    manifest = read_manifest(folder)
    manifest[stage] = record
    with atomic_open(osp.join(folder, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2)


def _relative_paths(value, root):
    """``value`` (an option tree) with every absolute path under ``root`` made relative to it."""
    if isinstance(value, dict):
        return {k: _relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative_paths(v, root) for v in value]
    if isinstance(value, str) and osp.isabs(value) and osp.commonpath([value, root]) == root:
        return osp.relpath(value, root)
    return value


def pretrain(stages, data_root, work_dir, folder=CHECKPOINT_DIR, overrides=None, seed=SEED, resume=False):
    """Train ``stages`` (a subset of :data:`STAGES`, run in that order) and publish their checkpoints.

    Each stage uses :data:`STAGE_SETTINGS` updated with ``overrides`` (e.g. ``{'iters': 10}``). With ``resume``
    each stage starts from its checkpoint in ``folder`` instead of random weights (a new schedule, e.g. a second
    cosine cycle at a lower learning rate); its manifest record then keeps the record of that checkpoint under
    ``continued_from``, and its option file is ``<name>_run<n>.yml`` beside those of the earlier runs.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f'unknown stages {unknown}; choose from {list(STAGES)}')
    data_root, work_dir = osp.abspath(data_root), osp.abspath(work_dir)
    if not osp.isfile(osp.join(data_root, 'manifest.json')):
        build_demo_data(data_root, seed=0)
    for stage in [s for s in STAGES if s in stages]:
        start = time.time()
        settings = {**STAGE_SETTINGS[stage], **(overrides or {})}
        iters, lr, patch, batch = (settings[k] for k in ('iters', 'lr', 'patch', 'batch'))
        if stage == 'kt':
            teachers = {k: checkpoint_file(k, folder) for k in KINDS}
            missing = [p for p in teachers.values() if not osp.isfile(p)]
            if missing:
                raise FileNotFoundError(f'the kt stage distils the shipped teachers; missing: {missing}')
            opt = kt_options(data_root, teachers, iters, patch, batch)
            opt['name'] = 'pretrain_kt_student'
        else:
            opt = teacher_options(stage, data_root, iters, patch, batch)
            opt['name'] = f'pretrain_teacher_{stage}'
        set_learning_rate(opt, lr)
        opt['manual_seed'] = seed
        previous = None
        if resume:
            start_from = checkpoint_file(stage, folder)
            if not osp.isfile(start_from):
                raise FileNotFoundError(f'resume: no {stage} checkpoint to continue from: {start_from}')
            opt['path']['pretrain_network_g'] = start_from
            previous = read_manifest(folder).get(stage, {})
            opt['name'] += f'_run{max(len(training_runs(previous)), 1) + 1}'
        print(f'[pretrain] {stage}: {iters} iterations, lr {lr}, patch {patch}, batch {batch}', flush=True)
        checkpoint = train_stage(opt, work_dir)
        minutes = (time.time() - start) / 60
        scores = score_networks({'net': load_stage_network(opt, checkpoint)}, data_root, 'val')[0]
        kinds = KINDS if stage == 'kt' else (stage, )
        record = dict(iterations=iters, lr=lr, patch=patch, batch=batch, seed=seed, minutes=round(minutes, 1),
                      threads=torch.get_num_threads(), option_file=opt['name'] + '.yml',
                      val_psnr={k: round(scores['net'][k]['psnr'], 2) for k in kinds},
                      input_psnr={k: round(scores['input'][k]['psnr'], 2) for k in kinds})
        if previous is not None:
            record['continued_from'] = previous
        _publish(checkpoint, stage, folder, record)
        # the option file the stage ran with, its paths relative to the directory the command runs in (the
        # repository root, where ``basicsr train -opt`` would rerun it), so it names no one's home folder
        write_option_file(_relative_paths(opt, osp.abspath(os.getcwd())), folder)
        print(f'[pretrain] {stage}: {minutes:.1f} min, val PSNR {record["val_psnr"]} (input {record["input_psnr"]})',
              flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m uniremoval.demo.pretrain', description=__doc__.split('\n')[0])
    add_version_argument(parser)
    parser.add_argument('--stages', nargs='+', default=list(STAGES), choices=STAGES)
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--work', default='results/pretrain', help='experiments folder of the training runs')
    parser.add_argument('--out', default=CHECKPOINT_DIR, help='where the checkpoints and manifest.json go')
    parser.add_argument('--seed', type=int, default=SEED)
    parser.add_argument('--resume', action='store_true',
                        help='start each stage from its checkpoint in --out instead of random weights')
    for key, kind in (('iters', int), ('lr', float), ('patch', int), ('batch', int)):
        parser.add_argument('--' + key, type=kind, help=f'override every stage\'s {key} (default: STAGE_SETTINGS)')
    args = parser.parse_args(argv)
    overrides = {k: getattr(args, k) for k in ('iters', 'lr', 'patch', 'batch') if getattr(args, k) is not None}
    pretrain(args.stages, args.data, args.work, args.out, overrides, args.seed, args.resume)
    return 0


if __name__ == '__main__':
    sys.exit(main())
