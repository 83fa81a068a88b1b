"""LUT files: ``.cube`` (Adobe/Iridas and Resolve dialects), ``.3dl`` and ``.csp``
(Cinespace) read here, ``.spi1d`` and ``.spi3d`` read through colour-science;
``.cube`` written here.

A :class:`LUT` is an optional per-channel *prelut* (irregular input points, as a
``.csp`` file gives them), an optional uniform 1D shaper over a per-channel input
range, and an optional 3D table indexed ``table[r, g, b]`` over a per-channel
domain, applied in that order. Every input range is per channel, as in the files:

=========  ====================================================================
``.cube``  1D: ``DOMAIN_MIN/MAX`` (Iridas) or ``LUT_1D_INPUT_RANGE`` (Resolve);
           3D: ``DOMAIN_MIN/MAX`` or ``LUT_3D_INPUT_RANGE``; 1D+3D: the two
           ``INPUT_RANGE`` keys (``DOMAIN_*`` there is refused as ambiguous:
           OpenColorIO silently ignores it)
``.spi1d`` ``From lo hi``
``.csp``   the prelut's input points per channel; the tables span 0..1
``.3dl``   none: the mesh line only counts points (OpenColorIO ignores its values)
``.spi3d`` none (0..1)
=========  ====================================================================

In a ``.cube`` file red varies fastest. Malformed files raise
:class:`~aiprod_post.errors.MediaError` naming the line and what was wrong.

>>> lut = LUT.identity(2)
>>> lut.kind, lut.size
('3D', 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aiprod_post.errors import MediaError

__all__ = ["LUT", "read_lut", "read_cube", "read_3dl", "read_csp", "write_cube", "parse_cube",
           "read_text"]

_MAX_1D = 65536
_MAX_3D = 256


@dataclass
class LUT:
    table: np.ndarray | None = None  # (N, N, N, 3), [r, g, b]
    shaper: np.ndarray | None = None  # (M, 3)
    domain_min: np.ndarray = field(default_factory=lambda: np.zeros(3))
    domain_max: np.ndarray = field(default_factory=lambda: np.ones(3))
    shaper_min: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shaper_max: np.ndarray = field(default_factory=lambda: np.ones(3))
    #: per channel (input points, output points), increasing inputs; None when absent
    prelut: tuple[tuple[np.ndarray, np.ndarray], ...] | None = None
    title: str = ""
    comments: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        if self.table is not None and (self.shaper is not None or self.prelut is not None):
            return "1D+3D"
        return "3D" if self.table is not None else "1D"

    @property
    def size(self) -> int:
        if self.table is not None:
            return self.table.shape[0]
        if self.shaper is not None:
            return self.shaper.shape[0]
        return max(len(x) for x, _ in self.prelut)

    @classmethod
    def identity(cls, size: int = 33, title: str = "identity") -> "LUT":
        g = np.linspace(0.0, 1.0, size)
        r, gg, b = np.meshgrid(g, g, g, indexing="ij")
        return cls(table=np.stack([r, gg, b], axis=-1), title=title)

    def info(self) -> dict:
        out = {"kind": self.kind, "title": self.title}
        if self.table is not None:
            out.update({"size_3d": self.table.shape[0], "domain_min": self.domain_min.tolist(),
                        "domain_max": self.domain_max.tolist()})
        if self.shaper is not None:
            out.update({"size_1d": self.shaper.shape[0], "shaper_min": self.shaper_min.tolist(),
                        "shaper_max": self.shaper_max.tolist()})
        if self.prelut is not None:
            out.update({"prelut_points": [len(x) for x, _ in self.prelut],
                        "prelut_min": [float(x[0]) for x, _ in self.prelut],
                        "prelut_max": [float(x[-1]) for x, _ in self.prelut]})
        return out


def _err(path, line: int, message: str) -> MediaError:
    return MediaError(message, source=path, line=line)


def parse_cube(text: str, path: str | Path = "<cube>") -> LUT:
    """Parse ``.cube`` text in either dialect."""
    lut = LUT()
    seen: dict[str, int] = {}
    size_1d = size_3d = None
    rows: list[tuple[int, list[float]]] = []
    for number, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if line.startswith("#"):
                lut.comments.append(line[1:].strip())
            continue
        head = line.split()[0]
        if head[0].isalpha() and head.upper() == head and not _is_number(head):
            key = head
            if key in seen:
                raise _err(path, number, f"{key} given twice (first on line {seen[key]})")
            seen[key] = number
            rest = line[len(head):].strip()
            if key == "TITLE":
                lut.title = rest.strip('"')
            elif key in ("LUT_1D_SIZE", "LUT_3D_SIZE"):
                try:
                    n = int(rest)
                except ValueError:
                    raise _err(path, number, f"{key} expects a whole number, got {rest!r}") \
                        from None
                hi = _MAX_1D if key == "LUT_1D_SIZE" else _MAX_3D
                if not 2 <= n <= hi:
                    raise _err(path, number, f"{key} {n} is outside 2..{hi}")
                if key == "LUT_1D_SIZE":
                    size_1d = n
                else:
                    size_3d = n
            elif key in ("DOMAIN_MIN", "DOMAIN_MAX"):
                vals = _floats(rest, 3, path, number, key)
                setattr(lut, "domain_min" if key == "DOMAIN_MIN" else "domain_max", vals)
            elif key in ("LUT_1D_INPUT_RANGE", "LUT_3D_INPUT_RANGE"):
                lo, hi = _floats(rest, 2, path, number, key)
                if key == "LUT_1D_INPUT_RANGE":
                    lut.shaper_min, lut.shaper_max = np.full(3, lo), np.full(3, hi)
                else:
                    lut.domain_min, lut.domain_max = np.full(3, lo), np.full(3, hi)
            else:
                raise _err(path, number, f"unknown keyword {key}")
            continue
        if size_1d is None and size_3d is None:
            raise _err(path, number, "table data before LUT_1D_SIZE or LUT_3D_SIZE")
        rows.append((number, list(_floats(line, 3, path, number, "a table entry"))))
    if size_1d is None and size_3d is None:
        raise _err(path, 1, "no LUT_1D_SIZE or LUT_3D_SIZE: not a .cube LUT")
    expected = (size_1d or 0) + (size_3d or 0) ** 3
    if len(rows) != expected:
        at = rows[expected][0] if len(rows) > expected else (rows[-1][0] + 1 if rows else 1)
        raise _err(path, at, f"expected {expected} table entries "
                   f"({'1D ' + str(size_1d) if size_1d else ''}"
                   f"{' + ' if size_1d and size_3d else ''}"
                   f"{'3D ' + str(size_3d) + '^3' if size_3d else ''}), found {len(rows)}")
    if size_1d and ("DOMAIN_MIN" in seen or "DOMAIN_MAX" in seen):
        if size_3d:
            raise _err(path, seen.get("DOMAIN_MIN", seen.get("DOMAIN_MAX")),
                       "DOMAIN_MIN/DOMAIN_MAX with both a 1D and a 3D table is ambiguous: "
                       "use LUT_1D_INPUT_RANGE and LUT_3D_INPUT_RANGE")
        if "LUT_1D_INPUT_RANGE" in seen:
            raise _err(path, seen["LUT_1D_INPUT_RANGE"],
                       "LUT_1D_INPUT_RANGE and DOMAIN_MIN/DOMAIN_MAX both given")
        # Iridas 1D: the domain is the 1D table's input range, per channel
        lut.shaper_min, lut.shaper_max = lut.domain_min, lut.domain_max
        lut.domain_min, lut.domain_max = np.zeros(3), np.ones(3)
    elif size_3d and ("DOMAIN_MIN" in seen or "DOMAIN_MAX" in seen) \
            and "LUT_3D_INPUT_RANGE" in seen:
        raise _err(path, seen["LUT_3D_INPUT_RANGE"],
                   "LUT_3D_INPUT_RANGE and DOMAIN_MIN/DOMAIN_MAX both given")
    for lo, hi, name, line in ((lut.domain_min, lut.domain_max, "DOMAIN", seen.get("DOMAIN_MIN")),
                               (lut.shaper_min, lut.shaper_max, "the 1D input range",
                                seen.get("LUT_1D_INPUT_RANGE", seen.get("DOMAIN_MIN")))):
        if np.any(np.asarray(lo) >= np.asarray(hi)):
            raise _err(path, line or 1, f"{name} minimum must be below maximum")
    data = np.array([r for _, r in rows], dtype=np.float64)
    k = 0
    if size_1d:
        lut.shaper = data[:size_1d]
        k = size_1d
    if size_3d:
        n = size_3d
        # red varies fastest: entry index = r + n*g + n*n*b
        lut.table = data[k:].reshape(n, n, n, 3).transpose(2, 1, 0, 3).copy()
    return lut


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _floats(text: str, n: int, path, line: int, what: str) -> np.ndarray:
    parts = text.split()
    if len(parts) != n:
        raise _err(path, line, f"{what} needs {n} numbers, got {len(parts)}")
    try:
        vals = np.array([float(p) for p in parts])
    except ValueError:
        raise _err(path, line, f"{what} has a value that is not a number: {text!r}") from None
    if not np.all(np.isfinite(vals)):
        raise _err(path, line, f"{what} has NaN or infinity: {text!r}")
    return vals


def read_text(path: Path, kind: str = "LUT") -> str:
    """A text file's contents (a ``kind`` file: LUT, CDL), or a clear error: missing,
    a folder, unreadable, not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MediaError(f"no such {kind} file", source=path) from None
    except IsADirectoryError:
        raise MediaError(f"is a folder, not a {kind} file", source=path) from None
    except UnicodeDecodeError as exc:
        raise MediaError(f"not a text {kind} file: byte {exc.start} is not UTF-8",
                         source=path) from None
    except OSError as exc:
        raise MediaError(f"cannot read {kind}: {exc.strerror or exc}", source=path) from None


def read_cube(path: str | Path) -> LUT:
    path = Path(path)
    return parse_cube(read_text(path), path)


def read_lut(path: str | Path) -> LUT:
    """Read any supported LUT file by its extension."""
    path = Path(path)
    if path.suffix.lower() == ".cube":
        return read_cube(path)
    if path.suffix.lower() == ".3dl":
        return read_3dl(path)
    if path.suffix.lower() == ".csp":
        return read_csp(path)
    if path.suffix.lower() not in (".spi1d", ".spi3d"):
        raise MediaError("unsupported LUT format: expected .cube, .3dl, .spi1d, .spi3d or .csp",
                         source=path)
    read_text(path)  # missing, a folder, not text: the same clear errors as the others
    import colour

    try:
        obj = colour.io.read_LUT(str(path))
    except Exception as exc:  # noqa: BLE001 - colour raises many kinds for bad files
        raise MediaError(f"cannot read LUT: {exc or type(exc).__name__}", source=path) from None
    try:
        return _from_colour(obj)
    except MediaError as exc:
        raise exc.with_source(path) from None


def read_3dl(path: str | Path) -> LUT:
    """Autodesk/Flame/Nuke ``.3dl``: a line of input mesh points, then N³ integer RGB
    triplets with blue varying fastest. The output scale is the smallest of 10, 12 or
    16 bits that holds the largest value (as OpenColorIO infers it)."""
    path = Path(path)
    lines = read_text(path).replace("\r", "\n").split("\n")
    mesh: list[int] | None = None
    rows: list[tuple[int, list[int]]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#")[0].strip()
        if not line or line.startswith(("3DMESH", "Mesh", "LUT8", "gamma")):
            continue
        try:
            vals = [int(v) for v in line.split()]
        except ValueError:
            raise _err(path, number, f"expected whole numbers, got {line!r}") from None
        if mesh is None and len(vals) > 3:
            mesh = vals
            continue
        if len(vals) != 3:
            raise _err(path, number, f"a table entry needs 3 numbers, got {len(vals)}")
        rows.append((number, vals))
    n = round(len(rows) ** (1 / 3))
    if n < 2 or n ** 3 != len(rows):
        raise _err(path, rows[-1][0] if rows else 1,
                   f"expected a cube number of entries (N^3), found {len(rows)}")
    if mesh is not None and len(mesh) != n:
        raise _err(path, 1, f"mesh line has {len(mesh)} points, the table is {n}^3")
    data = np.array([r for _, r in rows], dtype=np.float64)
    top = data.max()
    scale = next((2.0 ** b - 1 for b in (10, 12, 16) if top <= 2 ** b - 1), float(top) or 1.0)
    # blue fastest: entry index = b + n*g + n*n*r
    return LUT(table=(data / scale).reshape(n, n, n, 3), title=path.stem)


def read_csp(path: str | Path) -> LUT:
    """Cinespace ``.csp`` (``CSPLUTV100``, ``1D`` or ``3D``): per channel a prelut of
    irregular input points and their outputs, then a 1D table (N lines of RGB) or a 3D
    table (``N N N`` then N³ RGB lines, red fastest), both over 0..1.

    The prelut is Cinespace's piecewise cubic through its points
    (:func:`~aiprod_post.grading.apply.cinespace_spline`), holding its end values
    outside them, as OpenColorIO evaluates it; a channel of 0 or 1 points is identity.
    """
    path = Path(path)
    lines = [(k, raw.strip()) for k, raw in
             enumerate(read_text(path).replace("\r", "\n").split("\n"), 1)]
    lines = [(k, t) for k, t in lines if t]
    if not lines or lines[0][1] != "CSPLUTV100":
        raise _err(path, lines[0][0] if lines else 1, "not a .csp LUT: expected CSPLUTV100 first")
    pos = 1

    def take(what: str) -> tuple[int, str]:
        nonlocal pos
        if pos >= len(lines):
            raise _err(path, lines[-1][0] + 1, f"file ends before {what}")
        pos += 1
        return lines[pos - 1]

    number, kind = take("the type (1D or 3D)")
    if kind not in ("1D", "3D"):
        raise _err(path, number, f"expected 1D or 3D, got {kind!r}")
    if pos < len(lines) and lines[pos][1] == "BEGIN METADATA":
        while take("END METADATA")[1] != "END METADATA":
            pass
    prelut = []
    for channel in "RGB":
        number, text = take(f"the {channel} prelut")
        count = _whole(text, path, number, f"the {channel} prelut size", 0, _MAX_1D)
        if count < 2:
            prelut.append((np.array([0.0, 1.0]), np.array([0.0, 1.0])))
            continue
        k, text = take(f"the {channel} prelut inputs")
        xs = _floats(text, count, path, k, f"the {channel} prelut inputs")
        if np.any(np.diff(xs) <= 0):
            raise _err(path, k, f"the {channel} prelut inputs must increase")
        k, text = take(f"the {channel} prelut outputs")
        ys = _floats(text, count, path, k, f"the {channel} prelut outputs")
        prelut.append((xs, ys))
    lut = LUT(prelut=tuple(prelut), title=path.stem)
    number, text = take("the table size")
    if kind == "1D":
        n = _whole(text, path, number, "the 1D size", 2, _MAX_1D)
    else:
        sizes = text.split()
        if len(sizes) != 3 or len(set(sizes)) != 1:
            raise _err(path, number, f"expected the 3D size as N N N, got {text!r}")
        n = _whole(sizes[0], path, number, "the 3D size", 2, _MAX_3D)
    count = n if kind == "1D" else n ** 3
    if len(lines) - pos != count:
        at = lines[pos + count][0] if len(lines) - pos > count else lines[-1][0] + 1
        raise _err(path, at, f"expected {count} table entries, found {len(lines) - pos}")
    data = np.array([_floats(t, 3, path, k, "a table entry") for k, t in lines[pos:]])
    if kind == "1D":
        lut.shaper = data
    else:
        lut.table = data.reshape(n, n, n, 3).transpose(2, 1, 0, 3).copy()
    return lut


def _whole(text: str, path, line: int, what: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise _err(path, line, f"{what} expects a whole number, got {text!r}") from None
    if not lo <= n <= hi:
        raise _err(path, line, f"{what} {n} is outside {lo}..{hi}")
    return n


def _from_colour(obj) -> LUT:
    import colour

    lut = LUT(title=getattr(obj, "name", "") or "")
    items = obj.sequence if isinstance(obj, colour.LUTSequence) else [obj]
    for item in items:
        if isinstance(item, colour.LUT3D):
            lut.table = np.asarray(item.table, dtype=np.float64)
            dom = np.asarray(item.domain, dtype=np.float64)
            lut.domain_min, lut.domain_max = dom[0], dom[1]
        elif isinstance(item, (colour.LUT1D, colour.LUT3x1D)):
            table = np.asarray(item.table, dtype=np.float64)
            lut.shaper = np.repeat(table[:, None], 3, axis=1) if table.ndim == 1 else table
            dom = np.asarray(item.domain, dtype=np.float64)
            if dom.ndim == 1:
                lut.shaper_min, lut.shaper_max = np.full(3, dom[0]), np.full(3, dom[-1])
            else:
                lut.shaper_min, lut.shaper_max = dom[0], dom[-1]
    if lut.table is None and lut.shaper is None:
        raise MediaError("LUT holds neither a 1D nor a 3D table")
    for name, arr in (("table", lut.table), ("1D table", lut.shaper),
                      ("domain", np.concatenate([lut.domain_min, lut.domain_max,
                                                 lut.shaper_min, lut.shaper_max]))):
        if arr is not None and (arr.size == 0 or not np.all(np.isfinite(arr))):
            raise MediaError(f"the {name} holds NaN, infinity or nothing")
    if lut.table is not None and (lut.table.ndim != 4 or lut.table.shape[0] < 2):
        raise MediaError("the 3D table needs at least 2 points a side")
    if lut.shaper is not None and (lut.shaper.ndim != 2 or lut.shaper.shape[0] < 2
                                   or lut.shaper.shape[1] != 3):
        raise MediaError("the 1D table needs at least 2 entries of 3 channels")
    if np.any(lut.domain_min >= lut.domain_max) or np.any(lut.shaper_min >= lut.shaper_max):
        raise MediaError("an input range's minimum must be below its maximum")
    return lut


def write_cube(lut: LUT, path: str | Path, dialect: str = "iridas") -> Path:
    """Write ``.cube``: ``iridas`` (DOMAIN_MIN/MAX) or ``resolve`` (INPUT_RANGE, shaper)."""
    from aiprod_post.files import write_atomic

    lines = [f'TITLE "{lut.title}"'] if lut.title else []
    lines += [f"# {c}" for c in lut.comments]
    if dialect not in ("iridas", "resolve"):
        raise MediaError(f"unknown .cube dialect {dialect!r}: expected iridas or resolve",
                         source=path)
    if lut.shaper is not None and lut.table is not None and dialect == "iridas":
        raise MediaError("a 1D shaper with a 3D table needs the resolve dialect", source=path)
    if lut.prelut is not None:
        raise MediaError("a .csp prelut (irregular input points) has no .cube form", source=path)
    if dialect == "resolve" and (np.ptp(lut.shaper_min) or np.ptp(lut.shaper_max)
                                 or np.ptp(lut.domain_min) or np.ptp(lut.domain_max)):
        raise MediaError("per-channel input ranges need the iridas dialect "
                         "(LUT_*_INPUT_RANGE gives one range for all channels)", source=path)
    if lut.shaper is not None:
        lines.append(f"LUT_1D_SIZE {lut.shaper.shape[0]}")
        if dialect == "resolve":
            lines.append(f"LUT_1D_INPUT_RANGE {lut.shaper_min[0]:.10g} {lut.shaper_max[0]:.10g}")
        else:
            lines.append("DOMAIN_MIN " + " ".join(f"{v:.10g}" for v in lut.shaper_min))
            lines.append("DOMAIN_MAX " + " ".join(f"{v:.10g}" for v in lut.shaper_max))
    if lut.table is not None:
        lines.append(f"LUT_3D_SIZE {lut.table.shape[0]}")
        if dialect == "resolve":
            lines.append(f"LUT_3D_INPUT_RANGE {lut.domain_min[0]:.10g} {lut.domain_max[0]:.10g}")
        elif np.any(lut.domain_min != 0) or np.any(lut.domain_max != 1):
            lines.append("DOMAIN_MIN " + " ".join(f"{v:.10g}" for v in lut.domain_min))
            lines.append("DOMAIN_MAX " + " ".join(f"{v:.10g}" for v in lut.domain_max))
    if lut.shaper is not None:
        lines += [f"{r:.8f} {g:.8f} {b:.8f}" for r, g, b in lut.shaper]
    if lut.table is not None:
        flat = lut.table.transpose(2, 1, 0, 3).reshape(-1, 3)  # red fastest
        lines += [f"{r:.8f} {g:.8f} {b:.8f}" for r, g, b in flat]
    write_atomic(Path(path), ("\n".join(lines) + "\n").encode())
    return Path(path)

