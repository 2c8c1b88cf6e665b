"""How ``tiled serve`` builds its application: from a *recipe*, a builder's name and its
arguments as JSON, so that every worker process of ``--workers N`` builds the same application.

The serving process decides everything that must be the same in every worker (the API key,
the catalog's location, an index made once), puts it in the recipe, builds the application
once itself to check it, and hands the recipe to the workers in the environment variable
:data:`RECIPE_VARIABLE`; uvicorn then calls :func:`app_from_environment` in each worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The recipe of the workers of one ``tiled serve --workers N`` (it holds the API key: the
# variable lives only in the environment of that server's processes).
RECIPE_VARIABLE = "TILED_SERVE_RECIPE"
# What uvicorn imports in each worker.
FACTORY = f"{__name__}:app_from_environment"


@dataclass(frozen=True)
class AppRecipe:
    """``BUILDERS[builder](**arguments, scalable=...)`` builds the application."""

    builder: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"builder": self.builder, "arguments": self.arguments})

    @classmethod
    def from_json(cls, text: str) -> AppRecipe:
        document = json.loads(text)
        return cls(document["builder"], document["arguments"])


def _demo(*, api_key: str, scalable: bool) -> Any:
    from ..examples.generated import tree
    from ..server.app import build_app

    authentication = {"allow_anonymous_access": True, "single_user_api_key": api_key}
    return build_app(tree, authentication=authentication, scalable=scalable)


def _pyobject(*, object_path: str, api_key: str, public: bool, scalable: bool) -> Any:
    from ..server.app import build_app
    from ..utils import import_object

    authentication = {"single_user_api_key": api_key, "allow_anonymous_access": public or None}
    return build_app(import_object(object_path), authentication=authentication, scalable=scalable)


def _config_document(
    *, document: dict[str, Any], overrides: dict[str, Any], scalable: bool,
    catalog_variables: bool = True,
) -> Any:  # fmt: skip
    from ..config import validate_config
    from ..server.app import build_app_from_config

    config = validate_config(document, overrides=overrides, catalog_variables=catalog_variables)
    return build_app_from_config(config, scalable=scalable)


def _config_file(*, path: str, public: bool, api_key: str | None, scalable: bool) -> Any:
    from ..config import parse_configs
    from ..server.app import build_app_from_config

    config = parse_configs(path).with_overrides(public=public, api_key=api_key)
    return build_app_from_config(config, scalable=scalable)


def _directory_index(
    *,
    database: str,
    directory: str,
    adapters_by_mimetype: dict[str, str],
    api_key: str,
    public: bool,
    scalable: bool,
) -> Any:
    """A directory indexed beforehand (by the serving process) into the catalog ``database``,
    served as it is: the index is not walked again here."""
    from ..catalog import from_uri
    from ..server.app import build_app

    tree = from_uri(
        f"sqlite:///{database}",
        readable_storage=[directory],
        adapters_by_mimetype=adapters_by_mimetype,
        durable=False,
    )
    authentication = {"single_user_api_key": api_key, "allow_anonymous_access": public or None}
    return build_app(tree, authentication=authentication, scalable=scalable)


BUILDERS: dict[str, Callable[..., Any]] = {
    "demo": _demo,
    "pyobject": _pyobject,
    "config-document": _config_document,
    "config-file": _config_file,
    "directory-index": _directory_index,
}


def build(recipe: AppRecipe, scalable: bool = False) -> Any:
    """The application ``recipe`` describes."""
    return BUILDERS[recipe.builder](**recipe.arguments, scalable=scalable)


def app_from_environment() -> Any:
    """The application factory of each worker process (``uvicorn --factory``)."""
    from ..server.logging import install as redact_secrets_in_logs

    text = os.environ.get(RECIPE_VARIABLE)
    if not text:
        raise RuntimeError(
            f"{RECIPE_VARIABLE} is not set: this factory serves the workers of "
            "`tiled serve ... --workers N`; to run uvicorn yourself, use "
            "`uvicorn --factory tiled.server.app:app_factory` with TILED_CONFIG set"
        )
    redact_secrets_in_logs()  # uvicorn configured this worker's logging before calling here
    # Several processes share the work: the recipe is built with the multi-process checks.
    return build(AppRecipe.from_json(text), scalable=True)
