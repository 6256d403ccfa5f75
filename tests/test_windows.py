"""Context-window schedules."""

import pytest

from xnemo_core.windows import long_windows, official_windows


def test_official_schedule_matches_the_reference_code():
    assert official_windows(8, size=4, overlap=1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 0, 1]]
    assert official_windows(8, size=4, overlap=1, offset=2) == [[2, 3, 4, 5], [5, 6, 7, 0], [0, 1, 2, 3]]


def test_official_schedule_short_clip_is_one_window():
    assert official_windows(10, size=24, overlap=4) == [list(range(10))]


@pytest.mark.parametrize("frames", [25, 48, 230])
@pytest.mark.parametrize("offset", [0, 7, 23])
def test_official_schedule_covers_every_frame_with_full_windows(frames, offset):
    windows = official_windows(frames, size=24, overlap=4, offset=offset)
    assert all(len(w) == 24 and len(set(w)) == 24 for w in windows)
    assert set().union(*windows) == set(range(frames))


@pytest.mark.parametrize("frames", [33, 48, 240, 1000])
def test_long_schedule_covers_in_order_without_wrapping(frames):
    windows = long_windows(frames, size=32, overlap=4)
    assert all(w == list(range(w[0], w[0] + len(w))) and len(w) <= 32 for w in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == frames - 1
    for before, after in zip(windows, windows[1:]):
        assert before[-1] - after[0] + 1 >= 4  # neighbours overlap by at least 4 frames
    assert len(windows) <= len(official_windows(frames, size=24, overlap=4))
    assert sum(map(len, windows)) <= sum(map(len, official_windows(frames, size=24, overlap=4)))


def test_long_schedule_shortens_windows_it_does_not_need():
    assert long_windows(240, size=32, overlap=4) == [
        list(range(s, s + 31)) for s in (0, 26, 52, 78, 104, 131, 157, 183, 209)
    ]


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="no frames"):
        official_windows(0)
    with pytest.raises(ValueError, match="overlap 24"):
        long_windows(100, size=24, overlap=24)
