"""A mixture of paired datasets, one per degradation type, for Uni-Removal's knowledge transfer.

Uni-Removal (arXiv 2307.05075, Sec. III-B and IV-A1) trains its student on a mixture of haze
(RESIDE OTS), rain (Rain1400) and blur (GoPro) pairs, each sample carrying the label of its
degradation type. :class:`MultiDegradationDataset` reads any number of such paired sources
(folder, meta-info-file or LMDB, exactly as BasicSR's ``PairedImageDataset``) and either
concatenates them or samples the types equally often.

Each source is a :class:`uniremoval.data.data_util.PairedSource` (pairing checks, file client,
image decoding and their error messages); the index layout is
:class:`uniremoval.data.data_util.TypeBalancedIndexing`.
"""
from torch.utils import data as data
from torchvision.transforms.functional import normalize

from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import get_root_logger, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from uniremoval.data.data_util import (PHASES, PairedSource, TypeBalancedIndexing, check_contrast_range,
                                       check_crop_and_sources, check_dataset_files, random_intensity_affine)


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
            contrast_range (list[float] | None): training only; when set, each pair is mapped by
                :func:`~uniremoval.data.data_util.random_intensity_affine` (``x -> a x + b``,
                ``a`` in this range, the same map for gt and lq) after the crop. Default: None (off).
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
        self._sources = [PairedSource(i, s, default_backend) for i, s in enumerate(sources)]
        self.labels = [s.name for s in self._sources]
        self._init_indexing(opt, self.labels, [len(s) for s in self._sources], 'MultiDegradationDataset')

        self.use_hflip = bool(opt.get('use_hflip', False))
        self.use_rot = bool(opt.get('use_rot', False))
        self.contrast_range = check_contrast_range(opt.get('contrast_range'), 'MultiDegradationDataset')
        self.mean = opt.get('mean')
        self.std = opt.get('std')

        # every image's header: unreadable / truncated files, sizes below gt_size, gt/lq size mismatches
        check_dataset_files(opt, train=self.phase == 'train')

        summary = ', '.join(f'{s.name}={len(s)} ({s.mode})' for s in self._sources)
        mode = (f'balanced, {self.num_types} x {self.samples_per_type}' if self.balanced else 'concatenated')
        get_root_logger().info(f'MultiDegradationDataset: {summary}; {mode} = {len(self)} samples per epoch.')

    # ------------------------------------------------------------------ loading
    def __getitem__(self, index):
        label, within = self.locate(index)
        source = self._sources[label]  # opens its file client on first read, in each worker process
        gt_path, lq_path = source.paths[within]['gt_path'], source.paths[within]['lq_path']
        img_gt = source.read(gt_path, 'gt')
        img_lq = source.read(lq_path, 'lq')
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
            if self.contrast_range is not None:
                img_gt, img_lq = random_intensity_affine([img_gt, img_lq], self.contrast_range)

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
