"""The help layout of the ``cen-train`` commands."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is nothing to show (None, flags) or the help already
    gives one in brackets."""

    def _get_help_string(self, action):
        if (action.default is None or isinstance(action.default, bool)
                or "[default" in (action.help or "")):
            return action.help
        return super()._get_help_string(action)
