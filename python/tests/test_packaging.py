"""The installed extension is stripped of debug info (python/pyproject.toml
`strip = true`; `MATURIN_STRIP=false pip install ./python` keeps it)."""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import pytest

import tessera._tessera as ext


def elf_section_names(path: Path) -> list:
    """The section names of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        pytest.skip(f"{path.name} is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    strtab = data[str_off : str_off + str_size]
    names = []
    for i in range(shnum):
        name = section(i)[0]
        names.append(strtab[name : strtab.index(b"\0", name)].decode())
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the extension as an ELF file (Linux)")
@pytest.mark.skipif(os.environ.get("MATURIN_STRIP") == "false", reason="MATURIN_STRIP=false keeps debug info")
def test_the_extension_carries_no_debug_info():
    so = Path(ext.__file__)
    names = elf_section_names(so)
    assert ".text" in names, names
    debug = [n for n in names if n.startswith(".debug")]
    assert not debug, f"{so.name} ({so.stat().st_size >> 20} MB) carries {debug}"
