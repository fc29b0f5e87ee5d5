"""`GET /system/df` (`docker system df`): images with their sizes and users, containers,
and the (empty) volumes and build cache this daemon has none of."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cnm.api import container_filters as cf
from cnm.api.common import Route, blocking, json_response
from cnm.api.container_listing import summaries
from cnm.images import render


def routes(images: Any, containers: Any) -> list[Route]:
    """`images`: cnm.images.service.ImageService; `containers`: the container service
    the container routes use."""

    async def df(request: web.Request) -> web.Response:

        def load() -> dict:
            views = images.views()
            shared = images.shared_sizes()
            version = (1, 43)
            image_list = [render.summary_json(v, version, shared.get(v.id, 0)) for v in views]
            layers: dict[str, int] = {}
            for v in views:
                for path, size in zip(v.diff_dirs, v.layer_sizes, strict=False):
                    layers[path] = size
            cts = [
                {**s, "SizeRw": 0, "SizeRootFs": 0} for s in summaries(containers, cf.ListQuery(filters={}, all=True))
            ]
            return {
                "LayersSize": sum(layers.values()),
                "Images": image_list,
                "Containers": cts,
                "Volumes": [],
                "BuildCache": [],
            }

        return json_response(await blocking(request, load))

    return [Route("GET", "/system/df", df)]
