"""TEM virus benchmark workflow: the logic behind every Snakemake rule."""
