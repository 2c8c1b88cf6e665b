"""What every node client has: its item (the JSON API resource), metadata, structure, links,
metadata updates, revisions, deletion, and a zarr view."""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..structures.core import Spec, StructureFamily
from ..utils import ListView
from .utils import DictView, json_body, path_url

if TYPE_CHECKING:
    from .context import Context

# Marks a metadata key for removal in ``update_metadata``.
DELETE_KEY = object()


def _merge_patch(metadata: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396) from an update where DELETE_KEY removes a key."""
    return {
        key: None if value is DELETE_KEY else (
            _merge_patch(value) if isinstance(value, dict) else value
        )
        for key, value in metadata.items()
    }  # fmt: skip


def _member_name(key: Any) -> str:
    """A metadata key as the JSON rule writes it (``1`` -> ``"1"``)."""
    from ..structures.json import refuse, to_json_value

    return key if isinstance(key, str) else next(iter(to_json_value({key: 0}, refuse)))


def _is_null(value: Any) -> bool:
    """Whether ``value`` is written as JSON ``null`` (None, NaN, infinities, NaT)."""
    if value is None:
        return True
    if isinstance(value, (str, list, tuple, dict)) or value is DELETE_KEY:
        return False
    from ..structures.json import refuse, to_json_value

    return to_json_value(value, refuse) is None


def _sets_null(update: dict[str, Any]) -> bool:
    """Whether an update puts a null somewhere a merge patch would read as 'delete'."""
    return any(
        _sets_null(value) if isinstance(value, dict) else _is_null(value)
        for value in update.values()
    )


def _without_deletions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_deletions(v) for k, v in value.items() if v is not DELETE_KEY}
    return value


def _json_patch(update: dict[str, Any], current: Any, prefix: str = "") -> list[dict[str, Any]]:
    """A JSON Patch (RFC 6902) making the update of ``update_metadata`` on ``current``: what
    a merge patch cannot say, a key set to null (None, NaN)."""
    operations: list[dict[str, Any]] = []
    current = current if isinstance(current, dict) else {}
    for key, value in update.items():
        name = _member_name(key)
        path = f"{prefix}/{name.replace('~', '~0').replace('/', '~1')}"
        if value is DELETE_KEY:
            if name in current:
                operations.append({"op": "remove", "path": path})
        elif isinstance(value, dict) and isinstance(current.get(name), dict):
            operations.extend(_json_patch(value, current[name], path))
        else:
            operations.append({"op": "add", "path": path, "value": _without_deletions(value)})
    return operations


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    """``metadata`` as a dict: any mapping is taken (a ``ChainMap``, say), as upstream's
    client takes it; a ValueError for anything else."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"Metadata must be a dict, not {type(metadata).__name__}")
    return dict(metadata)


def specs_json(specs: Sequence[Any] | None) -> list[dict[str, Any]]:
    """Specs given as ``Spec``, names or JSON, as JSON; a ValueError for anything else (a
    bare string, which would be a spec of each letter, is refused as the server refuses it).

    How many specs a node may carry, and that none is repeated, is the server's to check:
    it answers 422 (a :class:`ClientError`), as upstream's does."""
    from ..errors import InvalidSpecs

    if isinstance(specs, str | bytes | Mapping):
        raise InvalidSpecs(f"Specs are a list of spec names or objects, not {specs!r}")
    try:
        return [Spec.from_json(spec).to_json() for spec in specs or []]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidSpecs(f"Invalid specs {specs!r}: {err}") from None


def _spec_json(value: Any) -> Any:
    """A spec named in a patch (a name or a ``Spec``) as JSON; anything else as it is."""
    return Spec.from_json(value).to_json() if isinstance(value, str | Spec) else value


def _specs_patch_json(patch: Any, content_type: str) -> Any:
    """A patch of the specs with the specs it names as JSON (upstream's client sends the
    names of ``build_metadata_patches`` so); the caller's patch is not changed."""
    if not isinstance(patch, list):
        return patch
    if content_type == "application/json-patch+json":
        return [
            {**op, "value": _spec_json(op["value"])} if isinstance(op, dict) and "value" in op
            else op
            for op in patch
        ]  # fmt: skip
    return [_spec_json(spec) for spec in patch]


class BaseClient:
    """A node of a Tiled server. Structure-family clients derive from this."""

    # How many characters a URL may have before a GET becomes a POST (upstream's name).
    URL_CHARACTER_LIMIT = 2000

    def __init__(
        self,
        context: Context,
        *,
        item: dict[str, Any],
        structure_clients: Any,
        include_data_sources: bool = False,
    ):
        self.context = context
        self._item = item
        self.structure_clients = structure_clients
        self._include_data_sources = include_data_sources
        self._structure_cache: Any = None

    # --- identity ---

    @property
    def item(self) -> dict[str, Any]:
        """The JSON API resource of this node, as the server sent it."""
        return self._item

    @property
    def path_parts(self) -> list[str]:
        attributes = self._item["attributes"]
        return [*(attributes.get("ancestors") or []), self._item["id"]] if self._item["id"] else []

    @property
    def _path(self) -> str:
        return path_url(self.path_parts)

    @property
    def uri(self) -> str:
        return self._item.get("links", {}).get("self") or self.context.url(f"metadata/{self._path}")

    @property
    def structure_family(self) -> StructureFamily:
        return StructureFamily(self._item["attributes"]["structure_family"])

    @property
    def metadata(self) -> DictView:
        return DictView(self._item["attributes"].get("metadata") or {})

    def _metadata_copy(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self._item["attributes"].get("metadata") or {}))

    def metadata_copy(self) -> list[Any]:
        """Mutable copies of the metadata, the specs and the access tags, as upstream's
        client gives them: ``[metadata, specs, access_tags]`` (no access tags: an empty
        list). Edit the first and send it back with ``update_metadata(metadata=...)``.

        >>> md = node.metadata_copy()[0]
        >>> md["key"] = "value"
        >>> node.update_metadata(metadata=md)
        """
        attributes = self._item["attributes"]
        return [
            self._metadata_copy(),
            [Spec.from_json(s) for s in attributes.get("specs") or []],
            list(attributes.get("access_tags") or []),
        ]

    @property
    def specs(self) -> ListView[Spec]:
        """The specs (read-only; ``update_metadata(specs=...)`` changes them)."""
        return ListView([Spec.from_json(s) for s in self._item["attributes"].get("specs") or []])

    @property
    def access_blob(self) -> dict[str, Any] | None:
        """The access tags as clients before upstream 0.2.19 read them (deprecated: use
        ``access_tags``): ``{"tags": [...]}``, or ``{"user": id}`` for an owned node."""
        attributes = self._item["attributes"]
        if "access_blob" in attributes:  # a server that sends it (upstream before 0.2.19)
            return attributes["access_blob"]
        from ..access.blobs import legacy_access_blob

        return legacy_access_blob(attributes.get("access_tags"))

    @property
    def access_tags(self) -> ListView[str]:
        """The access tags (read-only). As upstream's client: an AttributeError when the
        server sent none (a node outside any catalog), so ``hasattr`` tells."""
        tags = self._item["attributes"].get("access_tags")
        if tags is None:
            raise AttributeError("Node has no attribute 'access_tags'")
        return ListView(tags)

    @property
    def formats(self) -> list[str]:
        """The media types this node can be exported as: those of its specs (an xarray
        dataset exports as a table too), then those of its structure family."""
        formats = self.context.server_info.get("formats", {})
        return list(dict.fromkeys(m for key in self._format_keys() for m in formats.get(key, [])))

    def _format_keys(self) -> list[str]:
        """Where the server's format and alias tables list this node: specs, then family."""
        return [*(spec.name for spec in self.specs), self._item["attributes"]["structure_family"]]

    def structure(self) -> Any:
        if self._structure_cache is None:
            from ..structures.families import structure_from_json

            self._structure_cache = structure_from_json(
                self._item["attributes"]["structure_family"],
                self._item["attributes"].get("structure"),
            )
        return self._structure_cache

    def data_sources(self) -> list[Any]:
        """The node's data sources (storage, mimetype, assets); fetched when not at hand.

        As upstream's client gives them: each ``structure`` is the JSON the server sent (a
        dict: ``source.structure["shape"]``); ``structure_family`` and ``management`` are
        ``str`` enums (equal to their names)."""
        sources = self._item["attributes"].get("data_sources")
        if sources is None:
            item = self.context.get_json(
                f"metadata/{self._path}", params={"include_data_sources": "true"}
            )["data"]
            sources = item["attributes"].get("data_sources") or []
        from ..structures.data_source import data_source_as_sent

        return [data_source_as_sent(s) for s in sources]

    def include_data_sources(self) -> BaseClient:
        """A copy of this client whose items carry their data sources."""
        return self.new_variation(include_data_sources=True).refresh()

    # --- logins (the context's; upstream offers them on every node) ---

    def login(
        self,
        username: str | None = None,
        provider: str | None = None,
        *,
        password: str | None = None,
        remember_me: bool = True,
    ) -> None:
        """Log in to a multi-user server (prompting for what is not given)."""
        self.context.authenticate(
            remember_me=remember_me, provider=provider, username=username, password=password
        )

    def logout(self) -> None:
        """End the login of this node's context (every node read through it)."""
        self.context.logout()

    # --- variations ---

    def new_variation(self, **changes: Any) -> BaseClient:
        arguments = {
            "item": self._item,
            "structure_clients": self.structure_clients,
            "include_data_sources": self._include_data_sources,
            **changes,
        }
        return type(self)(self.context, **arguments)

    def client_for_item(self, item: dict[str, Any]) -> BaseClient:
        """The client of another node (a child, a lookup) read through this context."""
        from .constructors import client_class_for

        cls = client_class_for(item, self.structure_clients)
        return cls(
            self.context, item=item, structure_clients=self.structure_clients,
            include_data_sources=self._include_data_sources,
        )  # fmt: skip

    def close_stream(self) -> None:
        """Declare the end of the writes to this node: its subscribers' streams end (their
        ``stream_closed`` callbacks run)."""
        self.context.request("DELETE", f"stream/close/{self._path}")

    def refresh(self) -> BaseClient:
        """Read the node again (its metadata and structure may have changed)."""
        params = {"include_data_sources": "true"} if self._include_data_sources else None
        self._item = self.context.get_json(f"metadata/{self._path}", params=params)["data"]
        self._structure_cache = None
        return self

    @property
    def parent(self) -> BaseClient | None:
        from .constructors import from_context

        if not self.path_parts:
            return None
        return from_context(
            self.context, self.structure_clients, node_path_parts=self.path_parts[:-1]
        )

    # --- metadata ---

    def update_metadata(
        self,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
        *,
        drop_revision: bool = False,
    ) -> None:
        """Merge ``metadata`` into the node's (``DELETE_KEY`` removes a key); replace specs
        and access tags when given."""
        metadata = check_metadata(metadata)
        if metadata is not None and _sets_null(metadata):
            # A merge patch reads null as "delete": say it as a JSON Patch instead, made on
            # the metadata as they are now (upstream's client also sends a JSON Patch).
            self.refresh()
            patch = _json_patch(metadata, self._metadata_copy())
            body: dict[str, Any] = {"content-type": "application/json-patch+json",
                                    "metadata": patch}  # fmt: skip
            if specs is not None:
                body["specs"] = [{"op": "add", "path": "", "value": specs_json(specs)}]
            if access_tags is not None:
                body["access_tags"] = [{"op": "add", "path": "", "value": list(access_tags)}]
            self._send_patch(body, drop_revision)
            return
        body = {"content-type": "application/merge-patch+json"}
        if metadata is not None:
            body["metadata"] = _merge_patch(dict(metadata))
        if specs is not None:
            body["specs"] = specs_json(specs)
        if access_tags is not None:
            body["access_tags"] = list(access_tags)
        self._send_patch(body, drop_revision)

    def build_metadata_patches(
        self,
        metadata: Mapping[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: Sequence[str] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        """The JSON Patches (RFC 6902) that ``patch_metadata`` takes for an update as
        ``update_metadata`` spells it, made on the metadata this client last read, as
        upstream's client makes them: ``(metadata_patch, specs_patch, access_tags_patch)``.

        ``metadata`` merges into the metadata (dicts merge, ``DELETE_KEY`` removes a key,
        anything else replaces); no metadata is an empty patch. ``specs`` (names) and
        ``access_tags`` replace the node's; not given (or no access tags), their patch is
        None.

        >>> md = node.metadata_copy()[0]
        >>> md["unwanted_key"] = DELETE_KEY
        >>> mp, sp, ap = node.build_metadata_patches(metadata=md)
        >>> node.patch_metadata(metadata_patch=mp)
        """
        from .json_diff import json_patch_from_diff
        from .metadata_update import apply_update_patch

        attributes = self._item["attributes"]
        if metadata is None:
            metadata_patch: list[dict[str, Any]] = []
        else:
            if not isinstance(metadata, Mapping):
                raise ValueError(
                    f"Metadata must serialize as a JSON object, cannot be {type(metadata)}."
                )
            current = attributes.get("metadata") or {}
            updated = apply_update_patch(copy.deepcopy(current), metadata)
            metadata_patch = json_patch_from_diff(current, updated)
        specs_patch = None
        if specs is not None:
            names = [spec["name"] for spec in attributes.get("specs") or []]
            specs_patch = json_patch_from_diff(names, specs)
        access_tags_patch = None
        if access_tags:  # no access tags (an empty list too) change nothing
            current_tags = list(attributes.get("access_tags") or [])
            access_tags_patch = json_patch_from_diff(current_tags, access_tags)
        return metadata_patch, specs_patch, access_tags_patch

    def patch_metadata(
        self,
        metadata_patch: Any = None,
        specs_patch: Any = None,
        access_tags_patch: Any = None,
        content_type: str = "application/json-patch+json",
        drop_revision: bool = False,
        *,
        access_blob_patch: Any = None,
    ) -> None:
        """Apply a JSON Patch (or, with that content type, a merge patch) to the metadata,
        the specs (which a patch may name as text or ``Spec``) and the access tags (a list
        of tag names), as upstream's client does; ``access_blob_patch`` patches the access
        blob (``{"tags": [...]}``) instead of the tags."""
        body: dict[str, Any] = {"content-type": content_type}
        if metadata_patch is not None:
            body["metadata"] = metadata_patch
        if specs_patch is not None:
            body["specs"] = _specs_patch_json(specs_patch, content_type)
        if access_tags_patch is not None:
            body["access_tags"] = access_tags_patch
        if access_blob_patch is not None:
            body["access_blob"] = access_blob_patch
        self._send_patch(body, drop_revision)

    def _send_patch(self, body: dict[str, Any], drop_revision: bool) -> None:
        # Upstream's server requires the key (null: specs unchanged), as its client sends it.
        body.setdefault("specs", None)
        params = {"drop_revision": "true"} if drop_revision else None
        self.context.request("PATCH", f"metadata/{self._path}", params=params, **json_body(body))
        self.refresh()

    def replace_metadata(
        self,
        metadata: dict[str, Any] | None = None,
        specs: Sequence[Any] | None = None,
        access_tags: list[str] | None = None,
        drop_revision: bool = False,
    ) -> None:
        """Replace the node's metadata (and specs, access tags) whole."""
        metadata = check_metadata(metadata)
        body: dict[str, Any] = {"metadata": metadata}
        if specs is not None:
            body["specs"] = specs_json(specs)
        if access_tags is not None:
            body["access_tags"] = list(access_tags)
        params = {"drop_revision": "true"} if drop_revision else None
        self.context.request("PUT", f"metadata/{self._path}", params=params, **json_body(body))
        self.refresh()

    @property
    def metadata_revisions(self) -> MetadataRevisions:
        return MetadataRevisions(self.context, self._path)

    def delete(self, recursive: bool = False, external_only: bool = True) -> None:
        """Delete this node (a container's contents too with ``recursive``)."""
        params = {"recursive": str(recursive).lower(), "external_only": str(external_only).lower()}
        self.context.request("DELETE", f"metadata/{self._path}", params=params)

    # --- zarr ---

    def zarr_store(self, format: int = 3) -> Any:
        """A read-only zarr-python store of this node (``/zarr/v{format}``), carrying the
        client's credentials: ``zarr.open(node.zarr_store())``, ``xarray.open_zarr(...)``."""
        return self.context.zarr_store(self.path_parts, format)

    # --- raw assets ---

    def asset_manifest(self, data_sources: Sequence[Any]) -> dict[int, list[str] | None]:
        """The files of each asset of ``data_sources`` (as ``data_sources()`` returns them), by
        asset id: for a directory asset its files relative to it, for a file asset None."""
        manifests: dict[int, list[str] | None] = {}
        for source in data_sources:
            for asset in source.assets:
                manifests[asset.id] = None
                if asset.is_directory:
                    document = self.context.get_json(
                        f"asset/manifest/{self._path}", params={"id": asset.id}
                    )
                    manifests[asset.id] = list(document["manifest"])
        return manifests

    def raw_export(
        self,
        destination: Any = None,
        max_workers: int = 4,
        compression: bool = True,
        **kwargs: Any,
    ) -> list[Any]:
        """Download the files holding this node's data, as the server stores them.

        ``destination`` is a directory (default: the current one) or a mutable mapping, which
        receives each file as ``io.BytesIO``. One asset lands as its file name (a directory
        asset as its files); several are placed under their asset ids. Returns the paths (or
        keys) written, in the order of the assets and their manifests. ``compression=False``
        asks for the bytes as stored (``Accept-Encoding: identity``).
        """
        from .assets import export_plan, fetch_all

        if "destination_directory" in kwargs:  # upstream's former name
            import warnings

            if destination is not None:
                raise TypeError("Give destination, not also destination_directory")
            warnings.warn(
                "raw_export(destination_directory=...) is deprecated; use destination=...",
                DeprecationWarning,
                stacklevel=2,
            )
            destination = kwargs.pop("destination_directory")
        if kwargs:
            raise TypeError(f"raw_export() got unexpected keyword arguments {sorted(kwargs)}")
        sources = self.data_sources()
        if len(sources) != 1:
            raise NotImplementedError(
                f"raw_export exports a node with one data source; this one has {len(sources)}"
            )
        plan = export_plan(sources[0], self.asset_manifest(sources), destination)
        return fetch_all(self, plan, destination, max_workers, compression)

    # --- export ---

    def export(self, filepath: Any, *, format: str | None = None, **params: Any) -> None:
        """Write the node to ``filepath`` (a path or a writable binary file) in ``format``
        (a media type or a file extension; default: from the file's suffix)."""
        media_type = self._export_media_type(filepath, format)
        content = self.context.get_content(
            f"{self._export_route}/{self._path}", params={"format": media_type, **params}
        )
        if hasattr(filepath, "write"):
            filepath.write(content)
        else:
            with open(filepath, "wb") as file:
                file.write(content)

    _export_route = "node/full"

    def _export_media_type(self, filepath: Any, format: str | None) -> str:
        if format is None:
            name = str(getattr(filepath, "name", filepath))
            if "." not in name:
                raise ValueError("Give format=... or a file name with a suffix")
            format = name.rsplit(".", 1)[1]
        if "/" in format:
            return format
        tables = self.context.server_info.get("aliases", {})
        known: list[str] = []
        for key in self._format_keys():
            for media_type, extensions in tables.get(key, {}).items():
                if format in extensions:
                    return media_type
                known.extend(extensions)
        raise ValueError(f"Unknown format {format!r}; known: {sorted(set(known))}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} /{'/'.join(self.path_parts)}>"


class MetadataRevisions:
    """The earlier versions of a node's metadata, oldest first, as the server's items (as
    upstream: ``node.metadata_revisions[0]["attributes"]["metadata"]``, and
    ``["revision_number"]`` for ``delete_revision``)."""

    def __init__(self, context: Context, path: str):
        self.context = context
        self._path = path

    def _page(self, offset: int, limit: int) -> dict[str, Any]:
        return self.context.get_json(
            f"revisions/{self._path}", params={"page[offset]": offset, "page[limit]": limit}
        )

    def __len__(self) -> int:
        return int(self._page(0, 1)["meta"]["count"])

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            found = self._page(start, max(stop - start, 0))["data"]
            return found[::step]
        index = operator.index(index)  # a TypeError for anything but an integer or a slice
        if index < 0:
            index += len(self)
        found = self._page(index, 1)["data"] if index >= 0 else []
        if not found:
            raise IndexError(index)
        return found[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:])

    def delete_revision(self, number: int) -> None:
        self.context.request("DELETE", f"revisions/{self._path}", params={"number": number})


__all__ = ["DELETE_KEY", "BaseClient", "MetadataRevisions"]
