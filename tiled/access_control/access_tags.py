"""Upstream's names for the access-tag machinery: the parser that reads tag definitions from the
catalog database (:mod:`tiled.access.catalog_tags`) and the compiler that writes them there
(:mod:`tiled.access.tag_compiler`)."""

from ..access.catalog_tags import AccessTagsParser
from ..access.tag_compiler import AccessTagsCompiler

__all__ = ["AccessTagsCompiler", "AccessTagsParser"]
