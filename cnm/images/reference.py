"""Image references as Docker reads them: `[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`.

Pure functions after distribution/reference's grammar (normalize.go, regexp.go):
`busybox` is `docker.io/library/busybox:latest`; shown back in the "familiar" form
`busybox:latest`. The store keeps references normalized, so `busybox`,
`library/busybox` and `docker.io/library/busybox:latest` all name the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnm.errors import InvalidParameter

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_TAG_ONLY = re.compile(rf"^{_TAG}$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_SHA256_ID = re.compile(r"^sha256:[a-f0-9]{64}$")
_ID_PREFIX = re.compile(r"^(?:sha256:)?[a-f0-9]{1,64}$")


@dataclass(frozen=True)
class Reference:
    """A normalized named reference: `domain/path` plus a tag or a digest (or both)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as users write it: `busybox`, `me/app`, `reg:5000/x`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_PREFIX) and "/" not in self.path[len(OFFICIAL_PREFIX) :]:
            return self.path[len(OFFICIAL_PREFIX) :]
        return self.path

    def with_default_tag(self) -> Reference:
        """Docker's TagNameOnly: a bare name means `:latest`."""
        if self.tag is None and self.digest is None:
            return Reference(self.domain, self.path, DEFAULT_TAG)
        return self

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def familiar(self) -> str:
        """`busybox:latest`, as `docker images` and RepoTags show it."""
        return self.familiar_name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse(text: str) -> Reference:
    """Parse and normalize a named reference (ParseNormalizedNamed). InvalidParameter
    with Docker's wording for anything else."""
    if not isinstance(text, str) or not text:
        raise InvalidParameter("invalid reference format: the image name is empty")
    if _HEX64.match(text):
        raise InvalidParameter(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_domain(text)
    remote_name = remainder.split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise InvalidParameter(f"invalid reference format: repository name ({remote_name}) must be lowercase")
    m = _REFERENCE.match(f"{domain}/{remainder}")
    if not m:
        raise InvalidParameter(f"invalid reference format: {text!r} is not an image name (NAME[:TAG][@DIGEST])")
    name = m.group("name")
    if len(name) > MAX_NAME:
        raise InvalidParameter(
            f"invalid reference format: repository name must not be longer than {MAX_NAME} characters"
        )
    dom, _, path = name.partition("/")
    return Reference(dom, path, m.group("tag"), m.group("digest"))


def _split_domain(text: str) -> tuple[str, str]:
    first, sep, rest = text.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, text
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_PREFIX + remainder
    return domain, remainder


def parse_tagged(text: str) -> Reference:
    """A reference for tagging or importing: digests are refused, `:latest` is implied."""
    ref = parse(text)
    if ref.digest:
        raise InvalidParameter(f"refusing to create a tag with a digest reference: {text}")
    return ref.with_default_tag()


def check_tag(tag: str) -> str:
    if not _TAG_ONLY.match(tag or ""):
        raise InvalidParameter(f"invalid tag format: {tag!r}: letters, digits, '_', '.', '-'; at most 128")
    return tag


def is_full_id(text: str) -> bool:
    """`sha256:<64 hex>` or 64 hex digits: an image ID, never a name."""
    return bool(_SHA256_ID.match(text) or _HEX64.match(text))


def full_id(text: str) -> str:
    return text if text.startswith("sha256:") else "sha256:" + text


def is_id_prefix(text: str) -> bool:
    """Could this be (a prefix of) an image ID? Docker looks names up first, then IDs."""
    return bool(_ID_PREFIX.match(text))
