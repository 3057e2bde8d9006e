"""Getting a file's bytes out of a request: an uploaded form file or a URL, both bounded."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from workers.api.problems import Problem
from workers.api.service import ApiService
from workers.errors import MediaError

MAX_FORM_FILES = 4
MAX_FORM_FIELDS = 32


@dataclass
class FormMedia:
    field: str  # the form field's name (HMA: the content type, photo or video)
    filename: str | None
    data: bytes
    fields: dict[str, str]  # the form's other (text) fields


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise MediaError("media_too_large", f"the uploaded file exceeds {limit} bytes (VIGIL_MAX_MEDIA_BYTES)")
    return data


async def form_media(request: Request, service: ApiService, allowed_fields: tuple[str, ...] | None = None
                     ) -> FormMedia:
    """The one file of a multipart/form-data body, or 400. Starlette spools it to an anonymous
    temp file; the form is closed (and the file gone) when this returns."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise Problem(400, "Missing multipart/form-data file upload")
    form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    try:
        files = [(k, v) for k, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise Problem(400, "Missing multipart/form-data file upload")
        if len(files) > 1:
            raise Problem(400, "Only one file allowed per request")
        name, upload = files[0]
        if allowed_fields is not None and name not in allowed_fields:
            raise Problem(400, f"no such content_type: '{name}' (the file's form field must be one of "
                               f"{', '.join(allowed_fields)})")
        data = await read_upload(upload, service.settings.max_media_bytes)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        return FormMedia(name, upload.filename, data, fields)
    finally:
        await form.close()


async def url_media(url: str, service: ApiService) -> bytes:
    """The URL's body by the fetch rules (workers/media/fetch_url.py), off the event loop."""
    return await run_in_threadpool(service.fetch, url)
