"""A file skipped because it cannot be decoded is reported at the user's line (the call that read
it), not inside torch's DataLoader."""

from __future__ import annotations

import warnings

import tlkit
from tlkit.datasets import DataWarning, from_folder
from tlkit.testing import make_photo_folder


def test_the_skip_warning_points_at_the_callers_line(tmp_path):
    photos = make_photo_folder(tmp_path / "p", classes=2, per_class=3, sizes=((48, 40),),
                               png_every=0, rotated=0, corrupt=1, csv=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        domain = from_folder(photos.root)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tlkit.fit(domain, backbone="small_cnn", mode="full", epochs=1, image_size=16,
                  batch_size=2, num_workers=0, progress=False, seed=0)
    skips = [w for w in rec if issubclass(w.category, DataWarning) and "skipping" in str(w.message)]
    assert skips, [str(w.message) for w in rec]
    assert {w.filename for w in skips} == {__file__}


def test_the_folder_check_says_where_files_are_skipped(tmp_path):
    """from_folder's early check serves prediction and evaluation too, not only training; its
    warning also points at the caller's line."""
    photos = make_photo_folder(tmp_path / "p", classes=2, per_class=2, sizes=((48, 40),),
                               png_every=0, rotated=0, corrupt=1, csv=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        from_folder(photos.root)
    (warning,) = [w for w in rec if issubclass(w.category, DataWarning)]
    message = str(warning.message)
    assert "during training" not in message
    assert "training, evaluation and prediction" in message
    assert warning.filename == __file__
