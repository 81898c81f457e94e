"""Shared fixtures: tiny paired datasets (folder and LMDB) and option files written into tmp dirs."""
import os
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration before any basicsr import)
from uniremoval.options import load_option_file

# The suite runs tiny tensors: one intra-op thread is as fast and does not oversubscribe a small,
# possibly shared CI machine (two spinning threads made tiny forwards up to 20x slower there).
torch.set_num_threads(1)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = osp.join(REPO, 'uniremoval', 'demo', 'configs')
TINY_TEACHER_OPT = osp.join(DEMO_CONFIGS, 'train_teacher_tiny.yml')


TINY_MPRNET = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2}


def write_tiny_model(root, network_g=TINY_MPRNET, seed=0):
    """(checkpoint with ``params_ema`` of a freshly seeded ``network_g``, option file naming it) in ``root``."""
    from basicsr.archs import build_network
    torch.manual_seed(seed)
    ckpt = osp.join(str(root), 'net_g.pth')
    torch.save({'params_ema': build_network(dict(network_g)).state_dict()}, ckpt)
    opt = osp.join(str(root), 'tiny.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'network_g': dict(network_g), 'pixel_range': [0, 1]}, f)
    return ckpt, opt


def make_pair(rng, size=40):
    """A smooth random clean image and a hazy, noisy version of it (uint8 BGR)."""
    low = rng.uniform(0, 255, size=(5, 5, 3)).astype(np.float32)
    gt = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    gt = np.clip(gt + rng.normal(0, 8, gt.shape), 0, 255)
    lq = np.clip(0.6 * gt + 0.4 * 220 + rng.normal(0, 3, gt.shape), 0, 255)
    return gt.astype(np.uint8), lq.astype(np.uint8)


def write_pairs(root, n, seed, size=40):
    rng = np.random.default_rng(seed)
    for sub in ('gt', 'lq'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for i in range(n):
        gt, lq = make_pair(rng, size)
        cv2.imwrite(osp.join(root, 'gt', f'{i:04d}.png'), gt)
        cv2.imwrite(osp.join(root, 'lq', f'{i:04d}.png'), lq)
    return osp.join(root, 'gt'), osp.join(root, 'lq')


@pytest.fixture(scope='session')
def paired_folders(tmp_path_factory):
    """{'train': (gt_dir, lq_dir), 'val': (gt_dir, lq_dir)} of PNG pairs with identical names."""
    root = tmp_path_factory.mktemp('paired')
    return {'train': write_pairs(str(root / 'train'), 6, seed=1), 'val': write_pairs(str(root / 'val'), 2, seed=2)}


@pytest.fixture(scope='session')
def paired_lmdb(paired_folders, tmp_path_factory):
    """The same pairs packed into BasicSR LMDBs (data.mdb + meta_info.txt) by BasicSR's own writer."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    root = tmp_path_factory.mktemp('lmdb')
    out = {}
    for split, dirs in paired_folders.items():
        paths = []
        for kind, folder in zip(('gt', 'lq'), dirs):
            names = sorted(os.listdir(folder))
            lmdb_path = str(root / f'{split}_{kind}.lmdb')
            make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names])
            paths.append(lmdb_path)
        out[split] = tuple(paths)
    return out


def tiny_teacher_options(tmp_path, data, name, lmdb=False, **train_overrides):
    """Write the tiny teacher config with dataset paths from ``data`` into ``tmp_path``; return its path."""
    opt = load_option_file(TINY_TEACHER_OPT)
    opt['name'] = name
    for phase in ('train', 'val'):
        opt['datasets'][phase]['dataroot_gt'], opt['datasets'][phase]['dataroot_lq'] = data[phase]
        opt['datasets'][phase]['io_backend'] = {'type': 'lmdb' if lmdb else 'disk'}
    opt['train'].update(train_overrides)
    path = osp.join(str(tmp_path), f'{name}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def run_cli(args, cwd):
    """Run the ``basicsr`` console script installed next to this interpreter (``pip install -e .``)."""
    exe = osp.join(osp.dirname(sys.executable), 'basicsr')
    assert osp.exists(exe), f'console script {exe} is not installed: run pip install -e .'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([exe] + list(args), cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
