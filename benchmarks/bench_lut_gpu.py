"""GPU LUT benchmark: a bundled 33-point look applied at 3840x2160 on a CUDA device.

Two paths: float tetrahedral (``apply_lut_torch``) and 8-bit frames through the exact
2^24-entry table (``grade_uint8_torch``). Accuracy is checked against the NumPy reference
on the same values. Prints JSON with the GPU's name and the date. Target (issue 4): at
least 500 frames per second on an H100-class GPU. Needs only numpy and torch.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import numpy as np
import torch

from aiprod_post.grading.apply import apply_lut, apply_lut_torch, grade_uint8_torch, lut_to_uint8_table
from aiprod_post.grading.lut import read_cube

LUT_FILE = Path(__file__).resolve().parent.parent / "luts" / "teal_orange.cube"


def timed(fn, n: int = 50) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    lut = read_cube(LUT_FILE)
    dev = "cuda"
    rng = np.random.default_rng(0)
    x = rng.random((200000, 3))
    gpu = apply_lut_torch(torch.as_tensor(x, device=dev), lut).cpu().double().numpy()
    err_float = float(np.abs(gpu - apply_lut(x, lut)).max())
    table = torch.as_tensor(lut_to_uint8_table(lut), device=dev)
    u8 = torch.randint(0, 256, (2160, 3840, 3), dtype=torch.uint8, device=dev)
    ref8 = np.clip(apply_lut(u8[:64].cpu().numpy() / 255.0, lut) * 255 + 0.5, 0, 255)
    err_u8 = int(np.abs(grade_uint8_torch(u8[:64], table).cpu().numpy().astype(int)
                        - ref8.astype(int)).max())
    big = torch.rand(2160, 3840, 3, device=dev)
    fps_float = timed(lambda: apply_lut_torch(big, lut))
    compiled = torch.compile(lambda t: apply_lut_torch(t, lut))
    err_compiled = float((compiled(big[:64]) - apply_lut_torch(big[:64], lut)).abs().max())
    fps_compiled = timed(lambda: compiled(big))
    fps_u8 = timed(lambda: grade_uint8_torch(u8, table))
    print(json.dumps({
        "benchmark": "lut3d-gpu", "gpu": torch.cuda.get_device_name(0),
        "date": datetime.date.today().isoformat(), "size": "3840x2160",
        "float_tetrahedral_fps": round(fps_float, 1),
        "float_tetrahedral_compiled_fps": round(fps_compiled, 1),
        "compiled_vs_eager_max_difference": err_compiled, "uint8_table_fps": round(fps_u8, 1),
        "target_fps": 500, "max_error_float_vs_numpy": err_float,
        "max_code_error_uint8": err_u8, "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
