"""Shared fixtures: an embedded Tiled catalog in a temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tmp_catalog_dir(tmp_path_factory):
    """Folder of the session-wide embedded catalog (see ``tmp_catalog``)."""
    return tmp_path_factory.mktemp("catalog")


@pytest.fixture(scope="session")
def tmp_catalog(tmp_catalog_dir):
    """A real embedded Tiled catalog (SQLite + DuckDB + zarr) shared by the test session.

    The first start takes a few seconds; runs written by one test stay visible to the
    next, so look runs up by uid rather than by position.
    """
    from mracq.storage import close_catalog, open_catalog

    client = open_catalog(tmp_catalog_dir)
    yield client
    close_catalog(client)
