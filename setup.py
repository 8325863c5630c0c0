"""The one thing pyproject.toml cannot declare without a warning: the C extension.

kprobegen.report._logscan is the report parser's line scanner in C (kprobegen/report/_logscan.c), for the
1 M report lines/s of bench/parse_bench.py; kprobegen.report falls back to the same scanner in
Python when it is not built. Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kprobegen.report._logscan",
            sources=["kprobegen/report/_logscan.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        ),
    ],
)
