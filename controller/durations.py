"""Go-style durations ("1h", "15s", "1h30m", "0"), the format Fleet's `spec.pollingInterval` uses."""

from __future__ import annotations

import re

# Fleet's GitRepo CRD (v0.16.1 charts/fleet-crd/templates/crds.yaml, spec.pollingInterval): maxLength 32 and
# the CEL rule `self == '0' || (self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') &&
# duration(self) <= duration('2562047h'))`. The API server answers 422 to anything else.
FLEET_INTERVAL_MAX_LENGTH = 32
FLEET_INTERVAL_MAX_SECONDS = 2562047 * 3600.0

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|µs|ms|s|m|h))+$")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError names the bad input."""
    if text == "0":
        return 0.0
    if not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration like 15s, 1h or 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
