"""Package metadata for uniremoval, a BasicSR plugin for Uni-Removal and ADS.

Install torch/torchvision and BasicSR first (BasicSR 1.4.2 ships only an sdist, whose setup.py
fails on Python 3.13: ``tools/install_basicsr.py`` builds it; see the README, "Install"), then
``pip install -e .``.
"""
from os import path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements():
    with open(osp.join(HERE, 'requirements.txt'), encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


def read_version():
    with open(osp.join(HERE, 'uniremoval', 'version.py'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=')[1].strip().strip("'\"")
    raise RuntimeError('uniremoval/version.py defines no __version__')


setup(
    name='uniremoval',
    version=read_version(),
    description='Uni-Removal (knowledge transfer + domain adaptation) and ADS as a BasicSR plugin',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['uniremoval', 'uniremoval.*']),
    include_package_data=True,
    package_data={
        'uniremoval.metrics': ['brisque_live_model.npz', 'BRISQUE_LIVE_LICENSE.txt'],
        # demo-scale checkpoints made by `python -m uniremoval.demo.pretrain` (see its manifest.json)
        'uniremoval.demo': ['checkpoints/*.pth', 'checkpoints/*.json', 'checkpoints/*.yml', 'configs/*.yml',
                            'configs/ads/*.yml'],
    },
    install_requires=read_requirements(),
    extras_require={
        'test': ['pytest>=7', 'flake8>=7', 'isort>=5.12', 'onnx>=1.16', 'onnxruntime>=1.18',
                 'selenium>=4.10'],
        # the deployment engine: uniremoval-export-onnx and uniremoval-restore --engine onnxruntime
        'onnx': ['onnx>=1.16', 'onnxruntime>=1.18'],
        # the demo's loss curves, and more bundled photos for the demo data
        'demo': ['matplotlib>=3.7', 'scikit-learn>=1.3'],
        # uniremoval-app, the local web page
        'app': ['gradio>=5.23'],
    },
    entry_points={
        'console_scripts': [
            'basicsr = uniremoval.commands.basicsr_cli:main',
            'uniremoval-restore = uniremoval.commands.restore:main',
            'uniremoval-evaluate = uniremoval.commands.evaluate:main',
            'uniremoval-export-onnx = uniremoval.commands.export_onnx:main',
            'uniremoval-ads-select = uniremoval.commands.ads_select:main',
            'uniremoval-ads-compare = uniremoval.commands.ads_compare:main',
            'uniremoval-app = uniremoval.commands.app:main',
        ],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Topic :: Scientific/Engineering :: Image Processing',
    ],
)
