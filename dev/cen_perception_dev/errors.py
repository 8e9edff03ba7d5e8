"""The developer tools' errors: ``DevToolError`` is their root (itself a runtime error, so a
caller may catch ``cen_perception.errors.CenPerceptionError`` for both)."""
from cen_perception.errors import CenPerceptionError


class DevToolError(CenPerceptionError):
    """Base of every error the developer tools raise on purpose."""
