"""Progress bars for the long parts that are not Lightning fits: sampling, evaluation, evaluator training,
encoding, re-evaluation. On stderr, like Lightning's; they disappear when done (`leave=False`)."""

from __future__ import annotations

from typing import Iterable, Optional

from tqdm.auto import tqdm


def progress(iterable: Optional[Iterable] = None, desc: str = "", total: Optional[int] = None,
             unit: str = "it", leave: bool = False, disable: bool = False) -> tqdm:
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, dynamic_ncols=True, mininterval=0.5,
                disable=disable)
