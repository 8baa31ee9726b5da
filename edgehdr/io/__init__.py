"""File I/O: radiance maps (.hdr, .exr, .pfm), LDR exposure stacks, atomic writes."""

from edgehdr.io.atomic import (
                               atomic_output,
                               dumps_json,
                               null_undefined,
                               write_bytes_atomic,
                               write_json_atomic,
                               write_text_atomic,
)
from edgehdr.io.hdr_files import RADIANCE_SUFFIXES, read_radiance, write_radiance
from edgehdr.io.ldr_stack import (
                               LDR_SUFFIXES,
                               read_exif_exposure,
                               read_ldr_image,
                               read_ldr_stack,
                               read_list_file,
                               write_ldr_image,
)

__all__ = [
    "atomic_output",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "dumps_json",
    "null_undefined",
    "read_radiance",
    "write_radiance",
    "RADIANCE_SUFFIXES",
    "read_ldr_stack",
    "read_ldr_image",
    "read_list_file",
    "read_exif_exposure",
    "LDR_SUFFIXES",
    "write_ldr_image",
]

