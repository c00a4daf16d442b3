"""Snakemake script: fetch one ImageNet weights file, checking the hash prefix of its name.

The URL comes from ``weights.base_url`` here, not from the rule's params: where the file is
fetched from does not change what it is (its name, or its recorded hash, says that), so a
changed mirror must not re-run the job, which would delete the file already verified.
"""

from temvirus.smk import run_rule
from temvirus.weights import fetch_weights_file, file_source_url

run_rule(
    snakemake,
    lambda smk: fetch_weights_file(
        file_source_url(smk.wildcards.filename, smk.config["weights"]["base_url"]), smk.output.weights
    ),
)
