"""The engine builds standalone with `make -C darknet_src`, exports exactly
the functions of its public header, and the library never ends the process."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEADER = REPO / "darknet_src" / "include" / "darknet.h"


def header_functions() -> set[str]:
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    return set(re.findall(r"\b(dn_\w+)\s*\(", text)) - {"dn_network_params", "dn_detect_params"}


def exported(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], check=True,
                         capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if " T " in line}


@pytest.mark.slow
def test_make_builds_the_library_standalone(tmp_path: Path) -> None:
    if not shutil.which("make"):
        pytest.skip("needs make")
    lib = tmp_path / "libpydarknet.so"
    subprocess.run(["make", "-C", str(REPO / "darknet_src"), "-j2", f"BUILD={tmp_path / 'obj'}",
                    f"LIB={lib}"], check=True, capture_output=True)
    assert exported(lib) == header_functions()


def test_installed_library_exports_the_header() -> None:
    import pydarknet

    lib = Path(pydarknet.__file__).parent / "libpydarknet.so"
    assert exported(lib) == header_functions()


def test_no_exit_abort_or_print_in_the_engine() -> None:
    """The library reports failures; it never ends the process or prints."""
    pattern = re.compile(r"\b(exit|abort|_exit|printf|puts|perror)\s*\(|fprintf\s*\(\s*std(out|err)")
    offenders = []
    for path in (REPO / "darknet_src" / "src").rglob("*"):
        if path.suffix not in (".c", ".h", ".cu", ".cuh"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//")[0]
            if pattern.search(code) and not code.lstrip().startswith(("*", "/*")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
