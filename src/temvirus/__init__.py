"""TEM virus benchmark workflow: the logic behind every Snakemake rule."""

#: the package's version (pyproject.toml reads it from here; CITATION.cff repeats it)
__version__ = "0.1.0"
