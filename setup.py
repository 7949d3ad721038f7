import os
import os.path as osp
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.errors import BaseError, CCompilerError


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

    The ops only make the CPU faster, so a build that cannot compile them
    (no C++ compiler, one that will not run or is too old for torch's
    C++20 headers) installs the pure-Python package and says why, instead
    of failing the install; ``DYNCONV_MM_REQUIRE_CPU_OPS=1``
    (tools/install.sh) makes it fail.
    """
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return {}

    class OptionalBuildExtension(BuildExtension):
        """torch's BuildExtension, which skips the ops when they fail to
        compile unless DYNCONV_MM_REQUIRE_CPU_OPS=1."""

        def build_extensions(self) -> None:
            try:
                super().build_extensions()
            # distutils' compile and link errors, torch's RuntimeError from
            # a ninja build, and a compiler that is missing or will not run
            # (torch asks it for its version first)
            except (BaseError, CCompilerError, OSError, RuntimeError,
                    subprocess.SubprocessError) as error:
                if os.environ.get('DYNCONV_MM_REQUIRE_CPU_OPS') == '1':
                    raise
                names = ', '.join(ext.name for ext in self.extensions)
                print(f'WARNING: dynconv_mm: building {names} failed '
                      f'({type(error).__name__}: {error}); installing '
                      'without the compiled CPU ops: the same values come '
                      'from PyTorch, more slowly on the CPU. Set '
                      'DYNCONV_MM_REQUIRE_CPU_OPS=1 to make this an '
                      'error.', file=sys.stderr)

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
                cmdclass={'build_ext': OptionalBuildExtension})


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
