"""Send a Snakemake script's logging, warnings and tqdm progress to the rule's log file."""

import logging
import sys


def log_to(path: str) -> None:
    sys.stderr = open(path, "w", buffering=1)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.captureWarnings(True)
