"""Real degraded images of several types and, independently drawn, real clear images.

Uni-Removal's domain-adaptation stage (arXiv 2307.05075, Sec. III-C and IV-A1) fine-tunes the
student on *unpaired* real data: degraded images of k labelled types (URHI haze, SPA rain,
RealBlur-J blur) and real clear images, used as positives of the EX-MGCL loss, as the "real"
side of the discriminator and as inputs of the identity loss. :class:`UnpairedDegradationDataset`
reads the k degraded sources (each a folder, a meta-info-file or a BasicSR LMDB, optionally
with ground truth of the same names for validation) and one collection of clear images.

Path scanning, pairing checks, file clients, image decoding and their error messages are those of
:mod:`uniremoval.data.data_util`, shared with
:class:`~uniremoval.data.multi_degradation_dataset.MultiDegradationDataset`.
"""
import random
from os import path as osp

from torch.utils import data as data
from torchvision.transforms.functional import normalize

from basicsr.data.data_util import paths_from_folder
from basicsr.data.transforms import augment
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from uniremoval.data.data_util import (PHASES, ImageSource, PairedSource, TypeBalancedIndexing, check_crop_and_sources,
                                       check_dataset_files, check_source_opt, listing, parse_backend)

NAME = 'UnpairedDegradationDataset'


class _ImageSet(ImageSource):
    """One unpaired collection of images: a folder, a folder + meta_info_file, or a BasicSR LMDB.

    Shares :class:`~uniremoval.data.data_util.ImageSource`'s folder / LMDB checks, lazy file client
    and :meth:`read` (with its error messages); ``paths`` is a list of ``{path_key: file path or LMDB key}``.

    Args:
        where (str): how errors name the collection, e.g. ``"sources[0] ('haze')"``.
        key (str): the option holding ``root`` (``'dataroot_lq'``, ``'dataroot_clear'``).
        root (str): folder, or ``.lmdb`` folder with the lmdb backend.
        backend (dict): ``io_backend`` mapping.
        meta_info_file (str | None): folder mode: a file whose lines start with the image names.
        kind (str): ``'lq'`` or ``'clear'``: the LMDB client key and the word used in errors.
    """

    def __init__(self, where, key, root, backend, meta_info_file=None, kind='lq'):
        self.where, self.kind = where, kind
        if not isinstance(root, str) or not root:
            raise ValueError(f'{where}: option `{key}` (a folder or .lmdb path) is required, got {root!r}.')
        self.lq_root = self.gt_root = root  # the root that read() names in its errors
        self.backend_type, self.backend_kwargs = parse_backend(where, backend)
        self.meta_info_file = meta_info_file
        self.path_key = f'{kind}_path'

        if self.backend_type == 'lmdb':
            if meta_info_file is not None:
                get_root_logger().warning(f'{where}: meta_info_file is ignored with io_backend lmdb; the '
                                          'LMDB\'s own meta_info.txt lists the images.')
            self.mode = 'lmdb'
            names = self.lmdb_names(key, root)
            self.backend_kwargs.update(db_paths=[root], client_keys=[kind])
            files = sorted(names)  # LMDB keys, as BasicSR's paths_from_lmdb
        elif meta_info_file is not None:
            self.mode = 'meta_info_file'
            files = self._from_meta_info_file(key, root)
        else:
            self.mode = 'folder'
            self.check_dir(key, root)
            if osp.isfile(osp.join(root, 'data.mdb')):
                raise ValueError(f'{where}: `{key}` {root} is an LMDB; set io_backend: {{type: lmdb}} for it.')
            files = sorted(paths_from_folder(root))
        self.paths = [{self.path_key: f} for f in files]
        if not self.paths:
            raise ValueError(f'{where}: no images found in `{key}` {root} ({self.mode} mode).')

    def _from_meta_info_file(self, key, root):
        self.check_dir(key, root)
        if not osp.isfile(self.meta_info_file):
            raise ValueError(f'{self.where}: `meta_info_file` does not exist: {self.meta_info_file}')
        with open(self.meta_info_file, 'r') as fin:
            lines = [line.strip() for line in fin.read().split('\n')]
        while lines and not lines[-1]:
            lines.pop()  # trailing newline(s)
        blank = [i + 1 for i, line in enumerate(lines) if not line]
        if blank:
            raise ValueError(f'{self.where}: meta_info_file {self.meta_info_file} has blank line(s) {blank[:10]}.')
        names = [line.split(' ')[0] for line in lines]
        missing = [n for n in names if not osp.isfile(osp.join(root, n))]
        if missing:
            raise ValueError(f'{self.where}: files listed in meta_info_file {self.meta_info_file} are missing in '
                             f'`{key}` {root}: {listing(missing)}')
        return [osp.join(root, n) for n in names]


@DATASET_REGISTRY.register()
class UnpairedDegradationDataset(TypeBalancedIndexing, data.Dataset):
    """Real degraded images of ``k`` labelled types plus independently drawn real clear images.

    Args:
        opt (dict): Options:

            sources (list[dict]): the ``k`` degraded sources; the label of a source is its position.
                Each has ``name`` (str, unique, returned as ``degradation``), ``dataroot_lq``
                (folder, or ``.lmdb`` folder with the lmdb backend) and optionally
                ``dataroot_gt`` (ground truth with the same names, e.g. SPA or RealBlur-J; paired
                and checked exactly as in :class:`MultiDegradationDataset`, with
                ``filename_tmpl``), ``io_backend`` (default: the dataset-level one) and
                ``meta_info_file`` (folder mode; lists gt names when ``dataroot_gt`` is given,
                lq names otherwise).
            dataroot_clear (str | None): folder or ``.lmdb`` of real clear images. Required in
                phase 'train', optional in 'val' / 'test'.
            clear_io_backend (dict | None): backend of the clear images. Default: ``io_backend``.
            clear_meta_info_file (str | None): optional list of the clear images (folder mode).
            io_backend (dict): default backend, ``{type: disk}`` (default) or ``{type: lmdb}``.
            balanced (bool): sample the types equally often. Default: True.
            samples_per_type (int | None): with ``balanced``, samples of each type per epoch.
                Default: the size of the largest source.
            phase (str): 'train', 'val' or 'test' (BasicSR adds it).
            scale (int): must be 1 (restoration); BasicSR adds it.
            gt_size (int): training crop size, required in phase 'train'.
            use_hflip, use_rot (bool): training flips / rotations. Default: False.
            mean, std (list[float] | None): optional normalisation of every image, as in BasicSR
                (the paper uses ``[-1, 1]``: ``mean = std = [0.5, 0.5, 0.5]``).

    Samples are dicts with ``lq`` (the degraded image, float32 RGB CHW in ``[0, 1]`` unless
    normalised), ``lq_path`` (file path or LMDB key), ``label`` (int, the source index) and
    ``degradation`` (the source name), plus:

    * ``clear`` / ``clear_path``: a real clear image, whenever ``dataroot_clear`` is given. In
      phase 'train' it is drawn uniformly at random, independently of the index, at every
      ``__getitem__`` call with Python's :mod:`random` (``random.randrange(num_clear)``; BasicSR
      seeds :mod:`random` in the main process and per data-loader worker, so runs are
      reproducible), then cropped at its own random position and flipped / rotated on its own:
      the clear image is unpaired with ``lq``. In 'val' / 'test' it is the full clear image
      ``index % num_clear``.
    * ``gt`` / ``gt_path``: the ground truth of the source's image, in 'val' / 'test' whenever
      the source has ``dataroot_gt``. In 'train' it is returned only if *every* source has
      ``dataroot_gt``, cropped and augmented exactly like ``lq``: the default collate needs all
      samples of a batch to share their keys, so with sources with and without gt no training
      sample carries it (it is not needed for unpaired training).

    In phase 'train' ``lq`` (and ``gt``) and ``clear`` are cropped to ``gt_size``; in 'val' /
    'test' full images are returned, whose sizes may differ between samples (use batch size 1).
    An image smaller than ``gt_size`` in training, a gt whose size differs from its lq's, or an
    undecodable image raises :class:`ValueError` naming the file when the sample is loaded (no
    padding). Missing folders, gt names that do not match the lq names, LMDBs without
    ``meta_info.txt``, empty sources and a missing ``dataroot_clear`` in training raise
    :class:`ValueError` when the dataset is built.

    Sampling is that of :class:`MultiDegradationDataset`: with ``balanced`` false the sources are
    concatenated, ``len = sum(source_sizes)``; with ``balanced`` true ``len = k *
    samples_per_type`` and index ``i`` holds type ``t = i % k`` and image ``(i // k + epoch *
    samples_per_type) % source_sizes[t]`` of that source, ``epoch`` being set by
    :meth:`set_epoch` (0 by default). The number of clear images does not affect the length.

    Attributes:
        labels (list[str]): source names, indexed by label.
        source_sizes (list[int]): number of degraded images of each source.
        num_types (int): ``k``.
        num_clear (int): number of clear images (0 when ``dataroot_clear`` is not given).
        has_gt (list[bool]): whether each source has ground truth.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        self.phase = opt.get('phase')
        if self.phase not in PHASES:
            raise ValueError(f'{NAME}: `phase` must be one of {PHASES}, got {self.phase!r}.')
        scale = opt.get('scale', 1) or 1
        if scale != 1:
            raise ValueError(f'{NAME}: only scale 1 (restoration) is supported, got scale {scale!r}.')
        self.gt_size, sources = check_crop_and_sources(opt, self.phase, NAME)
        default_backend = opt.get('io_backend') or {'type': 'disk'}
        self._sources = [self._make_source(i, s, default_backend) for i, s in enumerate(sources)]
        self.labels = [s.name for s in self._sources]
        self.has_gt = [s.has_gt for s in self._sources]
        self._init_indexing(opt, self.labels, [len(s) for s in self._sources], NAME)
        # Which sources return gt: all that have it in val/test; in train all or none (uniform batch keys).
        if self.phase == 'train' and not all(self.has_gt):
            self._return_gt = [False] * self.num_types
            if any(self.has_gt):
                with_gt = [s.name for s in self._sources if s.has_gt]
                get_root_logger().info(f'{NAME}: sources {with_gt} have dataroot_gt but not all sources do; '
                                       'training samples carry no gt (a batch must share its keys).')
        else:
            self._return_gt = list(self.has_gt)

        root = opt.get('dataroot_clear')
        if root is None:
            if self.phase == 'train':
                raise ValueError(f'{NAME}: option `dataroot_clear` (a folder or .lmdb of real clear images) is '
                                 'required in phase train: every training sample pairs a degraded image with '
                                 'an independently drawn clear one.')
            self._clear = None
        else:
            self._clear = _ImageSet(f'{NAME} clear images', 'dataroot_clear', root,
                                    opt.get('clear_io_backend') or default_backend,
                                    opt.get('clear_meta_info_file'), kind='clear')
        self.num_clear = len(self._clear) if self._clear is not None else 0

        self.use_hflip = bool(opt.get('use_hflip', False))
        self.use_rot = bool(opt.get('use_rot', False))
        self.mean = opt.get('mean')
        self.std = opt.get('std')

        # every image's header: unreadable / truncated files, sizes below gt_size, gt/lq size mismatches
        check_dataset_files(opt, train=self.phase == 'train')

        summary = ', '.join(f'{s.name}={len(s)} ({s.mode}{", with gt" if s.has_gt else ""})'
                            for s in self._sources)
        mode = f'balanced, {self.num_types} x {self.samples_per_type}' if self.balanced else 'concatenated'
        clear = f'{self.num_clear} clear images ({self._clear.mode})' if self._clear else 'no clear images'
        get_root_logger().info(f'{NAME}: {summary}; {clear}; {mode} = {len(self)} samples per epoch.')

    @staticmethod
    def _make_source(index, opt, default_backend):
        """A :class:`PairedSource` (lq paired with gt) or an lq-only :class:`_ImageSet`, with ``name`` and
        ``has_gt``."""
        name, where = check_source_opt(index, opt)
        if opt.get('dataroot_gt') is not None:
            source = PairedSource(index, opt, default_backend)
            source.has_gt = True
            return source
        if opt.get('filename_tmpl') not in (None, '{}'):
            get_root_logger().warning(f'{where}: filename_tmpl is ignored without dataroot_gt.')
        source = _ImageSet(where, 'dataroot_lq', opt.get('dataroot_lq'), opt.get('io_backend') or default_backend,
                           opt.get('meta_info_file'), kind='lq')
        source.index, source.name, source.has_gt = index, name, False
        return source

    # ------------------------------------------------------------------ loading
    def _check_crop_size(self, where, path, img, what):
        h, w = img.shape[:2]
        if h < self.gt_size or w < self.gt_size:
            raise ValueError(f'{where}: {what} {path} ({h}x{w}) is smaller than gt_size {self.gt_size}.')

    def _random_crop(self, imgs):
        """The same random ``gt_size`` square of every image of ``imgs`` (all of one size)."""
        h, w = imgs[0].shape[:2]
        top, left = random.randint(0, h - self.gt_size), random.randint(0, w - self.gt_size)
        return [img[top:top + self.gt_size, left:left + self.gt_size, ...] for img in imgs]

    def _to_tensor(self, img):
        tensor = img2tensor(img, bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(tensor, self.mean, self.std, inplace=True)
        return tensor

    def _load_degraded(self, index):
        label, within = self.locate(index)
        source = self._sources[label]  # opens its file client on first read, in each worker process
        lq_path = source.paths[within]['lq_path']
        img_lq = source.read(lq_path, 'lq')
        out = {'lq_path': lq_path, 'label': label, 'degradation': source.name}
        imgs = [img_lq]
        if self._return_gt[label]:
            gt_path = source.paths[within]['gt_path']
            img_gt = source.read(gt_path, 'gt')
            if img_gt.shape[:2] != img_lq.shape[:2]:
                (h_gt, w_gt), (h_lq, w_lq) = img_gt.shape[:2], img_lq.shape[:2]
                raise ValueError(f'{source.where}: gt {gt_path} is {h_gt}x{w_gt} (HxW) but lq {lq_path} is '
                                 f'{h_lq}x{w_lq}; they must be the same size.')
            imgs.append(img_gt)
            out['gt_path'] = gt_path
        if self.phase == 'train':
            self._check_crop_size(source.where, lq_path, img_lq, 'degraded image')
            imgs = augment(self._random_crop(imgs), self.use_hflip, self.use_rot)
            imgs = imgs if isinstance(imgs, list) else [imgs]  # augment unwraps one-image lists
        out['lq'] = self._to_tensor(imgs[0])
        if len(imgs) > 1:
            out['gt'] = self._to_tensor(imgs[1])
        return out

    def _load_clear(self, index):
        if self.phase == 'train':
            which = random.randrange(self.num_clear)
        else:
            which = int(index) % self.num_clear
        path = self._clear.paths[which]['clear_path']
        img = self._clear.read(path, 'clear')
        if self.phase == 'train':
            self._check_crop_size(self._clear.where, path, img, 'clear image')
            img = augment(self._random_crop([img]), self.use_hflip, self.use_rot)
        return {'clear': self._to_tensor(img), 'clear_path': path}

    def __getitem__(self, index):
        sample = self._load_degraded(index)
        if self._clear is not None:
            sample.update(self._load_clear(index))
        return sample
