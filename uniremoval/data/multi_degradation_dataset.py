"""A mixture of paired datasets, one per degradation type, for Uni-Removal's knowledge transfer.

Uni-Removal (arXiv 2307.05075, Sec. III-B and IV-A1) trains its student on a mixture of haze
(RESIDE OTS), rain (Rain1400) and blur (GoPro) pairs, each sample carrying the label of its
degradation type. :class:`MultiDegradationDataset` reads any number of such paired sources
(folder, meta-info-file or LMDB, exactly as BasicSR's ``PairedImageDataset``) and either
concatenates them or samples the types equally often.
"""
import bisect
import numbers
from copy import deepcopy
from os import path as osp

import cv2
import numpy as np
from torch.utils import data as data
from torchvision.transforms.functional import normalize

from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import FileClient, get_root_logger, imfrombytes, img2tensor, scandir
from basicsr.utils.registry import DATASET_REGISTRY

SOURCE_KEYS = ('name', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'meta_info_file', 'filename_tmpl')
BACKENDS = ('disk', 'lmdb')
PHASES = ('train', 'val', 'test')
MAX_LISTED = 5  # offending file names quoted in a pairing error


def _listing(names):
    """``'a.png', 'b.png', ... (12 in all)``: the first few of ``names`` and how many there are."""
    shown = ', '.join(repr(n) for n in names[:MAX_LISTED])
    more = ', ...' if len(names) > MAX_LISTED else ''
    return f'{shown}{more} ({len(names)} in all)'


class _Source:
    """One paired source: its name, folders, IO backend options and the list of pairs."""

    def __init__(self, index, opt, default_backend):
        if not isinstance(opt, dict):
            raise ValueError(f'sources[{index}] must be a mapping with keys {SOURCE_KEYS}, got {opt!r}.')
        unknown = sorted(set(opt) - set(SOURCE_KEYS))
        if unknown:
            raise ValueError(f'sources[{index}] has unknown option(s) {unknown}; allowed: {list(SOURCE_KEYS)}.')
        name = opt.get('name')
        if not isinstance(name, str) or not name:
            raise ValueError(f'sources[{index}] needs a non-empty string `name`, got {name!r}.')
        self.index, self.name = index, name
        self.where = f"sources[{index}] ('{name}')"

        backend = deepcopy(opt.get('io_backend') or default_backend)
        if not isinstance(backend, dict) or backend.get('type') not in BACKENDS:
            raise ValueError(f'{self.where}: io_backend must be a mapping with type one of {list(BACKENDS)}, '
                             f'got {backend!r}.')
        self.backend_type = backend.pop('type')
        self.backend_kwargs = backend

        for key in ('dataroot_gt', 'dataroot_lq'):
            if not isinstance(opt.get(key), str) or not opt[key]:
                raise ValueError(f'{self.where}: option `{key}` (a folder or .lmdb path) is required, '
                                 f'got {opt.get(key)!r}.')
        self.gt_root, self.lq_root = opt['dataroot_gt'], opt['dataroot_lq']
        self.filename_tmpl = opt.get('filename_tmpl') or '{}'
        self.meta_info_file = opt.get('meta_info_file')

        if self.backend_type == 'lmdb':
            if self.meta_info_file is not None:
                get_root_logger().warning(f'{self.where}: meta_info_file is ignored with io_backend lmdb; the '
                                          'LMDBs\' own meta_info.txt lists the images.')
            self.mode = 'lmdb'
            self.paths = self._pair_lmdb()
            self.backend_kwargs.update(db_paths=[self.lq_root, self.gt_root], client_keys=['lq', 'gt'])
        elif self.meta_info_file is not None:
            self.mode = 'meta_info_file'
            self.paths = self._pair_meta_info_file()
        else:
            self.mode = 'folder'
            self.paths = self._pair_folder()
        if not self.paths:
            raise ValueError(f'{self.where}: no image pairs found in dataroot_gt {self.gt_root} / '
                             f'dataroot_lq {self.lq_root} ({self.mode} mode).')

    def __len__(self):
        return len(self.paths)

    # ------------------------------------------------------------------ pairing
    def _check_dir(self, key, path):
        if not osp.exists(path):
            raise ValueError(f'{self.where}: `{key}` does not exist: {path}')
        if not osp.isdir(path):
            raise ValueError(f'{self.where}: `{key}` is not a folder: {path}')

    def _mismatch(self, gt_without_lq, lq_without_gt, what='files'):
        problems = []
        if gt_without_lq:
            problems.append(f'gt {what} without an lq counterpart: {_listing(gt_without_lq)}')
        if lq_without_gt:
            problems.append(f'lq {what} without a gt counterpart: {_listing(lq_without_gt)}')
        return ValueError(f'{self.where}: gt and lq do not pair up (dataroot_gt {self.gt_root}, dataroot_lq '
                          f'{self.lq_root}, filename_tmpl {self.filename_tmpl!r}): ' + '; '.join(problems))

    def _lq_name(self, gt_name):
        basename, ext = osp.splitext(gt_name)
        return f'{self.filename_tmpl.format(basename)}{ext}'

    def _pair_folder(self):
        for key, root in (('dataroot_gt', self.gt_root), ('dataroot_lq', self.lq_root)):
            self._check_dir(key, root)
            if osp.isfile(osp.join(root, 'data.mdb')):
                raise ValueError(f'{self.where}: `{key}` {root} is an LMDB; set io_backend: {{type: lmdb}} for '
                                 'this source.')
        gt_names = sorted(scandir(self.gt_root))
        lq_names = sorted(scandir(self.lq_root))
        expected = {gt: self._lq_name(gt) for gt in gt_names}
        lq_set, expected_set = set(lq_names), set(expected.values())
        gt_without_lq = [gt for gt in gt_names if expected[gt] not in lq_set]
        lq_without_gt = [lq for lq in lq_names if lq not in expected_set]
        if gt_without_lq or lq_without_gt:
            raise self._mismatch(gt_without_lq, lq_without_gt)
        paths = paired_paths_from_folder([self.lq_root, self.gt_root], ['lq', 'gt'], self.filename_tmpl)
        return sorted(paths, key=lambda p: p['gt_path'])

    def _pair_meta_info_file(self):
        self._check_dir('dataroot_gt', self.gt_root)
        self._check_dir('dataroot_lq', self.lq_root)
        if not osp.isfile(self.meta_info_file):
            raise ValueError(f'{self.where}: `meta_info_file` does not exist: {self.meta_info_file}')
        with open(self.meta_info_file, 'r') as fin:
            lines = fin.read().split('\n')
        if lines and lines[-1] == '':
            lines.pop()  # trailing newline
        blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
        if blank:
            raise ValueError(f'{self.where}: meta_info_file {self.meta_info_file} has blank line(s) {blank[:10]}.')
        gt_names = [line.strip().split(' ')[0] for line in lines]
        no_gt = [n for n in gt_names if not osp.isfile(osp.join(self.gt_root, n))]
        no_lq = [self._lq_name(n) for n in gt_names if not osp.isfile(osp.join(self.lq_root, self._lq_name(n)))]
        if no_gt or no_lq:
            problems = []
            if no_gt:
                problems.append(f'missing in dataroot_gt {self.gt_root}: {_listing(no_gt)}')
            if no_lq:
                problems.append(f'missing in dataroot_lq {self.lq_root}: {_listing(no_lq)}')
            raise ValueError(f'{self.where}: files listed in meta_info_file {self.meta_info_file} '
                             f'(filename_tmpl {self.filename_tmpl!r}) are ' + '; '.join(problems))
        return paired_paths_from_meta_info_file([self.lq_root, self.gt_root], ['lq', 'gt'], self.meta_info_file,
                                                self.filename_tmpl)

    def _lmdb_names(self, key, root):
        """{lmdb key: image name} of one LMDB, keys derived from meta_info.txt as BasicSR does."""
        self._check_dir(key, root)
        if not root.endswith('.lmdb'):
            raise ValueError(f'{self.where}: io_backend lmdb needs `{key}` to be a folder ending in .lmdb, '
                             f'got {root}')
        meta = osp.join(root, 'meta_info.txt')
        if not osp.isfile(meta):
            raise ValueError(f'{self.where}: `{key}` {root} has no meta_info.txt; a BasicSR LMDB holds data.mdb '
                             'and meta_info.txt (see basicsr.utils.lmdb_util.make_lmdb_from_imgs).')
        with open(meta) as fin:
            return {line.split('.')[0]: line.split(' ')[0] for line in fin}

    def _pair_lmdb(self):
        gt = self._lmdb_names('dataroot_gt', self.gt_root)
        lq = self._lmdb_names('dataroot_lq', self.lq_root)
        gt_without_lq = [gt[k] for k in sorted(gt) if k not in lq]
        lq_without_gt = [lq[k] for k in sorted(lq) if k not in gt]
        if gt_without_lq or lq_without_gt:
            raise self._mismatch(gt_without_lq, lq_without_gt, what='LMDB entries')
        return paired_paths_from_lmdb([self.lq_root, self.gt_root], ['lq', 'gt'])

    # ------------------------------------------------------------------ loading
    def file_client(self):
        return FileClient(self.backend_type, **deepcopy(self.backend_kwargs))

    def read(self, client, path, kind):
        """Read one image as float32 BGR HWC in [0, 1], naming the file in any error."""
        root = self.gt_root if kind == 'gt' else self.lq_root
        where = f"key '{path}' of LMDB {root}" if self.backend_type == 'lmdb' else path
        try:
            content = client.get(path, kind)
        except OSError as err:
            raise OSError(f'{self.where}: cannot read {kind} image {where}: {err}') from err
        img = None
        if content:  # None: key missing from the LMDB; b'': empty file
            try:
                img = imfrombytes(content, float32=False)
            except cv2.error:
                img = None
        if img is None:
            raise ValueError(f'{self.where}: {kind} image {where} is missing, empty or not a decodable image.')
        return img.astype(np.float32) / 255.


def check_crop_and_sources(opt, phase, dataset_name):
    """Validate the options every multi-type dataset shares; return ``(gt_size, sources)``.

    ``gt_size`` must be a positive int in phase train; ``sources`` a non-empty list with unique names.
    """
    gt_size = opt.get('gt_size')
    if phase == 'train' and (isinstance(gt_size, bool) or not isinstance(gt_size, numbers.Integral) or gt_size < 1):
        raise ValueError(f'{dataset_name}: phase train needs a positive int `gt_size`, got {gt_size!r}.')
    sources = opt.get('sources')
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ValueError(f'{dataset_name} needs a non-empty list `sources`, got {sources!r}.')
    names = [src.get('name') if isinstance(src, dict) else None for src in sources]
    duplicates = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicates:
        raise ValueError(f'{dataset_name}: source names must be unique, repeated: {duplicates}.')
    return gt_size, sources


class TypeBalancedIndexing:
    """Index layout shared by the multi-type datasets (``MultiDegradationDataset``,
    ``UnpairedDegradationDataset``): k sources, label = source position.

    With ``balanced`` true, ``len = k * samples_per_type`` and index ``i`` holds type ``t = i % k``
    and sample ``(i // k + epoch * samples_per_type) % source_sizes[t]`` of that source (``epoch``
    set by :meth:`set_epoch`); otherwise the sources are concatenated.
    """

    def _init_indexing(self, opt, names, source_sizes, dataset_name):
        """Validate ``balanced`` / ``samples_per_type`` and set the attributes the indexing needs."""
        self._indexing_name = dataset_name
        self.source_sizes = list(source_sizes)
        self.num_types = len(self.source_sizes)
        self._offsets = np.cumsum([0] + self.source_sizes).tolist()  # concatenated mode
        self.balanced = bool(opt.get('balanced', True))
        spt = opt.get('samples_per_type')
        if self.balanced:
            if spt is None:
                spt = max(self.source_sizes)
            if isinstance(spt, bool) or not isinstance(spt, numbers.Integral) or spt < 1:
                raise ValueError(f'{dataset_name}: `samples_per_type` must be a positive int, got {spt!r}.')
            self.samples_per_type = int(spt)
            larger = [f'{n} ({size})' for n, size in zip(names, self.source_sizes) if size > self.samples_per_type]
            if larger:
                get_root_logger().info(
                    f'{dataset_name}: sources {", ".join(larger)} hold more than samples_per_type='
                    f'{self.samples_per_type} samples; each epoch visits a window of them that moves when the '
                    'training loop calls dataset.set_epoch(epoch).')
        else:
            if spt is not None:
                get_root_logger().warning(f'{dataset_name}: samples_per_type is ignored with balanced: false.')
            self.samples_per_type = None
        self.epoch = 0

    def __len__(self):
        if self.balanced:
            return self.num_types * self.samples_per_type
        return self._offsets[-1]

    def set_epoch(self, epoch):
        """Move the window of sources larger than ``samples_per_type`` (balanced mode only)."""
        self.epoch = int(epoch)

    def locate(self, index):
        """``(label, index within that source)`` of dataset index ``index``."""
        index = int(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f'{self._indexing_name} index {index} out of range for length {n}.')
        if self.balanced:
            label = index % self.num_types
            within = index // self.num_types + self.epoch * self.samples_per_type
            return label, within % self.source_sizes[label]
        label = bisect.bisect_right(self._offsets, index) - 1
        return label, index - self._offsets[label]

    def type_of_index(self, index):
        """Label (source index) of dataset index ``index``, without reading any image."""
        return self.locate(index)[0]


@DATASET_REGISTRY.register()
class MultiDegradationDataset(TypeBalancedIndexing, data.Dataset):
    """Paired images from several degradation types, each sample labelled with its type.

    Each source is read like BasicSR's ``PairedImageDataset``: from two folders paired by file
    name (``filename_tmpl``), from a ``meta_info_file`` listing the gt names, or from two LMDBs
    (``io_backend: {type: lmdb}``, keys from their ``meta_info.txt``). Pairing is checked when the
    dataset is built, so a gt without an lq (or the reverse), a missing folder, an LMDB without
    ``meta_info.txt`` or an empty source raise :class:`ValueError` naming the source, the option
    and the offending files.

    Args:
        opt (dict): Options:

            sources (list[dict]): the ``k`` sources; the label of a source is its position here.
                Each has ``name`` (str, unique, returned as ``degradation``), ``dataroot_gt``,
                ``dataroot_lq`` (folders, or ``.lmdb`` folders with the lmdb backend) and
                optionally ``io_backend`` (default: the dataset-level one), ``meta_info_file``
                (folder mode only) and ``filename_tmpl`` (default ``'{}'``: lq name of a gt
                ``<base><ext>`` is ``filename_tmpl.format(base) + ext``).
            io_backend (dict): default backend, ``{type: disk}`` (default) or ``{type: lmdb}``.
            balanced (bool): sample the types equally often whatever their sizes. Default: True.
            samples_per_type (int | None): with ``balanced``, samples of each type in one epoch.
                Default: the size of the largest source.
            phase (str): 'train', 'val' or 'test' (BasicSR adds it).
            scale (int): gt size / lq size. Default: 1 (BasicSR adds it).
            gt_size (int): training crop size (gt side), required in phase 'train'.
            use_hflip, use_rot (bool): training flips / rotations. Default: False.
            mean, std (list[float] | None): optional normalisation, as in BasicSR.

    Samples are dicts with ``lq`` and ``gt`` (float32 RGB CHW tensors in ``[0, 1]`` unless
    normalised), ``lq_path`` and ``gt_path`` (file paths, or LMDB keys), ``label`` (int, the
    source index) and ``degradation`` (the source name). In phase 'train' the pair is randomly
    cropped to ``gt_size`` (``paired_random_crop``) and flipped / rotated (``augment``), the same
    transform for gt and lq; in 'val' / 'test' the full images are returned. A gt whose size is
    not ``scale`` times its lq's, an image smaller than ``gt_size`` or an undecodable image raises
    :class:`ValueError` naming the file(s) when the sample is loaded.

    Sampling: with ``balanced`` false the sources are concatenated, ``len = sum(source_sizes)``.
    With ``balanced`` true, ``len = k * samples_per_type`` and index ``i`` holds type
    ``t = i % k`` and sample ``(i // k + epoch * samples_per_type) % source_sizes[t]`` of that
    source (``epoch`` is 0 unless :meth:`set_epoch` is called). Each epoch thus holds exactly
    ``samples_per_type`` samples of every type, so a shuffling sampler draws the types equally
    often in expectation; sources smaller than ``samples_per_type`` are repeated (all their
    samples appear), larger ones are visited ``samples_per_type`` samples at a time, the window
    moving on with :meth:`set_epoch` (the training loop must call it each epoch, before the loader
    is iterated; persistent workers keep the epoch they were started with).

    Attributes:
        labels (list[str]): source names, indexed by label.
        source_sizes (list[int]): number of pairs of each source.
        num_types (int): ``k``.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase')
        if self.phase not in PHASES:
            raise ValueError(f'MultiDegradationDataset: `phase` must be one of {PHASES}, got {self.phase!r}.')
        self.scale = opt.get('scale', 1) or 1
        self.gt_size, sources = check_crop_and_sources(opt, self.phase, 'MultiDegradationDataset')

        default_backend = opt.get('io_backend') or {'type': 'disk'}
        self._sources = [_Source(i, s, default_backend) for i, s in enumerate(sources)]
        self.labels = [s.name for s in self._sources]
        self._init_indexing(opt, self.labels, [len(s) for s in self._sources], 'MultiDegradationDataset')

        self.use_hflip = bool(opt.get('use_hflip', False))
        self.use_rot = bool(opt.get('use_rot', False))
        self.mean = opt.get('mean')
        self.std = opt.get('std')
        self._clients = [None] * self.num_types

        summary = ', '.join(f'{s.name}={len(s)} ({s.mode})' for s in self._sources)
        mode = (f'balanced, {self.num_types} x {self.samples_per_type}' if self.balanced else 'concatenated')
        get_root_logger().info(f'MultiDegradationDataset: {summary}; {mode} = {len(self)} samples per epoch.')

    # ------------------------------------------------------------------ loading
    def __getstate__(self):
        state = self.__dict__.copy()
        state['_clients'] = [None] * self.num_types  # LMDB environments do not pickle; reopened lazily
        return state

    def __getitem__(self, index):
        label, within = self.locate(index)
        source = self._sources[label]
        if self._clients[label] is None:
            self._clients[label] = source.file_client()
        client = self._clients[label]

        gt_path, lq_path = source.paths[within]['gt_path'], source.paths[within]['lq_path']
        img_gt = source.read(client, gt_path, 'gt')
        img_lq = source.read(client, lq_path, 'lq')
        (h_gt, w_gt), (h_lq, w_lq) = img_gt.shape[:2], img_lq.shape[:2]
        if (h_gt, w_gt) != (h_lq * self.scale, w_lq * self.scale):
            raise ValueError(f"{source.where}: gt {gt_path} is {h_gt}x{w_gt} (HxW) but lq {lq_path} is "
                             f'{h_lq}x{w_lq}; with scale {self.scale} the gt must be {h_lq * self.scale}x'
                             f'{w_lq * self.scale}.')

        if self.phase == 'train':
            if h_gt < self.gt_size or w_gt < self.gt_size:
                raise ValueError(f'{source.where}: gt {gt_path} ({h_gt}x{w_gt}) and lq {lq_path} are smaller than '
                                 f'gt_size {self.gt_size}.')
            img_gt, img_lq = paired_random_crop(img_gt, img_lq, self.gt_size, self.scale, gt_path)
            img_gt, img_lq = augment([img_gt, img_lq], self.use_hflip, self.use_rot)

        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)

        return {
            'lq': img_lq,
            'gt': img_gt,
            'lq_path': lq_path,
            'gt_path': gt_path,
            'label': label,
            'degradation': source.name,
        }
