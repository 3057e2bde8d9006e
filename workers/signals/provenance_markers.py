"""AI-generation markers written without C2PA: the IPTC digitalSourceType in XMP, and the text
that image generators leave in PNG chunks and EXIF fields.

Google, Meta and others write `Iptc4xmpExt:DigitalSourceType` (an explicit claim, by IPTC's
controlled vocabulary); local diffusion tools write their settings into PNG text (`parameters`
from the Stable Diffusion web UIs, `prompt`/`workflow` from ComfyUI, `invokeai_metadata`...) or
name themselves in EXIF `Software`. A marker is a claim the file makes, trivially removed or
forged, so it is reported as evidence and never as proof. Only headers are read (Pillow opens
lazily, PNG chunks after the pixel data are not reached), and prompts are never copied out: a
marker says which field and which generator, not what it was asked to draw.
"""
from __future__ import annotations

import io
import re
import warnings
from typing import Any

from PIL import Image

DST_FIELD = "Iptc4xmpExt:DigitalSourceType"
MAX_XMP = 256 * 1024  # a larger XMP packet is not searched
# Generator names as they appear in EXIF Software/Make/Model, XMP CreatorTool and PNG Software.
_GENERATORS = re.compile(
    r"midjourney|dall[-\u00b7 ]?e|stable[ -]?diffusion|adobe firefly|imagen|novelai|comfyui|invokeai"
    r"|automatic1111|leonardo\.ai|ideogram", re.IGNORECASE)
# PNG text keys that only generators write, and whom they point to.
_PNG_KEYS = {
    "parameters": "stable-diffusion-webui", "prompt": "ComfyUI", "workflow": "ComfyUI",
    "invokeai_metadata": "InvokeAI", "invokeai_graph": "InvokeAI", "sd-metadata": "InvokeAI", "Dream": "InvokeAI",
}
_NAMED_KEYS = ("Software", "Source", "Comment", "Description")  # PNG text that may name a generator
_DST = re.compile(rb"DigitalSourceType(?:=\"([^\"]{1,300})\"|>\s*([^<]{1,300})<|[^>]{0,40}rdf:resource=\"([^\"]{1,300})\")")
_CREATOR_TOOL = re.compile(rb"CreatorTool(?:=\"([^\"]{1,200})\"|>\s*([^<]{1,200})<)")
_SD_PARAMETERS = re.compile(r"Steps: \d+, Sampler: ")
_EXIF_NAMED = {0x0131: "Software", 0x010F: "Make", 0x0110: "Model"}
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286


def read_markers(data: bytes) -> list[dict[str, str]]:
    """Every marker in the image's metadata, in file order of kind: XMP, PNG text, EXIF."""
    with warnings.catch_warnings():  # a corrupt EXIF block is the file's problem, not a marker
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(data)) as im:
            info = dict(im.info)
            exif = im.getexif()
    out: list[dict[str, str]] = []
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp") or b""
    xmp = xmp.encode("utf-8", "replace") if isinstance(xmp, str) else bytes(xmp)
    if xmp and len(xmp) <= MAX_XMP:
        for m in _DST.finditer(xmp):
            term = source_type_name(_group(m))
            if term:
                out.append({"signal": "xmp", "field": DST_FIELD, "value": term})
        for m in _CREATOR_TOOL.finditer(xmp):
            out += _named("xmp", "xmp:CreatorTool", _group(m))
    for key, value in info.items():
        if not isinstance(value, str) or key in ("xmp", "XML:com.adobe.xmp"):
            continue
        if key in _PNG_KEYS:
            out.append({"signal": "png-text", "field": key, "value": _PNG_KEYS[key], "generator": _PNG_KEYS[key]})
        elif key in _NAMED_KEYS:
            out += _named("png-text", key, value)
    out += _exif_markers(exif)
    return _unique(out)


def _exif_markers(exif: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for tag, name in _EXIF_NAMED.items():
        value = exif.get(tag)
        if isinstance(value, (str, bytes)):
            out += _named("exif", name, value if isinstance(value, str) else value.decode("latin-1"))
    try:
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    except Exception:
        comment = None
    if isinstance(comment, bytes):  # 8 bytes of character code, then the text
        text = comment[8:].decode("utf-16-be" if comment[:8].startswith(b"UNICODE") else "latin-1", "replace")
        comment = text.replace("\x00", "")
    if isinstance(comment, str) and _SD_PARAMETERS.search(comment[:4096]):
        out.append({"signal": "exif", "field": "UserComment", "value": "stable-diffusion-webui",
                    "generator": "stable-diffusion-webui"})
    return out


def source_type_name(value: Any) -> str | None:
    """IPTC digitalSourceType URI (or bare term) to its term: trainedAlgorithmicMedia, ..."""
    if not isinstance(value, str) or not value.strip():
        return None
    term = value.strip().rstrip("/").rsplit("/", 1)[-1]
    return term.split(":")[-1][:200] or None


def _named(signal: str, field: str, value: str | bytes | None) -> list[dict[str, str]]:
    """A field that names a generator; other software (cameras, editors) is not a marker."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    found = _GENERATORS.search(value or "")
    if not found:
        return []
    return [{"signal": signal, "field": field, "value": value[:200], "generator": found.group(0)}]


def _group(m: re.Match) -> str:
    raw = next(g for g in m.groups() if g)
    return raw.decode("utf-8", "replace").strip()


def _unique(markers: list[dict[str, str]]) -> list[dict[str, str]]:
    seen, out = set(), []
    for m in markers:
        key = (m["signal"], m["field"], m["value"])
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out
