"""CUDA C sources of the ``cupy`` statistics backend, shipped as ``diffcore._kernels`` (see setup.py).

``drift.cuh`` holds the per-element semantics as ``__host__ __device__`` code (also built with g++ by the
conformance tests); ``drift.cu`` holds the kernels. ``diffcore.backends.cupy_backend`` reads both with
``importlib.resources`` and compiles them with ``cupy.RawModule``. There is no Python here to import.
"""
