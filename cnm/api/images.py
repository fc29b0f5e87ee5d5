"""Image routes of Docker's Engine API (moby api/swagger.yaml, "Image" tag), on top of
`cnm.images.service.ImageService`.

    app = make_app(controller, extra_routes=images.routes(image_service))

Bodies stream: `POST /images/load` and `POST /images/create?fromSrc=-` hand the request
body to the store as a file-like object read from a worker thread, and `GET
/images/…/get` writes the tarball as it is produced, so neither holds an image in
memory. Errors found before the answer starts are a 4xx/5xx with `{"message"}`; an
answer that had to start (a load still working after STREAM_AFTER seconds streams
progress so clients do not time out) reports a late error in-stream, in Docker's
`{"errorDetail": {"message"}, "error"}` shape, as dockerd does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web

from cnm.api.common import EXECUTOR, Route, blocking, json_response
from cnm.api.filters import parse_filters
from cnm.api.version import API_VERSION
from cnm.errors import CNMError, InvalidParameter, Unavailable
from cnm.images import reference, render
from cnm.images import save as S
from cnm.images.service import ImageService

log = logging.getLogger("cnm.api.images")

STREAM_AFTER = 5.0  # seconds before a slow load or import starts streaming progress
WRITE_BUFFER = 1 << 20
PRUNE_FILTERS = frozenset({"dangling", "label", "label!", "until"})
NO_REGISTRY = (
    "no registry is reachable from this daemon; load the image from a file: docker load -i FILE "
    "(or net image load FILE)"
)


def _version(request: web.Request) -> render.Version:
    default = render.parse_version(API_VERSION, (1, 43))
    return render.parse_version(request.match_info.get("api_version"), default)


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no")


def _message(data: dict) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\r\n"


class BodyReader:
    """The request body as a blocking `read(n)`, for a worker thread."""

    def __init__(self, request: web.Request, loop: asyncio.AbstractEventLoop) -> None:
        self.content = request.content
        self.loop = loop

    def read(self, n: int = -1) -> bytes:
        size = n if n is not None and n > 0 else 1 << 20
        return asyncio.run_coroutine_threadsafe(self.content.read(size), self.loop).result()


class ResponseWriter:
    """A started response as a blocking `write(data)`, buffered, for a worker thread."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self.response = response
        self.loop = loop
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= WRITE_BUFFER:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            asyncio.run_coroutine_threadsafe(self.response.write(data), self.loop).result()


async def _json_stream(
    request: web.Request, work: Callable[[Callable[[str], None]], list[dict]], progress_messages: bool
) -> web.StreamResponse:
    """Run `work(progress)` in the API's thread pool; answer its messages as Docker's
    JSON stream. A failure before STREAM_AFTER is a plain error answer."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def progress(msg: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, msg)

    fut = loop.run_in_executor(request.app[EXECUTOR], work, progress)
    done, _ = await asyncio.wait({fut}, timeout=STREAM_AFTER)
    if done:
        messages = fut.result()  # a CNMError here becomes the error answer
        body = b"".join(_message(m) for m in messages)
        return web.Response(body=body, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    while not fut.done():
        getter: asyncio.Future[object] = asyncio.ensure_future(queue.get())
        waiting: set[asyncio.Future[object]] = {fut, getter}  # type: ignore[arg-type]
        finished, _ = await asyncio.wait(waiting, timeout=2.0, return_when=asyncio.FIRST_COMPLETED)
        if getter in finished:
            if progress_messages:
                await response.write(_message({"status": getter.result()}))
        else:
            getter.cancel()
    try:
        for m in fut.result():
            await response.write(_message(m))
    except CNMError as exc:
        await response.write(_message({"errorDetail": {"message": exc.message}, "error": exc.message}))
    await response.write_eof()
    return response


def routes(images: ImageService) -> list[Route]:
    async def list_(request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"), render.IMAGE_FILTERS)
        version = _version(request)
        shared = _flag(request, "shared-size")

        def load() -> list[dict]:
            views = images.views()
            created = {}
            for key in ("before", "since"):
                for name in filters.get(key, []):
                    created[name] = images.inspect(name).created
            sizes = images.shared_sizes() if shared else {}
            out = []
            for v in views:
                if not render.image_matches(v, filters, created):
                    continue
                if filters.get("reference"):  # moby lists only the names that matched
                    v.refs = [r for r in v.refs if any(render.reference_matches(p, r) for p in filters["reference"])]
                out.append(render.summary_json(v, version, sizes.get(v.id, -1)))
            return out

        return json_response(await blocking(request, load))

    async def inspect(request: web.Request) -> web.Response:
        view = await blocking(request, images.inspect, request.match_info["name"])
        return json_response(render.inspect_json(view, _version(request)))

    async def history(request: web.Request) -> web.Response:
        view = await blocking(request, images.inspect, request.match_info["name"])
        return json_response(render.history_json(view))

    async def tag(request: web.Request) -> web.Response:
        repo, tag_ = request.query.get("repo", ""), request.query.get("tag", "")
        await blocking(request, images.tag, request.match_info["name"], repo, tag_)
        return web.Response(status=201)

    async def delete(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not name.strip():
            raise InvalidParameter("image name cannot be blank")
        records = await blocking(request, images.delete, name, _flag(request, "force"), not _flag(request, "noprune"))
        return json_response(records)

    async def prune(request: web.Request) -> web.Response:
        filters = parse_filters(request.query.get("filters"), PRUNE_FILTERS)
        dangling = filters.get("dangling", ["true"])[-1].lower()
        if dangling not in ("true", "false", "1", "0"):
            raise InvalidParameter(f"invalid filter 'dangling={dangling}': use true or false")
        rest = {k: v for k, v in filters.items() if k != "dangling"}

        def keep(image_id: str) -> bool:
            view = images.view(image_id)
            for value in rest.get("label!", []):
                if render.label_matches(view.config.labels(), value):
                    return True
            return not render.image_matches(view, {k: v for k, v in rest.items() if k != "label!"}, {})

        result = await blocking(request, images.prune, dangling in ("true", "1"), keep)
        return json_response(result)

    async def load(request: web.Request) -> web.StreamResponse:
        reader = BodyReader(request, asyncio.get_running_loop())

        def work(progress: Callable[[str], None]) -> list[dict]:
            return [{"stream": line + "\n"} for line in images.load(reader, progress)]

        return await _json_stream(request, work, progress_messages=not _flag(request, "quiet", True))

    async def create(request: web.Request) -> web.StreamResponse:
        q = request.query
        if q.get("fromImage"):
            name = q["fromImage"].rstrip(":")
            try:
                ref = reference.parse(name)
                tag_ = q.get("tag") or ref.tag or "latest"
                name = f"{ref.familiar_name}{'@' if tag_.startswith('sha256:') else ':'}{tag_}"
            except InvalidParameter:
                pass
            raise Unavailable(f"cannot pull {name}: {NO_REGISTRY}")
        source = q.get("fromSrc", "")
        if source != "-":
            raise InvalidParameter(
                "importing from a URL is not supported: send the tarball in the request "
                "body (fromSrc=-), e.g. `docker import - < rootfs.tar`"
                if source
                else "give fromImage (pull) or fromSrc=- (import)"
            )
        reader = BodyReader(request, asyncio.get_running_loop())
        changes = q.getall("changes", [])

        def work(_progress: Callable[[str], None]) -> list[dict]:
            image_id = images.import_image(
                reader, q.get("repo", ""), q.get("tag", ""), q.get("message", ""), list(changes)
            )
            return [{"status": image_id}]

        return await _json_stream(request, work, progress_messages=False)

    async def get(request: web.Request) -> web.StreamResponse:
        names = [request.match_info["name"]] if "name" in request.match_info else request.query.getall("names", [])
        if not names:
            raise InvalidParameter("no image names given: use names=NAME (repeatable)")
        exports = await blocking(request, S.select, images.store, names)
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)
        writer = ResponseWriter(response, asyncio.get_running_loop())

        def work() -> None:
            S.write(images.store, exports, writer)  # type: ignore[arg-type]
            writer.flush()

        try:
            await asyncio.get_running_loop().run_in_executor(request.app[EXECUTOR], work)
        except Exception:
            # The tar has started: no error answer is possible any more. Cut the
            # connection so the client sees a truncated archive, never a short valid one.
            log.exception("saving %s failed half-way", ", ".join(names))
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def no_registry(request: web.Request) -> web.Response:
        raise Unavailable(NO_REGISTRY)

    name = "/images/{name:.+}"
    return [
        Route("GET", "/images/json", list_),
        Route("POST", "/images/load", load),
        Route("POST", "/images/create", create),
        Route("POST", "/images/prune", prune),
        Route("GET", "/images/get", get),
        Route("GET", "/images/search", no_registry),
        Route("GET", name + "/json", inspect),
        Route("GET", name + "/history", history),
        Route("GET", name + "/get", get),
        Route("POST", name + "/tag", tag),
        Route("POST", name + "/push", no_registry),
        Route("DELETE", name, delete),
    ]
