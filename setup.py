"""Packaging glue that pyproject.toml cannot express: the top-level kernels/ folder (CUDA C for the CuPy
backend) ships inside the package as ``diffcore._kernels``, never as a bare top-level ``kernels`` module."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["diffcore", "diffcore.*"]) + ["diffcore._kernels"],
    package_dir={"diffcore._kernels": "kernels"},
    package_data={"diffcore._kernels": ["*.cu", "*.cuh"], "diffcore.schemas": ["*.json"]},
    include_package_data=True,
)
