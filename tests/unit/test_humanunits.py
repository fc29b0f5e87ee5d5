"""cnm.humanunits against go-units' own cases (Docker's ps, images and history columns)."""

import pytest

from cnm.humanunits import human_duration, human_size


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.4, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (119, "About a minute"),  # minutes are truncated ...
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "About an hour"),
        (5400, "2 hours"),  # ... hours rounded half up (int(h + 0.5)) ...
        (7200, "2 hours"),
        (9000, "3 hours"),  # ... not to even, as Python's round() would (2)
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (15 * 86400, "2 weeks"),
        (61 * 86400, "2 months"),
        (800 * 86400, "2 years"),
        (3 * 365 * 86400 - 1, "2 years"),  # years truncated again
    ],
)
def test_human_duration_matches_go_units(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    "size, text",
    [(0, "0B"), (999, "999B"), (1000, "1kB"), (1234567, "1.23MB"), (4_200_000_000, "4.2GB"), (10**18, "1EB")],
)
def test_human_size_three_significant_digits(size, text):
    assert human_size(size) == text
