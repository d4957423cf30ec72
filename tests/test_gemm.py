"""CPU GEMM (darknet_src/src/gemm*.c): builds tests/c/test_gemm.c with gcc
against the GEMM sources and the few library files they need, then runs it.

The C program re-runs itself once per kernel (PYDARKNET_GEMM=generic, avx2,
avx512; those the CPU lacks are reported as skipped) and checks random
problems against a double-precision reference, the epilogue, special cases
and bit-identity across 1..4 threads; it exits non-zero on any wrong value.
A second build under AddressSanitizer + UndefinedBehaviorSanitizer (fewer
random problems) catches reads or writes outside the matrices."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "darknet_src", "src")
INCLUDE = os.path.join(ROOT, "darknet_src", "include")
TEST_SOURCE = os.path.join(ROOT, "tests", "c", "test_gemm.c")
LIBRARY_SOURCES = ["pool.c", "error.c", "util.c", "activations.c"]
# the library's own flags (darknet_src/Makefile), without -fvisibility
CFLAGS = ["-std=gnu11", "-pthread", "-fno-math-errno", "-ffp-contract=off", "-Wall", "-Wextra",
          "-Wno-unused-parameter"]


def sources():
    gemm = sorted(os.path.join(SRC, f) for f in os.listdir(SRC)
                  if f.startswith("gemm") and f.endswith(".c"))
    assert gemm, "no gemm*.c sources"
    return gemm + [os.path.join(SRC, f) for f in LIBRARY_SOURCES] + [TEST_SOURCE]


def build(out, extra_flags):
    cmd = ["gcc", *CFLAGS, *extra_flags, "-I" + INCLUDE, "-I" + SRC, *sources(), "-o", out,
           "-lm"]
    return subprocess.run(cmd, capture_output=True, text=True)


def run(binary, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "PYDARKNET_GEMM"}
    env.update(env_extra)
    proc = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "gemm tests passed" in proc.stdout, output
    assert "kernel generic: passed" in proc.stdout, output
    return proc.stdout


def test_gemm(tmp_path):
    binary = str(tmp_path / "test_gemm")
    built = build(binary, ["-O3"])
    assert built.returncode == 0, built.stderr
    out = run(binary)
    print(out)


def test_gemm_sanitizers(tmp_path):
    binary = str(tmp_path / "test_gemm_sanitized")
    built = build(binary, ["-O1", "-g", "-fsanitize=address,undefined",
                           "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"])
    if built.returncode != 0:
        pytest.skip("gcc cannot build with -fsanitize=address,undefined here: " + built.stderr[-500:])
    out = run(binary, GEMM_TEST_QUICK="1", ASAN_OPTIONS="abort_on_error=0:detect_leaks=1",
              UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    print(out)
