"""Data at rest is private to the owner and group: files 0o640, directories 0o750."""

from __future__ import annotations

import os
import stat

import pytest
from bluesky.plans import count

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import take_reference_images

TINY = {"electron": {"resolution": [128, 96]}, "ion": {"resolution": [128, 96]}}


def _modes(root):
    """{path relative to root: permission bits} of every file and directory under root."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return out


@pytest.fixture
def loose_umask():
    """The process umask a desktop account usually has (0o022: world-readable files)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize("serve", [False, True])
def test_data_at_rest_is_private_to_owner_and_group(tmp_path, loose_umask, serve):
    data = tmp_path / "data"
    s = setup_session(config=TINY, data_dir=data, seed=3, serve=serve)
    try:
        s.RE(take_reference_images(s.microscope))
        s.RE(count([s.microscope.sem], 2))
    finally:
        s.close()
    assert os.umask(0o022) == 0o022  # given back by close
    modes = _modes(data)
    files = {p: m for p, m in modes.items() if not os.path.isdir(data / p)}
    dirs = {p: m for p, m in modes.items() if os.path.isdir(data / p)}
    names = set(files)
    assert "catalog.db" in names and "tables.duckdb" in names
    assert any(p.startswith("backup/") and p.endswith(".jsonl") for p in names)
    assert sum(p.endswith(".tif") for p in names) == 2 + 2
    for path, mode in files.items():
        assert mode & 0o027 == 0, f"{path}: {oct(mode)}"  # no group write, nothing for others
    for path, mode in files.items():
        if path.endswith((".tif", ".jsonl")) or path in ("catalog.db", "tables.duckdb"):
            assert mode == 0o640, f"{path}: {oct(mode)}"
    for path, mode in dirs.items():
        assert mode == 0o750, f"{path}: {oct(mode)}"


def test_an_existing_world_readable_data_dir_is_tightened_and_umask_none_keeps_modes(
        tmp_path, loose_umask):
    data = tmp_path / "data"
    s = setup_session(config=TINY, data_dir=data, seed=3, umask=None)
    try:
        s.RE(count([s.microscope.sem], 1))
    finally:
        s.close()
    before = _modes(data)
    assert before["."] == 0o755 and before["images"] == 0o755
    assert any(p.endswith(".tif") and m == 0o644 for p, m in before.items())

    s = setup_session(config=TINY, data_dir=data, seed=3)  # default: private
    try:
        s.RE(count([s.microscope.sem], 1))
    finally:
        s.close()
    after = _modes(data)
    for d in (".", "images", "backup", "data"):
        assert after[d] == 0o750, d  # others can no longer reach the older files
    new_tiffs = [p for p in after if p.endswith(".tif") and p not in before]
    assert new_tiffs and all(after[p] == 0o640 for p in new_tiffs)


@pytest.mark.parametrize("bad", [-1, 0o1000, 0.5, True, "027"])
def test_a_bad_umask_is_refused_before_anything_is_made(tmp_path, bad):
    previous = os.umask(0o022)
    try:
        with pytest.raises(ValueError,
                           match=rf"umask must be None or an integer 0\.\.0o777.*{bad!r}"):
            setup_session(config=TINY, data_dir=tmp_path / "d", umask=bad)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)
    assert not (tmp_path / "d").exists()
