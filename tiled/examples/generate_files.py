"""A directory of example files to serve with ``tiled serve directory``.

TIFF images (some in sub-directories, some named as sequences), an Excel workbook of two
sheets and a CSV file. Run as ``python -m tiled.examples.generate_files DIRECTORY``; it needs
tifffile and openpyxl.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy
import pandas

# Where the images go, relative to the root; A0001..A0003 and B0001..B0002 form sequences.
TIFF_PATHS: list[tuple[str, ...]] = [
    ("a.tif",),
    ("b.tif",),
    ("c.tif",),
    ("more", "A0001.tif"),
    ("more", "A0002.tif"),
    ("more", "A0003.tif"),
    ("more", "B0001.tif"),
    ("more", "B0002.tif"),
    ("more", "even_more", "e.tif"),
    ("more", "even_more", "f.tif"),
]

# Every image holds this array; the tables hold these frames.
data = numpy.ones((100, 100))
df1 = pandas.DataFrame({"A": [1, 2, 3], "B": [4, 5, 6]})
df2 = pandas.DataFrame({"C": [10, 20, 30], "D": [40, 50, 60]})


def generate_files(root_path: str | Path) -> None:
    """Write the example files under ``root_path`` (created as needed)."""
    import tifffile

    root = Path(root_path)
    for parts in TIFF_PATHS:
        path = root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, data)
    with pandas.ExcelWriter(root / "tables.xlsx") as writer:
        df1.to_excel(writer, sheet_name="Sheet 1", index=False)
        df2.to_excel(writer, sheet_name="Sheet 2", index=False)
    df1.to_csv(root / "another_table.csv")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tiled.examples.generate_files DIRECTORY", file=sys.stderr)
        return 2
    try:
        generate_files(argv[0])
    except ImportError as err:
        print(f"These examples need tifffile and openpyxl ({err}).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
