"""The `file` field of a multipart/form-data body, streamed as it arrives.

Starlette's form parsing reads the whole body (spooling files to temporary storage)
before the handler runs, so a size limit could only be checked afterwards. This feeds
python-multipart's push parser one network chunk at a time instead: the file's bytes
reach storage as they come, and the body is cut off at the first byte over the limit.
"""

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:  # defined for type checkers only
    from python_multipart.multipart import MultipartCallbacks

from chatkit_backend.attachments.service import Upload
from chatkit_backend.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

FILE_FIELD = "file"
NOT_MULTIPART = "Send the file as multipart/form-data in a field named file"


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str


class PartEnd:
    pass


Event = PartStart | PartEnd | bytes


class _Collector:
    """python-multipart's callbacks, turned into a list of events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> "MultipartCallbacks":
        return {
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda data, start, end: self.events.append(data[start:end]),
            "on_part_end": lambda: self.events.append(PartEnd()),
            "on_end": self._end,
        }

    def _header_end(self) -> None:
        self._headers[bytes(self._field).strip().lower()] = bytes(self._value).strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = disposition.get(b"filename")
        self.events.append(
            PartStart(
                name=disposition.get(b"name", b"").decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=self._headers.get(b"content-type", b"").decode("latin-1"),
            )
        )
        self._headers.clear()

    def _end(self) -> None:
        self.ended = True


async def multipart_events(
    body: AsyncIterator[bytes], content_type: str, max_bytes: int
) -> AsyncGenerator[Event, None]:
    """Parts' starts, data and ends, in order; 413 once the body passes `max_bytes`."""
    mime_type, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if mime_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType(NOT_MULTIPART)
    collector = _Collector()
    parser = MultipartParser(boundary, collector.callbacks())
    received = 0
    async for chunk in body:
        received += len(chunk)
        if received > max_bytes:
            raise PayloadTooLarge(f"The upload is over the {max_bytes}-byte limit")
        try:
            parser.write(chunk)
        except MultipartParseError:
            raise InvalidRequest("The multipart body is malformed") from None
        for event in collector.events:
            yield event
        collector.events.clear()
    parser.finalize()
    for event in collector.events:
        yield event
    if not collector.ended:
        raise InvalidRequest("The multipart body ended early")


async def file_upload(events: AsyncIterator[Event]) -> Upload:
    """The `file` part of the body: name, declared type, and its bytes as they come."""
    async for event in events:
        if isinstance(event, PartStart) and event.name == FILE_FIELD:
            return Upload(
                name=event.filename or FILE_FIELD,
                declared_type=event.content_type,
                chunks=_part_data(events),
            )
    raise InvalidRequest(NOT_MULTIPART)


async def _part_data(events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    async for event in events:
        if isinstance(event, bytes):
            yield event
        elif isinstance(event, PartEnd):
            # Read the rest (bounded by the body limit), so the file is only accepted
            # from a body that ended properly.
            async for _ in events:
                pass
            return
    raise InvalidRequest("The upload ended before the file did")
