"""The native sentence scan (summarizer/_splitter.c). Optional: where it can't be compiled, the
package installs without it and summarizer.split runs its Python reference, with the same output."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("summarizer._splitter", ["summarizer/_splitter.c"], optional=True)])
