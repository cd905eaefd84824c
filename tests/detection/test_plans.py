"""The detect plan with a real RunEngine and Tiled catalog: frame, mask TIFF and keypoints in
one run; a supervised pause, a correction stored beside the model's guess; the data engine
reads them back and exports OpenFIBSEM's layout, which evaluate_keypoints reads."""

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted

from fibsem_ophyd.detection import detect_features_in_mask, evaluate_keypoints, load_model
from fibsem_ophyd.plans import correct_keypoint, detect, pending_corrections
from fibsem_ophyd.storage import detection_dataset, export_detection_dataset, load_images


def _scene(session):
    sim = session.backend
    c = sim.truth.surface_point("ion")
    sim.liftout.add_lamella(c[:2], width=30e-6, depth=6e-6, thickness=3e-6)
    return sim


def test_detect_stores_frame_mask_and_keypoints(session, microscope):
    _scene(session)
    res = session.RE(detect(microscope.fib, ["LamellaCentre", "ImageCentre"])).plan_result
    run = session.catalog[res["uid"]]
    assert run.metadata["start"]["detection"]["features"] == ["LamellaCentre", "ImageCentre"]
    (frame,) = load_images(run, "ion")
    (mask,) = load_images(run, "detection", key="detection_mask_image")
    # the stored mask is the model's segmentation of the stored frame
    model = load_model()
    assert np.array_equal(mask.data, model.inference(frame.data))
    ev = run["detection"].read()
    assert float(ev["detection_ImageCentre_x"].values[0]) == 384 // 2
    # the stored keypoints are the features of the stored mask
    det = detect_features_in_mask(frame.data, mask.data, ["LamellaCentre"],
                                  frame.pixel_size)
    got = res["features"]["LamellaCentre"]
    if det.features[0].px is None:
        assert got is None and np.isnan(float(ev["detection_LamellaCentre_x"].values[0]))
    else:
        assert got == (det.features[0].px.x, det.features[0].px.y)
        assert float(ev["detection_LamellaCentre_x"].values[0]) == got[0]
        assert float(ev["detection_LamellaCentre_mx"].values[0]) == pytest.approx(
            (got[0] - 192) * frame.pixel_size)


def test_supervised_correction_and_data_engine(session, microscope, tmp_path):
    _scene(session)
    RE = session.RE
    with pytest.raises(RunEngineInterrupted):
        RE(detect(microscope.fib, ["LamellaCentre", "ImageCentre"], supervised=True))
    assert RE.state == "paused"
    correct_keypoint("LamellaCentre", 200.0, 140.0)
    assert pending_corrections() == {"LamellaCentre": (200.0, 140.0)}
    with pytest.raises(ValueError, match="unknown feature 'Lamella'"):
        correct_keypoint("Lamella", 1.0, 2.0)
    res = RE.resume().plan_result
    assert res["corrected"] == {"LamellaCentre": (200.0, 140.0)}
    run = session.catalog[res["uid"]]
    corr = run["correction"].read()
    assert float(corr["correction_LamellaCentre_x"].values[0]) == 200.0
    assert int(corr["correction_LamellaCentre_correct"].values[0]) == 0
    assert int(corr["correction_ImageCentre_correct"].values[0]) == 1
    guess = res["features"]["LamellaCentre"]
    if guess is not None:
        assert float(corr["correction_LamellaCentre_dpx"].values[0]) == guess[0] - 200.0
    # an unsupervised one too: the data engine tells them apart
    session.RE(detect(microscope.fib, ["ImageCentre"]))
    every = detection_dataset(session.catalog)
    assert len(every) == 2
    (item,) = detection_dataset(session.catalog, corrected=True)
    assert item.uid == res["uid"]
    assert item.correction == {"LamellaCentre": (200.0, 140.0)}
    assert item.image.shape == item.mask.shape == (256, 384)
    assert len(detection_dataset(session.catalog, corrected=False)) == 1
    # OpenFIBSEM's layout, read back by the evaluation as ground truth
    csv_path = export_detection_dataset([item], tmp_path / "export")
    assert (tmp_path / "export" / f"{item.uid}.tif").is_file()
    assert (tmp_path / "export" / "mask" / f"{item.uid}.tif").is_file()
    ev = evaluate_keypoints(csv_path, model=load_model(), thresholds=(1000, 10))
    rows = {r["feature"]: r for r in ev.rows}
    assert rows["LamellaCentre"]["truth"] == (200.0, 140.0)
    assert rows["ImageCentre"]["error"] == 0.0
    table = {r["feature"]: r for r in ev.table()}
    assert table["ImageCentre"]["accuracy_10"] == 100.0


def test_detect_on_a_given_frame_and_bad_input(session, microscope):
    img = np.full((256, 384), 100, dtype=np.uint8)
    res = session.RE(detect(microscope.fib, ["ImageCentre"], image=img,
                            pixel_size=1e-7)).plan_result
    run = session.catalog[res["uid"]]
    (stored,) = load_images(run, "detection_image")
    assert np.array_equal(stored.data, img)
    with pytest.raises(ValueError, match="unknown feature 'Tip'"):
        session.RE(detect(microscope.fib, ["Tip"]))
    with pytest.raises(ValueError, match="pixel_size"):
        session.RE(detect(microscope.fib, ["ImageCentre"], image=img))
    with pytest.raises(ValueError, match=r"uint8 \(H, W\) frame, got dtype float64"):
        session.RE(detect(microscope.fib, ["ImageCentre"], image=img.astype(float),
                          pixel_size=1e-7))
