"""Where the demo-scale checkpoints shipped with the package live (:mod:`uniremoval.demo.pretrain` writes them).

``uniremoval/demo/checkpoints/``: ``teacher_<kind>.pth`` (one per degradation type), ``kt_student.pth``, the
option files they were trained with and ``manifest.json`` (iterations, learning rate, minutes, validation
PSNR of each; a checkpoint trained further from an earlier one keeps that one's record under
``continued_from``, :func:`training_runs`).
"""
import json
from os import path as osp

from uniremoval.demo.data import KINDS

CHECKPOINT_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'checkpoints')
MANIFEST = 'manifest.json'
STAGES = KINDS + ('kt', )


def checkpoint_file(stage, folder=CHECKPOINT_DIR):
    """Path of a shipped checkpoint: ``teacher_<kind>.pth`` or ``kt_student.pth`` (stage ``kt``)."""
    if stage not in STAGES:
        raise ValueError(f'unknown stage {stage!r}; choose from {list(STAGES)}')
    return osp.join(folder, 'kt_student.pth' if stage == 'kt' else f'teacher_{stage}.pth')


def shipped_checkpoints(folder=CHECKPOINT_DIR):
    """``{stage: path}`` of the shipped checkpoints that exist (empty if none do)."""
    return {s: checkpoint_file(s, folder) for s in STAGES if osp.isfile(checkpoint_file(s, folder))}


def read_manifest(folder=CHECKPOINT_DIR):
    """The manifest of the shipped checkpoints (``{}`` if there is none)."""
    path = osp.join(folder, MANIFEST)
    if not osp.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def training_runs(record):
    """The training runs behind one manifest record, first to last (a resumed run keeps the record of the
    checkpoint it started from under ``continued_from``); ``[]`` for an empty record."""
    runs = []
    while record:
        runs.insert(0, {k: v for k, v in record.items() if k != 'continued_from'})
        record = record.get('continued_from')
    return runs
