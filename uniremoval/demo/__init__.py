"""``make demo`` / ``python -m uniremoval.demo``: Uni-Removal's whole pipeline at toy scale on CPU.

1. builds the embedded haze/rain/blur dataset (:mod:`uniremoval.demo.data`: photos that ship
   with scikit-image, scikit-learn and matplotlib, nothing is downloaded), with a synthetic
   train/val split and an unpaired "real" split made with *different* degradation settings;
2. trains one tiny MPRNet teacher per degradation type (``uniremoval/demo/configs/train_teacher_tiny.yml``);
3. knowledge transfer: distils the three teachers into one student
   (``uniremoval/demo/configs/kt_tiny.yml``, arXiv 2307.05075 §III-B);
4. domain adaptation: fine-tunes the student on the unpaired real split
   (``uniremoval/demo/configs/da_tiny.yml``, §III-C), its ground truth kept aside for scoring only;
5. evaluates every stage (PSNR/SSIM per type on the synthetic val split and on the real split,
   no-reference scores on the real split, through :func:`uniremoval.metrics.scoring.score_images`), saves
   image grids and loss curves, and writes ``<out>/report.md`` and ``<out>/report.html``.

``--kt-ablation`` / ``--da-ablation`` also train the loss ablations of both stages. The numbers show
the pipeline working end to end on ~100k-parameter networks trained for minutes, not the paper's.

Modules: :mod:`~uniremoval.demo.data` (the dataset builder, also ``python -m uniremoval.demo.data``),
:mod:`~uniremoval.demo.options` (option builders, ablations, metric options),
:mod:`~uniremoval.demo.pipeline` (training stages, scoring, :func:`~uniremoval.demo.pipeline.run_demo`),
:mod:`~uniremoval.demo.report` (tables, grids, curves, Markdown and HTML) and ``__main__`` (the command line).
This package imports none of them, so that ``python -m uniremoval.demo.data`` runs the builder alone.
"""
