"""The errors of configuration: one line per problem, each naming where it is."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be used. ``problems`` holds one line per problem."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class UnsupportedSetting(ConfigError):
    """An upstream Tiled setting this server does not implement.

    Raised by code that receives a configured value (an access policy's arguments, say) with
    ``key`` relative to that code; the configuration layer puts its location in front.
    """

    def __init__(self, key: str, why: str):
        self.key = key
        self.why = why
        super().__init__(f"{key}: not supported by this server: {why}")
