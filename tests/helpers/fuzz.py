"""The hypothesis settings of every fuzz test. ``CLIBD_FUZZ_EXAMPLES`` raises the number of
cases per test: 300 in the ordinary suite, more in the soak group (``make soak``)."""

import os

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES = int(os.environ.get("CLIBD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
