"""EdgeHDR: HDR imaging on edge devices.

The frame's journey: a bracket source captures N exposures, ``edgehdr.hdr``
aligns and merges them into a linear radiance map, ``edgehdr.tonemap`` turns
that into an sRGB frame, ``edgehdr.quality`` scores results against ground
truth from ``edgehdr.synth``. Colour order everywhere inside the package is RGB.
"""

__version__ = "0.1.0"

from edgehdr.bracket import Bracket

__all__ = ["Bracket", "__version__"]
