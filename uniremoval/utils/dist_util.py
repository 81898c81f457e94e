"""torch.distributed set-up for ``--launcher pytorch`` (torchrun) and ``--launcher slurm``, and rank helpers.

BasicSR 1.4.2's ``basicsr.utils.dist_util.init_dist`` calls ``torch.cuda.set_device`` and hard-wires the
NCCL backend, so it dies on machines without CUDA. :func:`init_dist` picks the backend instead: NCCL
where CUDA is available (one process per GPU, device ``LOCAL_RANK``), Gloo otherwise (CPU processes).
``dist_params`` in the option file (``backend``, ``port``, ``timeout_s``) overrides the defaults.

The rest are small helpers that are no-ops (or identities) in a single process: :func:`barrier`,
:func:`broadcast_object`, :func:`all_gather_object` and :func:`broadcast_module_state`.
"""
import datetime
import os
import subprocess

import torch
import torch.distributed as dist

from basicsr.utils.dist_util import get_dist_info, master_only  # noqa: F401  (re-exported)

LAUNCHERS = ('pytorch', 'slurm')
DIST_PARAM_KEYS = ('backend', 'port', 'timeout_s')
DEFAULT_TIMEOUT_S = 1800  # how long a collective (e.g. the barrier after rank-0 validation) may wait


def default_backend():
    """``'nccl'`` when CUDA is available, ``'gloo'`` otherwise."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def _env_int(name, launcher):
    value = os.environ.get(name)
    if value is None:
        hint = ('start the run with torchrun --nproc_per_node=N (it sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR '
                'and MASTER_PORT)' if launcher == 'pytorch' else 'start the run with srun inside a SLURM allocation')
        raise RuntimeError(f'--launcher {launcher}: environment variable {name} is not set; {hint}')
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f'--launcher {launcher}: environment variable {name}={value!r} is not an integer') from None


def _slurm_env(port):
    """Translate SLURM's variables into torch.distributed's (``env://``) ones; return the local rank."""
    proc_id = _env_int('SLURM_PROCID', 'slurm')
    ntasks = _env_int('SLURM_NTASKS', 'slurm')
    local_rank = int(os.environ.get('SLURM_LOCALID', proc_id % max(torch.cuda.device_count(), 1)))
    if 'MASTER_ADDR' not in os.environ:
        node_list = os.environ.get('SLURM_NODELIST') or os.environ.get('SLURM_JOB_NODELIST')
        if not node_list:
            raise RuntimeError('--launcher slurm: neither MASTER_ADDR nor SLURM_NODELIST is set')
        addr = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True, text=True,
                              check=True).stdout.split()
        if not addr:
            raise RuntimeError(f'--launcher slurm: scontrol show hostnames {node_list} returned no host')
        os.environ['MASTER_ADDR'] = addr[0]
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')  # torch.distributed's default port
    os.environ['WORLD_SIZE'] = str(ntasks)
    os.environ['RANK'] = str(proc_id)
    os.environ['LOCAL_RANK'] = str(local_rank)
    return local_rank


def init_dist(launcher, backend=None, port=None, timeout_s=None):
    """Join the process group of a ``torchrun`` (``launcher='pytorch'``) or SLURM (``'slurm'``) job.

    Args:
        launcher (str): ``'pytorch'`` (reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
            ``MASTER_PORT``) or ``'slurm'`` (reads ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
            ``SLURM_NODELIST``; ``MASTER_PORT`` from ``port``, the environment or 29500).
        backend (str | None): ``'nccl'``, ``'gloo'``; default :func:`default_backend`.
        port (int | None): master port (SLURM only; torchrun passes its own).
        timeout_s (float | None): collective timeout in seconds (default 1800).

    Returns:
        tuple[int, int]: ``(rank, world_size)``. A second call in an initialised process returns the
        existing group's values (several trainings in one process, as the tests do).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'--launcher must be one of none, {", ".join(LAUNCHERS)}; got {launcher!r}')
    if dist.is_initialized():
        return get_dist_info()
    backend = backend or default_backend()
    if backend not in ('nccl', 'gloo', 'mpi'):
        raise ValueError(f"dist_params:backend must be 'nccl', 'gloo' or 'mpi', got {backend!r}")
    if backend == 'nccl' and not torch.cuda.is_available():
        raise RuntimeError('dist_params:backend nccl needs CUDA, which is not available here; use gloo (the default '
                           'without CUDA)')
    if launcher == 'slurm':
        local_rank = _slurm_env(port)
    else:
        _env_int('RANK', launcher)
        _env_int('WORLD_SIZE', launcher)
        local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if backend == 'nccl':
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    timeout = datetime.timedelta(seconds=float(timeout_s or DEFAULT_TIMEOUT_S))
    dist.init_process_group(backend=backend, init_method='env://', timeout=timeout)
    return get_dist_info()


def init_dist_from_options(launcher, dist_params=None, num_gpu=None):
    """:func:`init_dist` with the option file's ``dist_params`` mapping (unknown keys are an error).

    Without ``dist_params.backend``, ``num_gpu: 0`` (the models train on CPU) selects Gloo even where CUDA
    is available: NCCL cannot reduce CPU tensors.
    """
    if dist_params is not None and not isinstance(dist_params, dict):
        raise ValueError(f'dist_params must be a mapping (backend, port, timeout_s), got {dist_params!r}')
    dist_params = dict(dist_params or {})
    unknown = sorted(set(dist_params) - set(DIST_PARAM_KEYS))
    if unknown:
        raise ValueError(f'dist_params: unknown keys {unknown}; expected some of {list(DIST_PARAM_KEYS)}')
    if dist_params.get('backend') is None and num_gpu == 0:
        dist_params['backend'] = 'gloo'
    return init_dist(launcher, **dist_params)


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def barrier():
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src=0):
    """``obj`` of rank ``src`` on every rank (picklable objects; identity in a single process)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj):
    """The list of every rank's ``obj``, indexed by rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module_state(module, src=0):
    """Overwrite ``module``'s parameters and buffers with rank ``src``'s (no-op in a single process).

    For modules outside DistributedDataParallel that must be identical on every rank, e.g. a loss's
    feature network initialised at random (``pretrained: false``): each rank seeds its generators with
    ``manual_seed + rank``, so they would otherwise differ.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=src)
