"""ASC CDL: slope, offset, power per channel and one saturation, as ``.cc``
(one ``ColorCorrection``), ``.ccc`` (a ``ColorCorrectionCollection``) and ``.cdl``
(a ``ColorDecisionList``) files of ASC CDL v1.2 XML; v1.01 files (``SATNode``) read too.

Applied as OpenColorIO's ``CDLTransform`` applies it, in either of its styles:

* ``asc`` (ASC CDL v1.2, the default here): ``clamp(in * slope + offset, 0, 1) ** power``,
  then saturation about Rec.709 luma, clamped to 0..1 again;
* ``no_clamp`` (OpenColorIO's default): no clamps, and power passes negative values
  through unchanged.

>>> grade = CDL("3A", slope=(1.2, 1.0, 0.9), offset=(0.0, 0.0, 0.02), power=(1.0, 1.0, 1.1))
>>> apply_cdl(np.array([[0.5, 0.5, 0.5]]), grade).astype(float).round(4).tolist()
[[0.6, 0.5, 0.4358]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

import numpy as np

from aiprod_post.errors import MediaError

from .lut import read_text

__all__ = ["CDL", "read_cdl", "parse_cdl", "cdl_for_shot", "write_cdl", "cdl_xml",
           "apply_cdl", "cdl_sop", "cdl_saturation", "CDL_SUFFIXES", "cdl_frames",
           "changed_cdl"]

CDL_SUFFIXES = (".cc", ".ccc", ".cdl")
_NS = "urn:ASC:CDL:v1.2"
#: Rec.709 luma weights, as the ASC CDL and OpenColorIO use them for saturation
_LUMA = np.array([0.2126, 0.7152, 0.0722])

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class CDL:
    """One colour correction: per-channel slope, offset and power, and saturation."""

    id: str = ""
    slope: Triple = (1.0, 1.0, 1.0)
    offset: Triple = (0.0, 0.0, 0.0)
    power: Triple = (1.0, 1.0, 1.0)
    sat: float = 1.0
    description: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_identity(self) -> bool:
        return (self.slope, self.offset, self.power, self.sat) == \
            ((1.0,) * 3, (0.0,) * 3, (1.0,) * 3, 1.0)

    def to_metadata(self) -> dict:
        """The form a timeline carries: ``{"id", "slope", "offset", "power", "sat"}``."""
        return {"id": self.id, "slope": list(self.slope), "offset": list(self.offset),
                "power": list(self.power), "sat": self.sat}

    @classmethod
    def from_metadata(cls, meta: dict, where: str = "metadata") -> "CDL":
        try:
            cdl = cls(str(meta.get("id", "")), *(tuple(float(v) for v in meta[k])
                                                  for k in ("slope", "offset", "power")),
                      float(meta.get("sat", 1.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise MediaError(f"not an ASC CDL ({exc})", where=where) from None
        return _checked(cdl, None, None, where)


def _checked(cdl: CDL, path, line, what: str = "") -> CDL:
    """The ranges OpenColorIO accepts: three finite numbers each, slope and saturation
    not negative, power above zero."""
    for name in ("slope", "offset", "power"):
        vals = getattr(cdl, name)
        if len(vals) != 3 or not all(np.isfinite(vals)):
            raise MediaError(f"{what}{name} needs three finite numbers, got {list(vals)}",
                             source=path, line=line)
    if min(cdl.slope) < 0:
        raise MediaError(f"{what}slope must not be negative: {list(cdl.slope)}",
                         source=path, line=line)
    if min(cdl.power) <= 0:
        raise MediaError(f"{what}power must be above zero: {list(cdl.power)}",
                         source=path, line=line)
    if not np.isfinite(cdl.sat) or cdl.sat < 0:
        raise MediaError(f"{what}saturation must be a number not below zero: {cdl.sat}",
                         source=path, line=line)
    return cdl


# ------------------------------------------------------------------ reading

@dataclass
class _Node:
    tag: str
    attrs: dict
    line: int
    children: list["_Node"] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> "_Node | None":
        return next((c for c in self.children if c.tag == tag), None)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


def _parse_xml(text: str, path) -> _Node:
    """A small element tree with line numbers; namespaces dropped; no DTDs (and so no
    entity expansion) accepted."""
    parser = expat.ParserCreate(namespace_separator="}")
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(name, attrs):
        node = _Node(name.rsplit("}", 1)[-1], attrs, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(name):
        stack.pop()

    def chars(data):
        if stack:
            stack[-1].text += data

    def doctype(*args):
        raise MediaError("a DOCTYPE is not accepted in a CDL file", source=path,
                         line=parser.CurrentLineNumber)

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler, parser.StartDoctypeDeclHandler = chars, doctype
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise MediaError(f"not well-formed XML: {expat.ErrorString(exc.code)}", source=path,
                         line=exc.lineno) from None
    return root[0]


def _numbers(node: _Node | None, n: int, default, path) -> tuple:
    if node is None:
        return default
    parts = node.text.split()
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise MediaError(f"<{node.tag}> has a value that is not a number: {node.text.strip()!r}",
                         source=path, line=node.line) from None
    if len(vals) != n:
        raise MediaError(f"<{node.tag}> needs {n} number{'s' if n > 1 else ''}, got {len(vals)}",
                         source=path, line=node.line)
    return vals


def _correction(node: _Node, path) -> CDL:
    sop = node.find("SOPNode")
    sat = node.find("SatNode") or node.find("SATNode")  # v1.2 / v1.01
    slope = _numbers(sop.find("Slope") if sop else None, 3, (1.0, 1.0, 1.0), path)
    offset = _numbers(sop.find("Offset") if sop else None, 3, (0.0, 0.0, 0.0), path)
    power = _numbers(sop.find("Power") if sop else None, 3, (1.0, 1.0, 1.0), path)
    (s,) = _numbers(sat.find("Saturation") if sat else None, 1, (1.0,), path)
    notes = tuple(d.text.strip() for d in node.walk() if d.tag == "Description")
    return _checked(CDL(node.attrs.get("id", ""), slope, offset, power, s, notes), path,
                    node.line, f"ColorCorrection {node.attrs.get('id', '')!r}: ")


def parse_cdl(text: str, path: str | Path = "<cdl>") -> list[CDL]:
    """Every ``ColorCorrection`` in a ``.cc``, ``.ccc`` or ``.cdl`` text, in order."""
    root = _parse_xml(text, path)
    if root.tag not in ("ColorCorrection", "ColorCorrectionCollection", "ColorDecisionList"):
        raise MediaError(f"<{root.tag}> is not an ASC CDL element: expected ColorCorrection, "
                         "ColorCorrectionCollection or ColorDecisionList", source=path,
                         line=root.line)
    found = [_correction(n, path) for n in root.walk() if n.tag == "ColorCorrection"]
    if not found:
        raise MediaError("holds no ColorCorrection", source=path, line=root.line)
    return found


def read_cdl(path: str | Path) -> list[CDL]:
    path = Path(path)
    if path.suffix.lower() not in CDL_SUFFIXES:
        raise MediaError("not an ASC CDL file: expected .cc, .ccc or .cdl", source=path)
    text = read_text(path, "CDL")
    return parse_cdl(text, path)


def cdl_for_shot(path: str | Path, shot_id: str) -> CDL:
    """The correction for ``shot_id`` in a file: the one with that id, else the only one."""
    found = read_cdl(path)
    same = [c for c in found if c.id == shot_id]
    if same:
        return same[0]
    if len(found) == 1:
        return found[0]
    raise MediaError(f"holds {len(found)} corrections and none has id {shot_id!r}",
                     source=path)


# ------------------------------------------------------------------ writing

def _fmt(vals) -> str:
    return " ".join(f"{v:.6g}" for v in vals)


def _correction_xml(cdl: CDL, indent: str) -> list[str]:
    from xml.sax.saxutils import escape, quoteattr

    i2, i3 = indent + "  ", indent + "    "
    out = [f"{indent}<ColorCorrection id={quoteattr(cdl.id)}>"]
    out += [f"{i2}<Description>{escape(d)}</Description>" for d in cdl.description]
    out += [f"{i2}<SOPNode>", f"{i3}<Slope>{_fmt(cdl.slope)}</Slope>",
            f"{i3}<Offset>{_fmt(cdl.offset)}</Offset>", f"{i3}<Power>{_fmt(cdl.power)}</Power>",
            f"{i2}</SOPNode>", f"{i2}<SatNode>", f"{i3}<Saturation>{cdl.sat:.6g}</Saturation>",
            f"{i2}</SatNode>", f"{indent}</ColorCorrection>"]
    return out


def cdl_xml(cdls: list[CDL], kind: str = "ccc") -> str:
    """ASC CDL v1.2 XML: ``cc`` (exactly one correction), ``ccc`` or ``cdl``."""
    head = '<?xml version="1.0" encoding="UTF-8"?>'
    if kind == "cc":
        if len(cdls) != 1:
            raise MediaError(f"a .cc file holds one correction, not {len(cdls)}")
        lines = _correction_xml(cdls[0], "")
        lines[0] = lines[0].replace("<ColorCorrection ", f'<ColorCorrection xmlns="{_NS}" ', 1)
    elif kind == "ccc":
        lines = [f'<ColorCorrectionCollection xmlns="{_NS}">']
        for c in cdls:
            lines += _correction_xml(c, "  ")
        lines.append("</ColorCorrectionCollection>")
    elif kind == "cdl":
        lines = [f'<ColorDecisionList xmlns="{_NS}">']
        for c in cdls:
            lines += ["  <ColorDecision>", *_correction_xml(c, "    "), "  </ColorDecision>"]
        lines.append("</ColorDecisionList>")
    else:
        raise MediaError(f"unknown CDL file kind {kind!r}: expected cc, ccc or cdl")
    return "\n".join([head, *lines]) + "\n"


def write_cdl(cdls: list[CDL], path: str | Path) -> Path:
    """Write ``cdls`` as the file its suffix names (``.cc``, ``.ccc``, ``.cdl``)."""
    from aiprod_post.files import write_atomic

    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if "." + kind not in CDL_SUFFIXES:
        raise MediaError("a CDL file is .cc, .ccc or .cdl", source=path)
    write_atomic(path, cdl_xml(list(cdls), kind).encode())
    return path


# ------------------------------------------------------------------ applying

def apply_cdl(rgb: np.ndarray, cdl: CDL, style: str = "asc") -> np.ndarray:
    """``cdl`` applied to float RGB (..., 3), as OpenColorIO's ``CDLTransform`` with
    ``CDL_ASC`` (``asc``) or ``CDL_NO_CLAMP`` (``no_clamp``) style; float32 out.
    In the ``asc`` style NaN reads as 0 and the result is always within 0..1."""
    return cdl_saturation(cdl_sop(rgb, cdl, style), cdl, style)


def cdl_sop(rgb: np.ndarray, cdl: CDL, style: str = "asc") -> np.ndarray:
    """The per-channel part of :func:`apply_cdl`: slope, offset, power (and the ``asc``
    clamp before the power)."""
    if style not in ("asc", "no_clamp"):
        raise MediaError(f"unknown CDL style {style!r}: expected asc or no_clamp")
    x = np.asarray(rgb, dtype=np.float32)
    slope, offset, power = (np.asarray(v, np.float32) for v in (cdl.slope, cdl.offset,
                                                                 cdl.power))
    y = x * slope + offset
    with np.errstate(invalid="ignore", over="ignore"):
        if style == "asc":
            return np.nan_to_num(np.clip(y, 0.0, 1.0), nan=0.0) ** power
        return np.where(y >= 0, np.abs(y) ** power, y)


def cdl_saturation(rgb: np.ndarray, cdl: CDL, style: str = "asc") -> np.ndarray:
    """The part of :func:`apply_cdl` that mixes channels: saturation about Rec.709 luma
    (and the ``asc`` clamp after it), on what :func:`cdl_sop` gave."""
    y = np.asarray(rgb, dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        luma = (y @ _LUMA.astype(np.float32))[..., None]
        y = luma + np.float32(cdl.sat) * (y - luma)
    if style == "asc":
        y = np.clip(y, 0.0, 1.0)
    return y.astype(np.float32)


def cdl_frames(cdl: CDL, style: str = "asc"):
    """``cdl`` as a function of RGB frames in their own depth (uint8, uint16 or float32
    in, the same out), computed in float32 as :func:`apply_cdl`, rounded once."""

    def apply(frame: np.ndarray) -> np.ndarray:
        if frame.dtype == np.float32:
            return apply_cdl(frame, cdl, style)
        if frame.dtype not in (np.uint8, np.uint16):
            raise MediaError(f"a CDL takes uint8, uint16 or float32 frames, not {frame.dtype}")
        top = np.float32(np.iinfo(frame.dtype).max)
        y = apply_cdl(frame.astype(np.float32) / top, cdl, style)
        return np.clip(y * top + np.float32(0.5), 0, top).astype(frame.dtype)

    return apply


def changed_cdl(cdl: CDL | None, graded_with: CDL | None, clip: str) -> CDL | None:
    """The CDL a conform applies to a clip's media, given the CDL the edit gives the clip
    (``cdl``) and the one its media were graded with (``graded_with``; None: none).

    None when they agree (the media already hold it; to the EDL's four decimals) or the
    edit gives none; the edit's CDL when the media were graded without one: it is applied
    over the delivered picture, as a trim on it. Media graded with another CDL hold that
    one under their look, where no later correction reaches exactly: an error naming the
    clip and the way to apply it (render again with the new CDL in ``[looks] cdl``).
    """
    base = graded_with or CDL()
    if cdl is None or np.allclose(_sop(cdl), _sop(base), rtol=0, atol=1e-4):
        return None
    if not base.is_identity:
        raise MediaError(f"clip {clip}: its CDL was changed from the one its media were "
                         f"graded with ({_describe(base)}) to {_describe(cdl)}; that one "
                         "sits under the look, where the conform cannot change it: put the "
                         "new CDL in the project's [looks] cdl and render again",
                         where=f"clip {clip}")
    return cdl


def _sop(cdl: CDL) -> list[float]:
    return [*cdl.slope, *cdl.offset, *cdl.power, cdl.sat]


def _describe(cdl: CDL) -> str:
    return (f"slope {_fmt(cdl.slope)}, offset {_fmt(cdl.offset)}, power {_fmt(cdl.power)}, "
            f"sat {cdl.sat:.6g}")
