"""The documentation in docs/ against the code: the configuration reference is generated from
iggy_fast/config.py and must match it, and no document or the README links outside the
repository (they are read in a clone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from iggy_fast import config

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOCS = [os.path.join(ROOT, "README.md"),
        *(os.path.join(ROOT, "docs", n) for n in sorted(os.listdir(os.path.join(ROOT, "docs")))
          if n.endswith(".md"))]


def test_configuration_reference_is_generated_from_the_defaults():
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        committed = f.read()
    generated = subprocess.run([sys.executable, "-m", "iggy_fast.config", "--reference"],
                               capture_output=True, text=True, check=True).stdout
    assert generated == config.reference()
    assert committed == generated, ("docs/configuration.md is stale: run "
                                    "python -m iggy_fast.config --reference > docs/configuration.md")


def test_every_default_has_a_description_and_the_variable_it_documents():
    keys = {".".join(path) for path, _ in config._leaves(config.DEFAULTS)}
    assert keys == set(config.DESCRIPTIONS)
    for path, _ in config._leaves(config.DEFAULTS):
        variable = "IGGY_" + "_".join(path).upper()
        assert f"`{variable}`" in config.reference()
        # The name the reference gives is the one the loader reads for this key.
        if variable in config._ROOT_ENV:
            assert config._ROOT_ENV[variable] == path
        else:
            assert config._env_path(config.SCHEMA, variable[5:].split("_")) == list(path)


def test_documents_link_nowhere_outside_the_repository():
    for path in DOCS:
        with open(path) as f:
            text = f.read()
        assert "../shared" not in text and "PROTOCOL.md" not in text, path
        prose = re.sub(r"`[^`]*`", "", text)     # layouts in code spans look like links
        for target in re.findall(r"\]\(([^)]+)\)", prose):
            assert "://" not in target, (path, target)
            resolved = os.path.normpath(os.path.join(os.path.dirname(path),
                                                     target.split("#")[0]))
            assert resolved.startswith(os.path.normpath(ROOT)) and os.path.exists(resolved), \
                (path, target)
