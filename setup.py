"""Packaging beyond pyproject.toml: the top-level recipes/ and eval/ folders ship inside the wheel.

Users browse them at the repository's top level; installed, they are the packages ``hfprune.recipes`` and
``hfprune.benchmark_specs`` (YAML package data, read with importlib.resources by :mod:`hfprune.resources`).
"""

from setuptools import find_packages, setup

SHIPPED = {"hfprune.recipes": "recipes", "hfprune.benchmark_specs": "eval"}

setup(
    packages=find_packages(include=["hfprune", "hfprune.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={package: ["*.yaml"] for package in SHIPPED},
)
