"""Manual interoperability check against a real OpenFIBSEM (not part of the test suite).

OpenFIBSEM is not a dependency. Install it in a throwaway environment, then run this with
the project's Python, pointing at that environment's interpreter::

    python -m venv /tmp/fibvenv && /tmp/fibvenv/bin/pip install fibsem==0.5.3
    python tests/storage/openfibsem_check.py --python /tmp/fibvenv/bin/python

It writes a TIFF with :func:`fibsem_ophyd.storage.write_tiff`, loads it with
``fibsem.structures.FibsemImage.load`` and checks that OpenFIBSEM's ``metadata.to_dict()``
equals the dict we wrote (so every field was understood, with the same values and units),
then saves it with ``FibsemImage.save`` and reads that back with our ``read_tiff``.
The golden files in ``tests/storage/data`` were produced this way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

LOADER = textwrap.dedent(
    """
    import json, sys
    from fibsem.structures import FibsemImage
    src, dst, expected = sys.argv[1:4]
    img = FibsemImage.load(src)
    assert img.metadata is not None, "FibsemImage.load could not parse the metadata"
    theirs = img.metadata.to_dict()
    ours = json.load(open(expected))
    assert theirs == ours, {"ours": ours, "theirs": theirs}
    assert img.data.shape == (64, 96), img.data.shape
    img.save(dst)
    print("OpenFIBSEM", __import__("fibsem").__version__, "loaded and re-saved", src)
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="interpreter with fibsem installed")
    args = parser.parse_args()

    import numpy as np

    from fibsem_ophyd.storage import read_tiff, write_tiff
    from tests.storage.test_metadata import full_metadata

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        meta = full_metadata()
        data = (np.arange(64 * 96) % 251).astype(np.uint8).reshape(64, 96)
        write_tiff(tmp / "ours.tif", data, meta)
        (tmp / "ours.json").write_text(json.dumps(meta))
        subprocess.run(
            [args.python, "-c", LOADER, str(tmp / "ours.tif"), str(tmp / "theirs.tif"),
             str(tmp / "ours.json")],
            check=True,
        )
        back = read_tiff(tmp / "theirs.tif")
        assert back.metadata == json.loads(json.dumps(meta))
        assert np.array_equal(back.data, data)
    print("OK: OpenFIBSEM reads our TIFFs and we read OpenFIBSEM's, metadata identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
