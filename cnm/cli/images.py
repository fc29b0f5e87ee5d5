"""Image commands, as Docker's: load, import, ls (images), inspect, history, tag, rm
(rmi), prune, save, pull. Declared with cnm.cli.spec; they talk to the daemon's image
API (cnm/api/images.py), streaming tarballs in and out."""

from __future__ import annotations

import sys

from cnm.cli.output import dumps, echo, error_line, table
from cnm.cli.spec import arg, command, flag, option
from cnm.cli.values import key_value
from cnm.errors import CNMError, InvalidParameter, Unavailable
from cnm.humanunits import human_duration, human_size

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from cnm.api.transport import StreamResponse
    from cnm.cli.spec import Context, Opts


# -- formatting (Docker's go-units) --------------------------------------------------------


def ago(created: int) -> str:
    import time  # (CLI start-up: only ages need the clock)

    return f"{human_duration(time.time() - created)} ago" if created > 0 else "N/A"


def short_id(image_id: str, no_trunc: bool = False) -> str:
    return image_id if no_trunc else image_id.split(":", 1)[-1][:12]


def split_repo_tag(ref: str) -> tuple[str, str]:
    """`reg:5000/app:v1` -> ("reg:5000/app", "v1"); no tag -> (ref, "")."""
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, ""


def print_stream(resp: StreamResponse, quiet: bool = False) -> list[dict]:
    """Docker's JSON message stream: `stream` text as it is, `status` lines unless quiet,
    an `error` raised as the daemon's category. Returns every message."""
    from cnm import jsonlite as json  # (CLI start-up: only the commands that parse JSON)
    from cnm.errors import from_http  # (CLI start-up: only a failed stream needs it)

    messages = []
    try:
        for line in iter(resp.readline, b""):
            if not line.strip():
                continue
            msg = json.loads(line)
            messages.append(msg)
            if "error" in msg:
                detail = msg.get("errorDetail") or {}
                raise from_http(int(detail.get("code") or 500), str(msg["error"]))
            if msg.get("stream"):
                sys.stdout.write(msg["stream"])
            elif msg.get("status") and not quiet:
                echo(msg["status"] + (f" {msg['id']}" if msg.get("id") else ""))
    finally:
        resp.close()
    sys.stdout.flush()
    return messages


def _open_input(path: str | None, what: str) -> BinaryIO:
    if path and path != "-":
        try:
            return open(path, "rb")
        except OSError as exc:
            raise InvalidParameter(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    if sys.stdin.isatty():
        raise InvalidParameter(f"requested {what} from stdin, but stdin is a terminal: give a file or redirect one")
    return sys.stdin.buffer


# -- commands ------------------------------------------------------------------------------


@command(
    "load",
    option("-i", "--input", help="Read from a tar archive file (plain or gzip), instead of STDIN."),
    flag("-q", "--quiet", help="Suppress the load output."),
)
def load(cx: Context, o: Opts) -> None:
    """Load images from a tar archive (docker save output or an OCI layout)."""
    src = _open_input(o.input, "load")
    try:
        quiet = o.quiet or not sys.stdout.isatty()
        resp = cx.client.upload("POST", "/images/load", src, query={"quiet": "1" if quiet else "0"})
        print_stream(resp, quiet=o.quiet)
    finally:
        if src is not sys.stdin.buffer:
            src.close()


@command(
    "import",
    option(
        "-c",
        "--change",
        dest="changes",
        multiple=True,
        help="Apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME).",
        metavar="INSTRUCTION",
    ),
    option("-m", "--message", default="", help="Set the commit message of the imported image."),
    arg("file", metavar="FILE|-"),
    arg("reference", required=False, metavar="REPOSITORY[:TAG]"),
)
def import_(cx: Context, o: Opts) -> None:
    """Import a rootfs tarball (plain or compressed) as a one-layer image; prints its ID."""
    src = _open_input(o.file, "import")
    query: list[tuple[str, str]] = [("fromSrc", "-")]
    if o.reference:
        query.append(("repo", o.reference))
    if o.message:
        query.append(("message", o.message))
    query += [("changes", c) for c in o.changes]
    try:
        messages = print_stream(cx.client.upload("POST", "/images/create", src, query=query), quiet=True)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    for msg in messages:
        if msg.get("status", "").startswith("sha256:"):
            echo(msg["status"])


@command(
    "ls",
    flag("-a", "--all", help="Show all images (there are no intermediate images here: the same list)."),
    flag("-q", "--quiet", help="Only show image IDs."),
    flag("--no-trunc", help="Don't truncate output."),
    flag("--digests", help="Show digests (none: images come from files, not registries)."),
    option(
        "-f",
        "--filter",
        dest="filters",
        multiple=True,
        value=key_value,
        help="Filter: dangling=, label=, reference=, before=, since=, until= (repeatable).",
    ),
    option(
        "--format",
        dest="fmt",
        choices=("table", "json"),
        default="table",
        help="table, or json (the API's image summaries).",
    ),
    arg("reference", required=False, metavar="REPOSITORY[:TAG]"),
)
def ls(cx: Context, o: Opts) -> None:
    """List images."""
    from cnm import jsonlite as json  # (CLI start-up: only the commands that parse JSON)

    filters: dict[str, list[str]] = {}
    for key, value in o.filters:
        filters.setdefault(key, []).append(value)
    if o.reference:
        filters.setdefault("reference", []).append(o.reference)
    query = {"filters": json.dumps(filters)} if filters else None
    images: list[dict[str, Any]] = cx.client.request("GET", "/images/json", query=query)
    if o.fmt == "json":
        echo(dumps(images))
        return
    if o.quiet:
        seen: dict[str, None] = {short_id(i["Id"], o.no_trunc): None for i in images}
        sys.stdout.write("".join(f"{i}\n" for i in seen))
        return
    rows = []
    for img in images:
        tags = [t for t in img.get("RepoTags") or [] if t != "<none>:<none>"] or ["<none>:<none>"]
        for tag in tags:
            repo, _, version = tag.rpartition(":")
            row = [repo, version]
            if o.digests:
                row.append("<none>")
            rows.append(
                (*row, short_id(img["Id"], o.no_trunc), ago(img.get("Created", 0)), human_size(img.get("Size", 0)))
            )
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if o.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    echo(table(headers, rows))


@command("inspect", arg("refs", nargs=-1, metavar="IMAGE..."))
def inspect(cx: Context, o: Opts) -> int:
    """Display detailed information on images (a JSON array; missing ones are errors)."""
    from cnm.api.client import quote  # (CLI start-up: only the commands that build a query)

    found: list[dict] = []
    errors: list[CNMError] = []
    for ref in o.refs:
        try:
            found.append(cx.client.request("GET", f"/images/{_path(ref, quote)}/json"))
        except CNMError as exc:
            errors.append(exc)
    echo(dumps(found))
    for err in errors:
        error_line(err)
    return errors[0].exit_code if errors else 0


def _path(ref: str, quote: Any) -> str:
    """An image reference in a URL path: `/` stays (the daemon's route allows it)."""
    return "/".join(quote(part) for part in ref.split("/"))


@command(
    "history",
    flag("--no-trunc", help="Don't truncate output."),
    flag("-q", "--quiet", help="Only show image IDs."),
    option(
        "-H",
        "--human",
        choices=("true", "false"),
        default="true",
        help="Print sizes and dates in human readable format.",
    ),
    option("--format", dest="fmt", choices=("table", "json"), default="table", help="table, or json."),
    arg("ref", metavar="IMAGE"),
)
def history(cx: Context, o: Opts) -> None:
    """Show the history of an image (newest layer first)."""
    from cnm.api.client import quote  # (CLI start-up: only the commands that build a query)

    rows: list[dict[str, Any]] = cx.client.request("GET", f"/images/{_path(o.ref, quote)}/history")
    if o.fmt == "json":
        echo(dumps(rows))
        return
    if o.quiet:
        sys.stdout.write(
            "".join(short_id(r["Id"], o.no_trunc) + "\n" if r["Id"] != "<missing>" else "<missing>\n" for r in rows)
        )
        return
    human = o.human == "true"
    out = []
    for r in rows:
        created_by = r.get("CreatedBy") or ""
        if not o.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        image = r["Id"] if r["Id"] == "<missing>" else short_id(r["Id"], o.no_trunc)
        created = ago(r.get("Created", 0)) if human else str(r.get("Created", 0))
        size = human_size(r.get("Size", 0)) if human else str(r.get("Size", 0))
        out.append((image, created, created_by, size, r.get("Comment") or ""))
    echo(table(("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"), out))


@command("tag", arg("source", metavar="SOURCE_IMAGE[:TAG]"), arg("target", metavar="TARGET_IMAGE[:TAG]"))
def tag(cx: Context, o: Opts) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    from cnm.api.client import quote  # (CLI start-up: only the commands that build a query)

    repo, version = split_repo_tag(o.target)
    cx.client.request("POST", f"/images/{_path(o.source, quote)}/tag", query={"repo": repo, "tag": version})


@command(
    "rm",
    flag("-f", "--force", help="Force removal of the image."),
    flag("--no-prune", help="Do not delete untagged parents (there are none here)."),
    arg("refs", nargs=-1, metavar="IMAGE..."),
)
def rm(cx: Context, o: Opts) -> int:
    """Remove one or more images (goes on past failures; exits non-zero if any failed)."""
    from cnm.api.client import quote  # (CLI start-up: only the commands that build a query)

    code = 0
    for ref in o.refs:
        try:
            records = cx.client.request(
                "DELETE",
                f"/images/{_path(ref, quote)}",
                query={"force": "1" if o.force else "0", "noprune": "1" if o.no_prune else "0"},
            )
        except CNMError as exc:
            error_line(exc)
            code = code or exc.exit_code
            continue
        for rec in records or []:
            for key in ("Untagged", "Deleted"):
                if key in rec:
                    echo(f"{key}: {rec[key]}")
    return code


@command(
    "prune",
    flag("-a", "--all", help="Remove all unused images, not just dangling ones."),
    flag("-f", "--force", help="Do not prompt for confirmation."),
    option(
        "--filter", dest="filters", multiple=True, value=key_value, help="Filter: until=, label=, label!= (repeatable)."
    ),
)
def prune(cx: Context, o: Opts) -> None:
    """Remove unused images."""
    from cnm import jsonlite as json  # (CLI start-up: only the commands that parse JSON)

    if not o.force:
        what = "all images without at least one container associated to them" if o.all else "all dangling images"
        sys.stdout.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    filters: dict[str, list[str]] = {"dangling": ["false" if o.all else "true"]}
    for key, value in o.filters:
        filters.setdefault(key, []).append(value)
    report = cx.client.request("POST", "/images/prune", query={"filters": json.dumps(filters)})
    deleted = report.get("ImagesDeleted") or []
    if deleted:
        echo("Deleted Images:")
        for rec in deleted:
            for key in ("Untagged", "Deleted"):
                if key in rec:
                    echo(f"{key.lower()}: {rec[key]}")
        echo()
    echo(f"Total reclaimed space: {human_size(report.get('SpaceReclaimed', 0))}")


@command(
    "save",
    option("-o", "--output", help="Write to a file, instead of STDOUT."),
    arg("refs", nargs=-1, metavar="IMAGE..."),
)
def save(cx: Context, o: Opts) -> None:
    """Save images to a tar archive (Docker 25+'s format: OCI layout + manifest.json)."""
    import os  # (CLI start-up: os costs every call ~1.5 ms; only save writes a file)

    if not o.refs:
        raise InvalidParameter("save needs at least one image")
    if not o.output and sys.stdout.isatty():
        raise InvalidParameter("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    resp = cx.client.request("GET", "/images/get", query=[("names", r) for r in o.refs], stream=True)
    tmp = f"{o.output}.tmp{os.getpid()}" if o.output else None
    try:
        out = open(tmp, "wb") if tmp else sys.stdout.buffer
        try:
            while True:
                try:
                    chunk = resp.read(1 << 20)
                except Exception as exc:  # the transport's framing errors: the daemon cut it short
                    raise Unavailable(f"the daemon stopped sending the archive half-way: {exc}") from None
                if not chunk:
                    break
                out.write(chunk)
        finally:
            if tmp:
                out.close()
        if tmp:
            os.replace(tmp, o.output)  # never a half-written archive under the asked name
    finally:
        resp.close()
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


@command("pull", flag("-q", "--quiet", help="Suppress verbose output."), arg("ref", metavar="NAME[:TAG]"))
def pull(cx: Context, o: Opts) -> None:
    """Pull an image from a registry (none is reachable: this says so, and how to load one)."""
    repo, version = split_repo_tag(o.ref)
    resp = cx.client.request(
        "POST", "/images/create", query={"fromImage": repo, "tag": version or "latest"}, stream=True
    )
    print_stream(resp, quiet=o.quiet)
