"""Same bytes on any CPU code path: `python -m pipeline.align.stage` under different instruction-set settings.

Torch picks its kernels by CPU (ATen's vectorised code, oneDNN's ISA, MKL's code path); the
detector's floats differ in the last bits between them. The stage snaps points to a 1/64-pixel
grid, computes the similarity in plain Python floats and warps in integer fixed point, so the
aligned files must be byte-identical.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.params import Params
from tests.align.project import Project, child_env, run_align

CODE_PATHS = {
    "native": {},
    "portable": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"},
}


def _torch_capability(env: dict[str, str], root: Path) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run(
        [sys.executable, "-c", code], env=child_env(root, **env), capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.integration
def test_two_cpu_code_paths_give_byte_identical_aligned_files(
    tiny_raw: Path, tiny_manifest: pd.DataFrame, params: Params, tmp_path: Path
) -> None:
    native, portable = (_torch_capability(env, tmp_path) for env in CODE_PATHS.values())
    assert portable == "DEFAULT" and native != portable, (native, portable)  # the two runs really differ
    outs = {}
    for name, env in CODE_PATHS.items():
        project = Project(tmp_path / name, tiny_raw, params, tiny_manifest)
        run_align(project.layout.root, **env)
        outs[name] = project.aligned_bytes()
    a, b = outs["native"], outs["portable"]
    assert len(a) == 16 and a.keys() == b.keys()
    differ = sorted(k for k in a if a[k] != b[k])
    detail = []
    for k in differ[:3]:
        za, zb = (np.load(tmp_path / n / "data" / "aligned" / k) for n in ("native", "portable"))
        detail.append(
            f"{k}: "
            + ",".join(m for m in za.files if not np.array_equal(za[m], zb[m], equal_nan=za[m].dtype.kind == "f"))
        )
    assert not differ, f"{len(differ)} of {len(a)} aligned files differ between CPU code paths: {detail}"
