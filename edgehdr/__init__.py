"""EdgeHDR: HDR imaging on edge devices.

The frame's journey: a bracket source captures N exposures, ``edgehdr.hdr``
aligns and merges them into a linear radiance map, ``edgehdr.tonemap`` turns
that into an sRGB frame, ``edgehdr.quality`` scores results against ground
truth from ``edgehdr.synth``. Colour order everywhere inside the package is RGB.
"""

__version__ = "0.1.0"

import os as _os

# numba's parallel kernels run on GNU OpenMP (libgomp) here, whose idle workers spin for GOMP_SPINCOUNT rounds of
# a pause instruction (300,000 by default, several milliseconds on recent x86 cores) before they sleep: that spin
# holds a core the next library wants, e.g. ONNX Runtime's threads right after the merge network's encoding (the
# network's run took 9.8-12.2 ms after the encoding kernel against 5.7-9.8, mostly about 6, at 10,000 rounds;
# 1080p, two cores). libgomp reads this once, when numba first loads it, so it is set here, at import, unless the
# user chose a spin count or a wait policy. Being the environment, it also reaches child processes and any other
# copy of libgomp loaded after this import (PyTorch's, in the training recipes); one loaded before keeps its own.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"

from edgehdr.bracket import Bracket

__all__ = ["Bracket", "__version__"]
