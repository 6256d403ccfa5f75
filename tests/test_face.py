"""Face boxes, crops and temporal smoothing."""

import numpy as np
import pytest
from conftest import SHARED

from xnemo_core.composite import feathered_mask, match_colours, paste_back
from xnemo_core.face import (
    FaceDetector,
    FaceNotFoundError,
    box_at,
    boxes_drawn,
    crop_with_padding,
    driving_crops,
    fill_missing,
    gaussian_smooth,
    reference_crops,
    scale_box,
    widened_box,
)
from xnemo_core.video import read_frames, read_image

MEDIA = SHARED / "media"


@pytest.fixture(scope="module")
def media():
    if not (MEDIA / "demo_reference.png").is_file():
        pytest.skip(f"real test media not found at {MEDIA}")
    frames, fps = read_frames(MEDIA / "demo_driving.mp4", max_frames=12)
    return read_image(MEDIA / "demo_reference.png"), frames, fps


def test_smoothing_keeps_constants_and_spreads_an_impulse_symmetrically():
    assert np.allclose(gaussian_smooth(np.full((9, 2), 3.0), 5.0), 3.0)
    impulse = np.zeros((61, 1))
    impulse[30] = 1.0
    response = gaussian_smooth(impulse, 5.0)[:, 0]
    assert np.isclose(response.sum(), 1.0) and np.allclose(response, response[::-1])
    assert response.argmax() == 30 and np.isclose(response[30] / response[35], np.exp(0.5))


def test_missing_boxes_take_the_nearest_detected_one():
    a, b = np.array([0, 0, 10, 10.0]), np.array([5, 5, 15, 15.0])
    filled = fill_missing([None, a, None, None, b, None])
    assert [tuple(row) for row in filled] == [tuple(a)] * 3 + [tuple(b)] * 3


def test_square_scaling_falls_back_to_the_box_at_the_border():
    assert np.allclose(scale_box(np.array([40, 40, 60, 80.0]), 1.1, (200, 200)), [28, 38, 72, 82])
    border = np.array([0, 0, 20, 20.0])
    assert np.allclose(scale_box(border, 1.1, (200, 200)), border)


def test_fixed_size_boxes_are_shifted_back_inside_the_frame():
    box = box_at(np.array([5.0, 100.0]), (40, 40), (200, 300))
    assert np.allclose(box, [0, 80, 40, 120])


def test_wide_portrait_box_is_padded_where_it_leaves_the_image():
    image = np.full((100, 100, 3), 255, np.uint8)
    box = widened_box(np.array([10, 10, 90, 90.0]), 0.5, image.shape)
    crop = crop_with_padding(image, box)
    assert crop.shape == (box[3] - box[1], box[2] - box[0], 3)
    assert crop[0, 0].max() == 0 and crop[crop.shape[0] // 2, crop.shape[1] // 2].min() == 255


def test_already_cropped_inputs_are_only_resized():
    frames = np.zeros((3, 50, 60, 3), np.uint8)
    crops = driving_crops(frames, detector=None)
    assert crops.faces.shape == (3, 224, 224, 3) and crops.undetected == []
    assert reference_crops(frames[0], None).face.shape == (224, 224, 3)


def test_a_non_square_face_crop_is_cut_to_its_centre_square_and_said_so():
    image = np.zeros((60, 100, 3), np.uint8)
    image[:, 20:80] = 200  # the centre 60×60
    crops = reference_crops(image, None)
    assert crops.portrait.shape == (60, 60, 3) and (crops.portrait == 200).all()
    assert crops.portrait_box == (20, 0, 80, 60)
    assert "100×60, not square: its centre 60×60 is animated" in crops.note
    assert reference_crops(image[:, 20:80], None).note is None
    pasted, _ = paste_back(image.astype(np.float32) / 255, np.zeros((1, 64, 64, 3), np.float32), crops.portrait_box)
    assert pasted.shape == (1, 60, 100, 3) and (pasted[0, :, :20] == 0).all() and pasted[0, 30, 50].max() < 0.05


def test_no_face_anywhere_is_a_clear_error():
    gradient = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (64, 1, 3))
    with pytest.raises(FaceNotFoundError, match="any of the 2 driving frames"):
        driving_crops(np.stack([gradient, gradient]), FaceDetector())
    with pytest.raises(FaceNotFoundError, match="reference image"):
        reference_crops(gradient, FaceDetector())


def test_real_portrait_and_driving_faces_are_found(media):
    reference, frames, _ = media
    crops = reference_crops(reference, FaceDetector())
    assert crops.face.shape == (224, 224, 3)
    left, top, right, bottom = crops.portrait_box
    assert right - left == bottom - top or abs((right - left) - (bottom - top)) <= 2
    driving = driving_crops(frames, FaceDetector())
    assert driving.faces.shape == (12, 224, 224, 3) and driving.undetected == []
    sizes = driving.boxes[:, 2:] - driving.boxes[:, :2]
    assert np.allclose(sizes, sizes[0]), "driving crops keep the first frame's box size"


def test_a_frame_without_face_reuses_its_neighbours_box(media):
    _, frames, _ = media
    frames = frames.copy()
    frames[5] = 0
    with pytest.warns(UserWarning, match="no face found in 1 of 12"):
        driving = driving_crops(frames, FaceDetector())
    assert driving.undetected == [5]


def test_paste_back_blends_through_a_feathered_mask_it_returns():
    image = np.full((100, 120, 3), 0.25, np.float32)
    frames = np.ones((2, 32, 32, 3), np.float32)
    pasted, mask = paste_back(image, frames, (20, 10, 80, 70))
    assert mask.shape == (100, 120) and mask[40, 50] == pytest.approx(1) and mask[10, 20] < 0.05
    assert (mask[:, :20] == 0).all() and (pasted[:, :, :20] == 0.25).all()
    assert pasted[0, 40, 50].min() == pytest.approx(1)
    edge = pasted[0, 40, 20:50, 0]
    assert np.all(np.diff(edge) >= -1e-6) and 0.25 < edge[3] < 1, "a soft border, not a hard patch"
    expected = np.broadcast_to(mask[..., None] + (1 - mask[..., None]) * 0.25, pasted[0].shape)
    np.testing.assert_allclose(pasted[0], expected, atol=1e-5)


def test_colour_match_gives_the_frames_the_crops_colours_for_the_whole_clip():
    target = np.random.default_rng(0).uniform(0.3, 0.7, (40, 40, 3)).astype(np.float32)
    target[..., 0] += 0.2
    frames = np.random.default_rng(1).uniform(0.0, 0.5, (3, 40, 40, 3)).astype(np.float32)
    matched = match_colours(frames, target)
    np.testing.assert_allclose(matched.mean(axis=(0, 1, 2)), target.mean(axis=(0, 1)), atol=0.02)
    assert not np.allclose(frames.mean(axis=(0, 1, 2)), target.mean(axis=(0, 1)), atol=0.05)
    assert feathered_mask(10, 10).max() <= 1


class StubDetector:
    """Fixed boxes per frame, as FaceDetector returns them."""

    def __init__(self, per_frame):
        self.per_frame = iter(per_frame)
        self.largest = None

    def all_faces(self, frame):
        boxes = np.asarray(next(self.per_frame), dtype=np.float64).reshape(-1, 4)
        return boxes[np.argsort(boxes[:, 0])]

    def __call__(self, frame):
        boxes = self.all_faces(frame)
        return boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))] if len(boxes) else None


def test_a_chosen_face_is_taken_from_the_left_then_followed_as_it_moves():
    frames = np.zeros((4, 200, 300, 3), np.uint8)
    left, right = [20, 50, 80, 110], [200, 40, 280, 120]  # the right face is the larger one
    moved_left = [70, 50, 130, 110]  # the left face moves right, the right face further right
    per_frame = [[left, right], [right], [moved_left, [230, 40, 290, 120]], [[110, 50, 170, 110]]]
    with pytest.warns(UserWarning, match="no face found in 1 of 4 driving frames"):
        followed = driving_crops(frames, StubDetector(per_frame), face_index=0)
    centres = (followed.boxes[:, 0] + followed.boxes[:, 2]) / 2
    assert centres[0] < 100 and centres[1] < 100 and centres[3] < 200
    largest = driving_crops(frames, StubDetector(per_frame))
    assert (largest.boxes[0, 0] + largest.boxes[0, 2]) / 2 > 200
    assert followed.undetected == [1]  # only the other face was seen there: the chosen one was lost, not swapped
    with pytest.raises(FaceNotFoundError, match="face index 2 needs a frame with at least 3 faces, but no driving"):
        driving_crops(frames, StubDetector(per_frame), face_index=2)
    with pytest.raises(ValueError, match="face index must be 0 or more"):
        driving_crops(frames, StubDetector(per_frame), face_index=-1)


def test_boxes_are_drawn_green_where_found_and_orange_where_borrowed():
    frames = np.zeros((2, 40, 60, 3), np.uint8)
    boxes = np.array([[10, 5, 30, 25], [20, 10, 40, 30]], dtype=np.float64)
    drawn = boxes_drawn(frames, boxes, undetected=[1])
    assert drawn[0, 5, 10].tolist() == [0, 220, 0] and drawn[1, 10, 20].tolist() == [255, 160, 0]
    assert drawn[0, 15, 20].tolist() == [0, 0, 0] and (frames == 0).all()  # inside untouched, input unchanged
