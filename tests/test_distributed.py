"""Distributed training (issue [9], items 1-2): 2 CPU processes (Gloo, ``--launcher pytorch``) with half the
batch each reach the parameters of 1 process with the whole batch, for the teacher, KT and DA models.

The 2-process runs go through the real engine (``uniremoval.train.train_pipeline`` with ``--launcher pytorch``,
torchrun's environment variables, DDP, BasicSR's EnlargedSampler, rank-0 checkpoints and validation) in
forked processes. The data are deterministic (no random crop: ``gt_size`` = image size; no flip or
rotation; DA draws its clear image from a set of one), so both runs see the same samples: the sampler
shards each global batch of 2B by position, rank r taking the samples ``r::2`` of the 1-process batch.

What is compared, and the tolerance:

* Teacher (``MPRNetModel``): Charbonnier + edge losses are per-sample means and MPRNet has no batch
  statistics, so the mean of the two half-batch gradients (what DDP all-reduces) is the full-batch
  gradient. 2 processes x B == 1 process x 2B, up to float summation order.
* KT and DA: the contrastive terms (InfoNCE over the batch's negatives) are not per-sample means, so
  1 x 2B differs from 2 x B by construction (each rank sees only its half as negatives). The invariant
  tested is the one DDP defines: 2 processes x B == 1 process that, per iteration, computes the losses on
  each half ``batch[r::2]`` (r = 0, 1) with the same weights, averages the two gradients and steps (for DA:
  both the generator and the discriminator; ``PatchGANDiscriminator`` with instance norm: no power
  iteration or running statistics, which would advance twice per step in that reference). KT runs across
  an epoch boundary, so the decayed feature weight (the value that BasicSR's ``reduce_loss_dict`` stacks
  with the losses, the multi-GPU defect of issue [9]) is logged and reduced at two values.

Also: only rank 0 writes logs, checkpoints and states (which hold both ranks' generators); a 2-rank run
with random crops stopped mid-epoch and resumed with ``--auto_resume`` equals the uninterrupted 2-rank run;
the launchers pick Gloo without CUDA and translate SLURM's variables.

Tolerance, max |difference| over every parameter after 4 Adam steps: teacher 1e-5 (float32 summation order
inside the loss means; measured 3.3e-7), KT and DA 1e-6 against the half-batch reference (measured 0:
bit-identical, Gloo sums the two gradients and DDP divides by 2 as the reference does).
"""
import glob
import logging
import multiprocessing
import os
import socket
from os import path as osp

import pytest
import torch
import yaml

from basicsr.archs import build_network
from uniremoval.models.uniremoval_model import UniRemovalDAModel, UniRemovalKTModel
from uniremoval.options import load_option_file
from conftest import DEMO_CONFIGS, TINY_TEACHER_OPT, write_pairs

KT_TINY = osp.join(DEMO_CONFIGS, 'kt_tiny.yml')
DA_TINY = osp.join(DEMO_CONFIGS, 'da_tiny.yml')
TYPES = ('haze', 'rain', 'blur')
SIZE = 32  # images are exactly the patch size: no random crop
ITERS = 4
TOL = 1e-5  # teacher: float summation order (measured 3.3e-7)
TOL_HALVES = 1e-6  # KT, DA against the half-batch reference (measured 0: bit-identical)
SCHEDULER = {'type': 'CosineAnnealingRestartLR', 'periods': [ITERS], 'restart_weights': [1], 'eta_min': 1.0e-6}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _write(opt, root, name):
    path = osp.join(root, f'{name}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _common(opt, name, batch):
    opt['name'] = name
    opt['train']['total_iter'] = ITERS
    opt['train']['scheduler'] = dict(SCHEDULER)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt['val']['val_freq'] = 2  # validation on rank 0 while the other rank waits
    opt['val']['metrics'] = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
    opt['datasets']['train'].update(gt_size=SIZE, use_hflip=False, use_rot=False, num_worker_per_gpu=0,
                                    batch_size_per_gpu=batch)
    opt['datasets']['train'].pop('contrast_range', None)  # random per sample: the ranks would see other pixels
    return opt


def teacher_options(root, data, name, batch, crops=False):
    opt = _common(load_option_file(TINY_TEACHER_OPT), name, batch)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['dataroot_gt'], opt['datasets'][phase]['dataroot_lq'] = data['teacher'][phase]
    if crops:  # random 24x24 crops, flips and rotations, a training state at every iteration (resume test)
        opt['datasets']['train'].update(gt_size=24, use_hflip=True, use_rot=True)
        opt['logger']['save_checkpoint_freq'] = 1
    return _write(opt, root, name)


def kt_options(root, data, name, batch):
    opt = _common(load_option_file(KT_TINY), name, batch)
    for phase in ('train', 'val'):
        opt['datasets'][phase]['sources'] = [
            {'name': kind, 'dataroot_gt': data[kind][phase][0], 'dataroot_lq': data[kind][phase][1]} for kind in TYPES]
    opt['datasets']['train']['samples_per_type'] = 4
    opt['teachers'] = [{'name': kind, 'pretrain_path': data['teachers'][i]} for i, kind in enumerate(TYPES)]
    return _write(opt, root, name)


def da_options(root, data, name, batch):
    opt = _common(load_option_file(DA_TINY), name, batch)
    opt['datasets']['train'].update(
        sources=[{'name': kind, 'dataroot_lq': data[kind]['train'][1]} for kind in TYPES],
        dataroot_clear=data['clear'], samples_per_type=4)
    opt['datasets']['val']['sources'] = [
        {'name': kind, 'dataroot_lq': data[kind]['val'][1], 'dataroot_gt': data[kind]['val'][0]} for kind in TYPES]
    opt['network_d'] = {'type': 'PatchGANDiscriminator', 'num_in_ch': 3, 'num_feat': 8, 'num_layers': 2,
                        'norm_type': 'instance'}
    opt['path']['pretrain_network_g'] = data['teachers'][0]  # the student starts from a "KT" checkpoint
    return _write(opt, root, name)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist_data')
    out = {'teacher': {'train': write_pairs(str(root / 'teacher' / 'train'), 8, seed=1, size=SIZE),
                       'val': write_pairs(str(root / 'teacher' / 'val'), 2, seed=2, size=SIZE)}}
    for i, kind in enumerate(TYPES):
        out[kind] = {'train': write_pairs(str(root / kind / 'train'), 4, seed=10 + i, size=SIZE),
                     'val': write_pairs(str(root / kind / 'val'), 1, seed=20 + i, size=SIZE)}
    out['clear'] = write_pairs(str(root / 'clear'), 1, seed=30, size=SIZE)[0]  # one clear image: no random draw
    net_opt = load_option_file(TINY_TEACHER_OPT)['network_g']
    out['teachers'] = []
    for i in range(len(TYPES)):
        torch.manual_seed(100 + i)
        path = str(root / f'teacher_{i}.pth')
        torch.save({'params': build_network(dict(net_opt)).state_dict()}, path)
        out['teachers'].append(path)
    return out


BUILDERS = {'teacher': teacher_options, 'kt': kt_options, 'da': da_options}


def _rank_main(rank, world, port, jobs, root):
    """One rank of a torchrun-like job: torchrun's environment, then every training in ``jobs`` in turn."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), OMP_NUM_THREADS='1')
    import basicsr.utils.logger as basicsr_logger
    from uniremoval.train import train_pipeline
    for opt_path, *extra in jobs:
        basicsr_logger.initialized_logger.clear()  # each training logs to its own file, as in its own process
        for handler in logging.getLogger('basicsr').handlers[:]:
            handler.close()
            logging.getLogger('basicsr').removeHandler(handler)
        train_pipeline(['-opt', opt_path, '--launcher', 'pytorch'] + extra, root_path=root)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope='module')
def two_process_runs(tmp_path_factory, data):
    """Root of 2-process Gloo runs of the three models (batch 2 for the teacher, 3 for KT/DA, per rank), and of
    a teacher with random crops run uninterrupted (``crops``) and stopped at iteration 3 then resumed
    (``crops_resumed``)."""
    root = str(tmp_path_factory.mktemp('dist2'))
    crops, resumed = teacher_options(root, data, 'crops', 2, crops=True), teacher_options(
        root, data, 'crops_resumed', 2, crops=True)
    jobs = [(teacher_options(root, data, 'teacher', 2), ), (kt_options(root, data, 'kt', 3), ),
            (da_options(root, data, 'da', 3), ), (crops, ), (resumed, '--force_yml', 'train:total_iter=3'),
            (resumed, '--auto_resume')]
    ctx = multiprocessing.get_context('fork')
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(rank, 2, port, jobs, root)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    codes = [p.exitcode for p in procs]
    logs = ''.join(open(f).read()[-3000:] for f in glob.glob(osp.join(root, 'experiments', '*', '*.log')))
    assert codes == [0, 0], f'rank exit codes {codes}\n{logs}'
    return root


def _final(root, name, label='g'):
    return torch.load(osp.join(root, 'experiments', name, 'models', f'net_{label}_latest.pth'),
                      weights_only=True)['params']


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _half_batch_steps(model_cls, monkeypatch):
    """Make ``model_cls`` train as 2 DDP ranks would: per iteration, the losses of ``batch[0::2]`` and
    ``batch[1::2]`` back-propagated with the same weights, gradients averaged, one step per optimiser."""
    feed, optimize = model_cls.feed_data, model_cls.optimize_parameters

    def keep_batch(self, data):
        self._full_batch = data
        feed(self, data)

    def halves(self, current_iter):
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        real = [(o, o.step, o.zero_grad) for o in self.optimizers]
        for o in self.optimizers:
            o.step = o.zero_grad = lambda *args, **kwargs: None
        try:
            for r in range(2):
                feed(self, {k: v[r::2] for k, v in self._full_batch.items()})
                optimize(self, current_iter)
        finally:
            for o, step, zero_grad in real:
                o.step, o.zero_grad = step, zero_grad
        for o in self.optimizers:
            for group in o.param_groups:
                for p in group['params']:
                    if p.grad is not None:
                        p.grad /= 2
            o.step()

    monkeypatch.setattr(model_cls, 'feed_data', keep_batch)
    monkeypatch.setattr(model_cls, 'optimize_parameters', halves)


def _one_process(tmp_path, data, kind, batch):
    from uniremoval.train import train_pipeline
    opt_path = BUILDERS[kind](str(tmp_path), data, kind, batch)
    return train_pipeline(['-opt', opt_path], root_path=str(tmp_path))


def test_only_rank_0_writes_and_states_hold_both_ranks(two_process_runs):
    for name in ('teacher', 'kt', 'da'):
        exp = osp.join(two_process_runs, 'experiments', name)
        assert len(glob.glob(osp.join(exp, 'train_*.log'))) == 1  # rank 1 logs nothing to file
        assert sorted(os.listdir(osp.join(exp, 'training_states'))) == ['2.state', '4.state']
        state = torch.load(osp.join(exp, 'training_states', '4.state'), weights_only=True)
        assert len(state['rng_states']) == 2  # one entry per rank
        assert not torch.equal(state['rng_states'][0]['now']['torch'], state['rng_states'][1]['now']['torch'])
        assert state['train_position'] == {'iter_in_epoch': 2, 'iters_per_epoch': 2}
        with open(glob.glob(osp.join(exp, 'train_*.log'))[0]) as f:
            log = f.read()
        assert log.count('# psnr:') == 2  # validated at iterations 2 and 4, on rank 0
        assert 'iter:       4,' in log


def test_teacher_two_processes_equal_one_process_full_batch(two_process_runs, data, tmp_path):
    _one_process(tmp_path, data, 'teacher', 4)
    diff = _max_diff(_final(two_process_runs, 'teacher'), _final(str(tmp_path), 'teacher'))
    print(f'teacher: max |2 procs - 1 proc| = {diff:.3g}')
    assert diff <= TOL


def test_kt_two_processes_equal_half_batch_gradient_average(two_process_runs, data, tmp_path, monkeypatch):
    _half_batch_steps(UniRemovalKTModel, monkeypatch)
    _one_process(tmp_path, data, 'kt', 6)
    diff = _max_diff(_final(two_process_runs, 'kt'), _final(str(tmp_path), 'kt'))
    print(f'KT: max |2 procs - 1 proc (half-batch average)| = {diff:.3g}')
    assert diff <= TOL_HALVES
    with open(glob.glob(osp.join(two_process_runs, 'experiments', 'kt', 'train_*.log'))[0]) as f:
        log = f.read()
    # the decayed feature weight, reduced across the ranks with the losses: 0.01 in epoch 0, 0.01 x 0.99 in epoch 1
    assert 'w_cl_feat: 1.0000e-02' in log and 'w_cl_feat: 9.9000e-03' in log


def test_da_two_processes_equal_half_batch_gradient_average(two_process_runs, data, tmp_path, monkeypatch):
    _half_batch_steps(UniRemovalDAModel, monkeypatch)
    _one_process(tmp_path, data, 'da', 6)
    diff_g = _max_diff(_final(two_process_runs, 'da'), _final(str(tmp_path), 'da'))
    diff_d = _max_diff(_final(two_process_runs, 'da', 'd'), _final(str(tmp_path), 'da', 'd'))
    print(f'DA: max |2 procs - 1 proc (half-batch average)| G {diff_g:.3g}, D {diff_d:.3g}')
    assert diff_g <= TOL_HALVES and diff_d <= TOL_HALVES


def test_one_process_full_batch_kt_is_not_the_two_process_result(two_process_runs, data, tmp_path):
    """Why KT is compared with the half-batch reference: with the whole batch as contrastive negatives the
    result differs (the test above would not be needed if this difference were within the tolerance)."""
    _one_process(tmp_path, data, 'kt', 6)
    diff = _max_diff(_final(two_process_runs, 'kt'), _final(str(tmp_path), 'kt'))
    print(f'KT: max |2 procs - 1 proc (full batch)| = {diff:.3g}')
    assert diff > 100 * TOL_HALVES


@pytest.mark.parametrize('kind', ['kt', 'da'])
def test_logged_feature_weight_is_created_on_the_model_device(kind, data, tmp_path):
    """The defect of issue [9]: the decayed weight was a CPU tensor among CUDA losses, which BasicSR's
    ``reduce_loss_dict`` stacks in multi-GPU runs (a device mismatch on the first logged iteration). On a CPU
    machine the mismatch cannot occur, so the model's device is set to ``meta`` after building (inputs stay
    on the CPU): the logged weight must follow ``model.device``, whatever it is."""
    from basicsr.models import build_model
    from uniremoval.options import parse_options
    opt_path = BUILDERS[kind](str(tmp_path), data, kind, 3)
    opt, _ = parse_options(['-opt', opt_path], root_path=str(tmp_path), is_train=True)
    opt['train']['iters_per_epoch'] = 2
    model = build_model(opt)
    g = torch.Generator().manual_seed(0)
    model.lq, model.labels = torch.rand(3, 3, SIZE, SIZE, generator=g), torch.tensor([0, 1, 2])
    model.clear, model.degradations = torch.rand(3, 3, SIZE, SIZE, generator=g), list(TYPES)
    model.device = torch.device('meta')
    _, loss_dict = model.compute_losses(3) if kind == 'kt' else model.generator_losses(3)
    key = 'w_cl_feat' if kind == 'kt' else 'w_excl_feat'
    assert loss_dict[key].device == torch.device('meta')
    assert all(v.device == torch.device('cpu') for k, v in loss_dict.items() if k != key)


def test_launchers_pick_the_backend_and_read_torchrun_and_slurm_variables(monkeypatch):
    from uniremoval.utils import dist_util
    calls = []
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)
    for name in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.setenv(name, 'placeholder')  # so that monkeypatch restores them afterwards
        monkeypatch.delenv(name)

    with pytest.raises(RuntimeError, match='RANK is not set; start the run with torchrun'):
        dist_util.init_dist('pytorch')
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    dist_util.init_dist_from_options('pytorch', {'timeout_s': 60}, num_gpu=0)
    assert calls[-1]['backend'] == 'gloo' and calls[-1]['timeout'].total_seconds() == 60
    with pytest.raises(ValueError, match=r"dist_params: unknown keys \['prt'\]"):
        dist_util.init_dist_from_options('pytorch', {'prt': 1})
    if not torch.cuda.is_available():
        assert dist_util.default_backend() == 'gloo'
        with pytest.raises(RuntimeError, match='nccl needs CUDA'):
            dist_util.init_dist('pytorch', backend='nccl')

    monkeypatch.setenv('MASTER_ADDR', 'node7')
    for name, value in (('SLURM_PROCID', '5'), ('SLURM_NTASKS', '8'), ('SLURM_LOCALID', '1')):
        monkeypatch.setenv(name, value)
    dist_util.init_dist('slurm', backend='gloo', port=12345)
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')} == {
        'RANK': '5', 'WORLD_SIZE': '8', 'LOCAL_RANK': '1', 'MASTER_ADDR': 'node7', 'MASTER_PORT': '12345'}
    assert calls[-1]['init_method'] == 'env://'


def test_two_process_run_resumes_exactly(two_process_runs):
    """2 ranks with random crops stopped after iteration 3 (mid-epoch: 2 batches per epoch) and resumed with
    --auto_resume end with the uninterrupted 2-rank run's weights: each rank gets back its own generators."""
    exp = osp.join(two_process_runs, 'experiments', 'crops_resumed')
    logs = sorted(glob.glob(osp.join(exp, 'train_*.log')))
    with open(logs[-1]) as f:
        log = f.read()
    assert 'Resuming training from epoch: 1, iter: 3.' in log and 'Replayed the first 1 batches of epoch 1' in log
    final, uninterrupted = _final(two_process_runs, 'crops_resumed'), _final(two_process_runs, 'crops')
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final)


def _nan_guard_rank(rank, port, results):
    import torch.distributed as dist

    from uniremoval.models.model_mixins import NonFiniteLossError, check_finite_losses
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        check_finite_losses({'l_pix': torch.tensor(float('nan') if rank == 1 else 0.5)}, 7)
        results.put((rank, 'no error'))
    except NonFiniteLossError as e:
        results.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_stops_every_rank():
    """The NaN guard all-reduces its verdict: a rank whose own losses are finite stops too, instead of waiting
    forever in the next gradient all-reduce for the rank that stopped."""
    ctx = multiprocessing.get_context('fork')
    results, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_nan_guard_rank, args=(rank, port, results)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    messages = dict(results.get(timeout=5) for _ in procs)
    assert [p.exitcode for p in procs] == [0, 0]
    assert 'iteration 7: loss term l_pix = nan' in messages[1]
    assert 'iteration 7: a loss term is not finite (NaN or inf) on another process' in messages[0]
