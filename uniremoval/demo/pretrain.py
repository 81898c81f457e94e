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
how the shipped ones were made, in about 13 minutes for the teachers, then ``--stages kt``, 41 minutes, then
``--stages kt --resume --iters 2000 --lr 5e-4``, 43 minutes: a second cosine cycle from the first one's weights
at a quarter of its learning rate, then ``--stages kt --resume --iters 1000 --lr 5e-4``, 22 minutes: a third,
the first with kt_tiny.yml's contrast augmentation; ``manifest.json`` keeps all three runs).
"""
import argparse
import json
import os
import sys
import time
from os import path as osp

import torch

from uniremoval.demo.data import KINDS, build_demo_data
from uniremoval.demo.options import SCRATCH_LR, kt_options, set_learning_rate, teacher_options, write_option_file
from uniremoval.demo.pipeline import load_stage_network, score_networks, train_stage
from uniremoval.demo.shipped import CHECKPOINT_DIR, MANIFEST, STAGES, checkpoint_file, read_manifest, training_runs
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.checkpoint import atomic_torch_save

# Settings of the shipped checkpoints (what this command runs unless told otherwise), per stage, as measured
# on the synthetic val split: the dehazing teacher reached +4.3 dB in 200 iterations at MPRNet's 2e-4 on
# 48x48 crops, but only +2.0 dB after 600 iterations on whole 64x64 crops and +1.7 dB at 2e-3 (it overfits
# the four training photos); deraining learns fast at 2e-3 (+6.0 dB in 600 iterations); deblurring learns
# slowest (+0.42 dB after 1200 iterations on 64x64 crops, +0.30 dB after 400 on 48x48). The KT student:
# 500 iterations at 5e-4 reached 20.57 dB mean on val, 1500 at 2e-3 on 48x48 crops 21.59 dB (23.3 min),
# 2000 at 2e-3 on whole 64x64 crops 21.90 dB (40 min on 1 thread; the shipped recipe); with seed 1 the two recipes
# reached 22.24 (48x48) and 22.41 dB (64x64), so the crop size makes less difference than the seed. A wider
# stage-1/2 U-Net (scale_unetfeats 12 instead of 4) reached 21.92 dB, no difference. What it still lacks is mostly two
# blurred val images it restores like hazy ones (the demo report's "which teacher the KT student follows").
# Those numbers were measured with MPRNet's zero padding. The shipped checkpoints were then retrained with the
# demo's replicate padding (uniremoval/demo/configs/*.yml), with the same settings: haze 17.80 dB (+4.44), rain 25.99
# (+6.20; 1200 iterations reached 27.44), blur 28.67 (+0.39; 3000 iterations reached +0.71), KT student's
# first run 21.74 dB mean (17.28 / 22.98 / 24.97; 21.90 before, within the seed spread); five of the six
# blurred cat crops then lost 3-18 dB against their input (3.26 of the 3.31 dB its blur mean lay below the
# input's). The dehazing teacher's seam ratio (then the mean step along the border, not today's median) fell
# from 2.07 to 0.96 (ground truth 1.00); the deraining teacher's rose from 1.20 to 1.33 (streaks left where they
# lie on the middle column; 1.36 after 1200 iterations, 1.34 with seed 1, 1.30 on 48x48 crops). With the median
# the shipped teachers read 0.94 (haze), 1.01 (rain) and 1.10 (blur), ground truth 0.91, and a dehazing teacher
# trained with zero padding as above 2.31.
# Longer deblurring, measured but not shipped (replicate padding, 1 thread): 3000 iterations at 2e-3 +0.71 dB,
# at 4e-3 +0.78; 4000 at 4e-3 +0.83 (42 min); 7000 at 2e-3 +0.84 (73 min). The gain levels off below 1 dB at
# this width, and the stronger deblurring starts to show the stage-1 border: (mean-based) seam ratio 1.10-1.19
# on val against 1.01 for the shipped teacher. A bigger network does not learn faster: 1200 iterations at 2e-3 on
# 64x64 crops (seed 0) gave +0.37 dB with num_cab 4 and +0.39 with 8 (a deeper stage 3), +0.36 twice as wide
# (n_feat 16, scale_unetfeats and scale_orsnetfeats 8; 2.3x the time), against the shipped +0.39. (A wider
# teacher would not fit kt_tiny.yml's feature-grained loss anyway: it compares teacher and student ORSNet
# features, which need the same width.) The shipped teacher gains as much on its own training crops (+0.40 dB,
# 25.45 dB in) as on val: it does not overfit. Most blurred val crops are cat fur, whose fine texture the blur
# has erased.
# The shipped KT student then trained on (``--resume``, seed 0, 1 thread): 2000 more iterations at 5e-4 reached
# 22.72 dB mean (16.80 / 24.60 / 26.76: haze 0.5 dB lower, rain +1.6, blur +1.8), at 2e-4 22.20 (17.11 / 23.65 /
# 25.83); the second run is the 5e-4 one. A third cycle like it (2000 more at 5e-4) gave 22.74, no difference. Of
# the five blurred cat crops it restored like hazy ones, only the palest is left: chelsea_000, 34.65 dB in and
# 15.06 out (darkened towards orange), 1.6 dB of the blur mean; the other eleven blurred val crops lie within
# -0.4 / +0.3 dB of their input. Adding scikit-image's greyscale photos (brick, grass, gravel, camera) to the
# training split did not help with that crop: 400 further iterations at 5e-4 gave 21.87 dB mean with them and
# 21.94 without, chelsea_000 16.3 and 16.4 dB.
# The shipped student's third run (``--stages kt --resume --iters 1000 --lr 5e-4``, 22 minutes) adds
# kt_tiny.yml's ``contrast_range`` augmentation, which the first two runs did not have (their option files
# show it): 23.08 dB mean (16.59 / 25.80 / 26.84); the same 1000 iterations without it reached 22.65
# (demo/configs/kt_tiny.yml has the seeds). chelsea_000 stays at 15.8 dB. A fourth cycle, 1000 more iterations at
# 2.5e-4, reached 22.93 (16.27 / 25.76 / 26.76; 21.4 min): no better, not shipped.
# What val does not show: the shipped dehazing teacher (as fine-tuned by the demo, seed 0) ruins lightly hazed
# crops. On its own 256 training crops, the 24 whose input is above 20 dB (little haze: near scene points) come
# out at 14.4 dB on average (the 9 above 25 dB: 28.9 in, 14.2 out), while the 112 below 12 dB gain 4.5 dB; the val
# split has no crop above 20 dB. 400 more iterations (at 2e-4 on 48x48 crops, or at 1e-4 on 64x64) lifted those
# crops only to 17-18 dB. The KT student, distilled from this teacher's outputs, does the same (28.9 -> 17.7 dB):
# it has learnt to process pale, nearly clean inputs strongly, which is the likeliest origin of its orange
# "dehazing" of the palest blurred cat crop (chelsea_000): the dehazing teacher itself takes that crop from
# 34.7 to 14.9 dB, and the student's output lies nearest to the dehazing teacher's (24.8 dB, against 17.0 and
# 17.7 to the other two). Adding clean pairs (every fourth training ground truth as its own input, 20% of the set;
# 200 iterations at 2e-4) kept val at +4.43 dB but did not help: light crops 15.7 dB, chelsea_000 15.6. Within
# one crop at one depth, haze is an affine contrast map towards the airlight, so a pale clean crop and a lightly
# hazed one can look alike. Not fixed.
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
