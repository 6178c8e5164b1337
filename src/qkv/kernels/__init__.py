"""qkv's accelerated kernels: C sources, their build, and the autograd/custom-op wrappers that call them.

``qkv.functional`` holds the readable reference algorithms in torch ops; this package holds what makes some of
them faster on particular hardware (see :mod:`qkv.kernels.native` for the build, :mod:`qkv.kernels.short` for
whole-head attention over short sequences).
"""
