import os.path as osp
import sys

from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(osp.dirname(__file__), 'dynconv_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def cpu_extensions() -> dict:
    """The compiled CPU ops (``dynconv_mm/execution/csrc``), built against
    the torch the build sees. tools/install.sh builds without isolation,
    i.e. against the venv's torch. An isolated build has no torch: the
    package is then pure Python, and computes the same in PyTorch
    (``dynconv_mm.execution.cpu_ops`` says so).
    """
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}
    # OpenMP: the ops split their loops over torch's threads, through the
    # OpenMP runtime torch has already loaded.
    openmp = ['-fopenmp'] if sys.platform.startswith('linux') else []
    extension = CppExtension(
        'dynconv_mm._cpu_ops',
        [f'dynconv_mm/execution/csrc/{name}.cpp'
         for name in ('bindings', 'attention_cpu', 'sample_kernel_cpu',
                      'sample_gemm_cpu', 'sample_conv_cpu', 'unfold_cpu')],
        extra_compile_args=['-O3', *openmp],
        extra_link_args=openmp)
    return dict(ext_modules=[extension],
                cmdclass={'build_ext': BuildExtension})


setup(
    name='dynconv_mm',
    version=read_version(),
    description='Dynamic convolution (DynamicConv, ODConv, DyNet) for '
    'MMDetection and MMPose',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    python_requires='>=3.9',
    # Supported versions: tested together on torch 2.14.1 / torchvision
    # 0.29.1. mmcv must be built with its ops (mmdet imports mmcv.ops);
    # tools/install.sh builds it from source. mmpose is optional (keypoint
    # configs) and is installed without its unbuildable `chumpy` dependency.
    install_requires=[
        'torch>=2.1',
        'torchvision>=0.16',
        'mmcv>=2.0.0,<2.2.0',
        'mmengine>=0.10.0,<0.11',
        'mmdet>=3.1.0,<3.4',
        'pycocotools>=2.0.7',
        'numpy>=1.24,<3',
        'setuptools<81',
    ],
    extras_require={
        'pose': ['mmpose>=1.3.0,<1.4', 'xtcocotools>=1.14'],
        'tests': ['pytest>=8'],
    },
    zip_safe=False,
    **cpu_extensions(),
)
