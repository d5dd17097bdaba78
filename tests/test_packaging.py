"""pyproject.toml's package list covers the source tree: an editable install hides a
package missing from ``packages``, a wheel silently leaves it out."""

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ROOTS = {"edgecc": "edgecc", "passes": "edgecc.passes", "targets": "edgecc.targets"}


def _config():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _source_packages():
    found = {}
    for folder, name in SOURCE_ROOTS.items():
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                pkg = name if rel == "." else name + "." + rel.replace(os.sep, ".")
                found[pkg] = os.path.relpath(dirpath, ROOT).replace(os.sep, "/")
    return found


def test_every_source_package_is_listed():
    listed = set(_config()["packages"])
    missing = sorted(set(_source_packages()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_every_listed_package_maps_to_its_folder():
    config = _config()
    package_dir = config["package-dir"]
    source = _source_packages()
    for pkg in config["packages"]:
        assert pkg in source, f"{pkg} is listed but has no folder with __init__.py"
        # setuptools resolves a package through its closest mapped ancestor
        parts = pkg.split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in package_dir:
                folder = "/".join([package_dir[prefix], *parts[i:]])
                break
        else:
            folder = pkg.replace(".", "/")
        assert folder == source[pkg], f"{pkg} maps to {folder}, its code is in {source[pkg]}"


def test_yaml_and_templates_ship_as_package_data():
    data = _config().get("package-data", {})
    for pkg, folder in _source_packages().items():
        path = os.path.join(ROOT, folder)
        shipped = [f for f in os.listdir(path) if f.endswith((".yaml", ".txt"))]
        if shipped:
            assert pkg in data, f"{pkg} has {shipped} but no package-data entry"
