"""The synthetic face world, the driving augmentations and the training datasets."""

import numpy as np
import pytest
import torch

from xnemo_core.synthetic import (
    LANDMARKS,
    MOTION_FIELDS,
    landmarks,
    random_identity,
    random_motion_clip,
    render,
    render_clip,
)
from xnemo_core.train.augment import augment_driving
from xnemo_core.train.data import FaceVideoFolder, SyntheticFaces
from xnemo_core.video import write_video

NEUTRAL = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.float32)


def with_motion(**values) -> np.ndarray:
    motion = NEUTRAL.copy()
    for name, value in values.items():
        motion[MOTION_FIELDS.index(name)] = value
    return motion


def mouth_pixels(frame: np.ndarray) -> int:
    red, green, blue = (frame[..., c].astype(int) for c in range(3))
    return int(((abs(red - 110) < 25) & (abs(green - 30) < 25) & (abs(blue - 40) < 25)).sum())


def white_pixels(frame: np.ndarray) -> int:
    return int((frame.min(axis=-1) > 235).sum())


def test_identities_clips_and_frames_are_deterministic():
    a = random_identity(np.random.default_rng(3))
    assert a == random_identity(np.random.default_rng(3)) != random_identity(np.random.default_rng(4))
    clip = random_motion_clip(np.random.default_rng(5), 12)
    assert clip.shape == (12, len(MOTION_FIELDS)) and np.array_equal(
        clip, random_motion_clip(np.random.default_rng(5), 12)
    )
    frames = render_clip(a, clip, 64)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, render_clip(a, clip, 64))


def test_motion_stays_in_range_and_varies_smoothly():
    clip = random_motion_clip(np.random.default_rng(0), 200)
    assert clip.min() >= -1 and clip.max() <= 1
    pose = clip[:, :3]
    assert np.abs(np.diff(pose, axis=0)).max() < 0.2 and pose.std(axis=0).min() > 0.05


@pytest.mark.parametrize(
    "field, count, bigger",
    [("jaw_open", mouth_pixels, True), ("blink_left", white_pixels, False), ("blink_right", white_pixels, False)],
)
def test_each_expression_parameter_changes_the_face_as_named(field, count, bigger):
    who = random_identity(np.random.default_rng(1))
    rest, moved = count(render(who, NEUTRAL, 128)), count(render(who, with_motion(**{field: 1.0}), 128))
    assert (moved > rest * 1.3) if bigger else (moved < rest * 0.8)


def test_cross_reenactment_keeps_the_identity_of_a_and_the_motion_of_b():
    a, b = (random_identity(np.random.default_rng(seed)) for seed in (10, 11))
    motion_b = with_motion(jaw_open=1.0, blink_left=1.0, roll=0.5)
    cross = render(a, motion_b, 128)
    # A's appearance: its background and skin; B's motion: the same open mouth and shut eye as B's own frame.
    assert np.abs(cross[0, 0].astype(int) - a.background_top).max() <= 2
    own_a, own_b = render(a, NEUTRAL, 128), render(b, motion_b, 128)
    assert mouth_pixels(cross) > 1.3 * mouth_pixels(own_a)
    assert abs(mouth_pixels(cross) - mouth_pixels(own_b)) < 0.5 * mouth_pixels(own_b)
    assert not np.array_equal(cross, own_b)


def test_augmentation_changes_each_image_differently_and_keeps_range():
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    augmented = augment_driving(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and augmented.min() >= -1 and augmented.max() <= 1
    change = (augmented - images).abs().mean(dim=(1, 2, 3))
    assert change.min() > 0.01 and len(set(change.tolist())) == 4
    again = augment_driving(images, torch.Generator().manual_seed(0))
    assert torch.equal(augmented, again)


def test_augmentation_keeps_the_head_tilt():
    # A horizontal bar stays horizontal: a rotation would change the roll the latent must carry.
    images = -torch.ones(6, 3, 64, 64)
    images[:, :, 30:34] = 1
    augmented = augment_driving(images, torch.Generator().manual_seed(1), colour=0.0, max_hue=0.0, grayscale_p=0.0)
    rows = augmented[:, 0, :, 8:56].argmax(dim=1)  # brightest row of each column
    assert all(len(set(image_rows.tolist())) == 1 for image_rows in rows)
    assert len({int(r[0]) for r in rows}) > 1  # but the bar did move


def test_synthetic_dataset_items_and_disjoint_seeds():
    train, held_out = SyntheticFaces(4, frames=3, size=32, seed=0), SyntheticFaces(4, frames=3, size=32, seed=1)
    item = train[2]
    assert item["frames"].shape == (3, 3, 32, 32) and item["motion"].shape == (3, len(MOTION_FIELDS))
    assert -1 <= item["frames"].min() and item["frames"].max() <= 1
    assert torch.equal(item["frames"], train[2]["frames"])
    assert not torch.equal(item["identity"], held_out[2]["identity"])


def test_video_folder_dataset_reads_files_and_frame_folders(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    write_video(tmp_path / "a.mp4", frames)
    write_video(tmp_path / "b", frames)
    data = FaceVideoFolder(tmp_path, frames=4, size=32)
    assert len(data) == 2 and all(data[i]["frames"].shape == (4, 3, 32, 32) for i in range(2))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos"):
        FaceVideoFolder(tmp_path / "empty")


def test_a_span_spreads_a_clips_frames_over_a_longer_performance():
    consecutive = SyntheticFaces(16, frames=2, size=32, seed=0)
    spread = SyntheticFaces(16, frames=2, size=32, seed=0, span=250)

    def mean_pose_change(data):
        return np.mean([np.abs(np.diff(data.motion(i), axis=0)).mean() for i in range(len(data))])

    assert mean_pose_change(spread) > 5 * mean_pose_change(consecutive)
    # Without a span the clip is the whole performance, as before spans existed (held-out sets unchanged).
    np.testing.assert_array_equal(consecutive.motion(3), random_motion_clip(np.random.default_rng([0, 3, 1]), 2))


def test_a_video_folder_span_draws_distinct_frames_in_order(tmp_path):
    frames = np.stack([np.full((8, 8, 3), 20 * i, np.uint8) for i in range(12)])
    write_video(tmp_path / "clip", frames)
    clip = FaceVideoFolder(tmp_path, frames=3, size=8, span=12)[0]["frames"]
    levels = clip.mean(dim=(1, 2, 3)).tolist()
    assert levels == sorted(levels) and len(set(levels)) == 3


def test_landmarks_mark_the_rendered_features_and_turn_with_the_head():
    face = random_identity(np.random.default_rng(7))
    size = 256
    frame = render(face, with_motion(gaze_x=0.8), size)
    points = landmarks(face, with_motion(gaze_x=0.8))
    assert points.shape == (LANDMARKS, 2) and ((0 < points) & (points < 1)).all()
    for iris in points[[0, 5]]:  # the pupil at each iris landmark is near-black
        x, y = (iris * size).astype(int)
        assert frame[y, x].max() < 40
    lips = frame[..., 0].astype(int) - frame[..., 1] > 60  # lips and their outline; skin is less red
    for x, y in (points[11:15] * size).astype(int):  # mouth corners and lip centres
        assert lips[y - 1 : y + 2, x - 1 : x + 2].any()
    closed = landmarks(face, with_motion(blink_left=1.0))
    assert np.allclose(closed[1], closed[2]) and not np.allclose(points[1], points[2])  # lids meet
    tilted = landmarks(face, with_motion(roll=0.5))
    centre = np.array([0.5, 0.55])
    angle = np.deg2rad(10.0)  # 20° per unit of roll, counter-clockwise on screen (y down)
    turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    assert np.allclose(tilted, (landmarks(face, NEUTRAL) - centre) @ turn.T + centre, atol=1e-5)
