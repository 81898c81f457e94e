"""Helpers shared by the multi-type datasets (BasicSR keeps such helpers in ``basicsr/data/data_util.py``).

:class:`~uniremoval.data.multi_degradation_dataset.MultiDegradationDataset` and
:class:`~uniremoval.data.unpaired_degradation_dataset.UnpairedDegradationDataset` both read ``k``
labelled sources of images. What they share lives here:

* the option checks: :data:`SOURCE_KEYS`, :data:`BACKENDS`, :data:`PHASES`,
  :func:`check_source_opt`, :func:`parse_backend` and :func:`check_crop_and_sources`;
* :class:`ImageSource`: one source's folder / LMDB checks, its lazily opened file client and
  :meth:`ImageSource.read` (image decoding with the error messages naming the file);
* :class:`PairedSource`: a gt / lq source paired by file name, by a meta-info file or by two LMDBs,
  exactly as BasicSR's ``PairedImageDataset``, with the pairing checked when it is built;
* :class:`TypeBalancedIndexing`: the index layout (concatenated or type-balanced) of the datasets.
"""
import bisect
import numbers
from copy import deepcopy
from os import path as osp

import cv2
import numpy as np

from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file
from basicsr.utils import FileClient, get_root_logger, imfrombytes, scandir

SOURCE_KEYS = ('name', 'dataroot_gt', 'dataroot_lq', 'io_backend', 'meta_info_file', 'filename_tmpl')
BACKENDS = ('disk', 'lmdb')
PHASES = ('train', 'val', 'test')
MAX_LISTED = 5  # offending file names quoted in a pairing error


def listing(names):
    """``'a.png', 'b.png', ... (12 in all)``: the first few of ``names`` and how many there are."""
    shown = ', '.join(repr(n) for n in names[:MAX_LISTED])
    more = ', ...' if len(names) > MAX_LISTED else ''
    return f'{shown}{more} ({len(names)} in all)'


def check_source_opt(index, opt):
    """Check the mapping ``sources[index]`` (a dict of :data:`SOURCE_KEYS` with a non-empty ``name``).

    Returns:
        tuple[str, str]: the name and ``where``, how errors name the source (``"sources[0] ('haze')"``).
    """
    if not isinstance(opt, dict):
        raise ValueError(f'sources[{index}] must be a mapping with keys {SOURCE_KEYS}, got {opt!r}.')
    unknown = sorted(set(opt) - set(SOURCE_KEYS))
    if unknown:
        raise ValueError(f'sources[{index}] has unknown option(s) {unknown}; allowed: {list(SOURCE_KEYS)}.')
    name = opt.get('name')
    if not isinstance(name, str) or not name:
        raise ValueError(f'sources[{index}] needs a non-empty string `name`, got {name!r}.')
    return name, f"sources[{index}] ('{name}')"


def parse_backend(where, backend):
    """``(type, kwargs)`` of an ``io_backend`` mapping (copied), checked; errors start with ``where``."""
    backend = deepcopy(backend)
    if not isinstance(backend, dict) or backend.get('type') not in BACKENDS:
        raise ValueError(f'{where}: io_backend must be a mapping with type one of {list(BACKENDS)}, '
                         f'got {backend!r}.')
    return backend.pop('type'), backend


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


class ImageSource:
    """What every image source of the multi-type datasets shares.

    Subclasses set ``where`` (how errors name the source), ``backend_type`` and ``backend_kwargs``
    (a BasicSR ``FileClient``'s), ``gt_root`` / ``lq_root`` (the roots :meth:`read` names in its
    errors), ``mode`` and ``paths`` (a list of ``{'<kind>_path': file path or LMDB key}``).

    The file client is opened on first use, once per process: it is not pickled (LMDB
    environments do not pickle), so each data-loader worker opens its own.
    """

    _client = None

    def __len__(self):
        return len(self.paths)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop('_client', None)  # reopened lazily
        return state

    def check_dir(self, key, path):
        """Raise :class:`ValueError` unless ``path`` (option ``key``) is an existing folder."""
        if not osp.exists(path):
            raise ValueError(f'{self.where}: `{key}` does not exist: {path}')
        if not osp.isdir(path):
            raise ValueError(f'{self.where}: `{key}` is not a folder: {path}')

    def lmdb_names(self, key, root):
        """{lmdb key: image name} of one LMDB, keys derived from meta_info.txt as BasicSR does."""
        self.check_dir(key, root)
        if not root.endswith('.lmdb'):
            raise ValueError(f'{self.where}: io_backend lmdb needs `{key}` to be a folder ending in .lmdb, '
                             f'got {root}')
        meta = osp.join(root, 'meta_info.txt')
        if not osp.isfile(meta):
            raise ValueError(f'{self.where}: `{key}` {root} has no meta_info.txt; a BasicSR LMDB holds data.mdb '
                             'and meta_info.txt (see basicsr.utils.lmdb_util.make_lmdb_from_imgs).')
        with open(meta) as fin:
            return {line.split('.')[0]: line.split(' ')[0] for line in fin}

    def client(self):
        """This source's ``FileClient``, opened on first use."""
        if self._client is None:
            self._client = FileClient(self.backend_type, **deepcopy(self.backend_kwargs))
        return self._client

    def read(self, path, kind):
        """Read one image as float32 BGR HWC in [0, 1], naming the file in any error.

        Args:
            path (str): file path, or LMDB key.
            kind (str): the file client key (``'gt'``, ``'lq'``, ``'clear'``), also the word used in errors.
        """
        client = self.client()
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


class PairedSource(ImageSource):
    """One paired source ``sources[index]``: its name, folders, IO backend options and the list of pairs.

    Pairs are read as BasicSR's ``PairedImageDataset`` reads them: two folders paired by file name
    (``filename_tmpl``), a ``meta_info_file`` listing the gt names, or two LMDBs (keys from their
    ``meta_info.txt``). Pairing is checked here, so a gt without an lq (or the reverse), a missing
    folder, an LMDB without ``meta_info.txt`` or an empty source raise :class:`ValueError` naming
    the source, the option and the offending files.

    Args:
        index (int): position in ``sources`` (the label).
        opt (dict): the source's options, :data:`SOURCE_KEYS`.
        default_backend (dict): ``io_backend`` used when the source has none.

    Attributes:
        paths (list[dict]): ``{'lq_path', 'gt_path'}`` of every pair.
        mode (str): ``'folder'``, ``'meta_info_file'`` or ``'lmdb'``.
    """

    def __init__(self, index, opt, default_backend):
        self.name, self.where = check_source_opt(index, opt)
        self.index = index
        self.backend_type, self.backend_kwargs = parse_backend(self.where, opt.get('io_backend') or default_backend)

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

    def _mismatch(self, gt_without_lq, lq_without_gt, what='files'):
        problems = []
        if gt_without_lq:
            problems.append(f'gt {what} without an lq counterpart: {listing(gt_without_lq)}')
        if lq_without_gt:
            problems.append(f'lq {what} without a gt counterpart: {listing(lq_without_gt)}')
        return ValueError(f'{self.where}: gt and lq do not pair up (dataroot_gt {self.gt_root}, dataroot_lq '
                          f'{self.lq_root}, filename_tmpl {self.filename_tmpl!r}): ' + '; '.join(problems))

    def _lq_name(self, gt_name):
        basename, ext = osp.splitext(gt_name)
        return f'{self.filename_tmpl.format(basename)}{ext}'

    def _pair_folder(self):
        for key, root in (('dataroot_gt', self.gt_root), ('dataroot_lq', self.lq_root)):
            self.check_dir(key, root)
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
        self.check_dir('dataroot_gt', self.gt_root)
        self.check_dir('dataroot_lq', self.lq_root)
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
                problems.append(f'missing in dataroot_gt {self.gt_root}: {listing(no_gt)}')
            if no_lq:
                problems.append(f'missing in dataroot_lq {self.lq_root}: {listing(no_lq)}')
            raise ValueError(f'{self.where}: files listed in meta_info_file {self.meta_info_file} '
                             f'(filename_tmpl {self.filename_tmpl!r}) are ' + '; '.join(problems))
        return paired_paths_from_meta_info_file([self.lq_root, self.gt_root], ['lq', 'gt'], self.meta_info_file,
                                                self.filename_tmpl)

    def _pair_lmdb(self):
        gt = self.lmdb_names('dataroot_gt', self.gt_root)
        lq = self.lmdb_names('dataroot_lq', self.lq_root)
        gt_without_lq = [gt[k] for k in sorted(gt) if k not in lq]
        lq_without_gt = [lq[k] for k in sorted(lq) if k not in gt]
        if gt_without_lq or lq_without_gt:
            raise self._mismatch(gt_without_lq, lq_without_gt, what='LMDB entries')
        return paired_paths_from_lmdb([self.lq_root, self.gt_root], ['lq', 'gt'])


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
