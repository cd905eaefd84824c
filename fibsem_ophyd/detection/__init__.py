"""Feature detection: segmentation (ONNX, onnxruntime) and OpenFIBSEM's features.

Pure: numpy, scipy and onnxruntime (the ``ml`` extra); matplotlib only for the plots. Used by
the plans (:func:`fibsem_ophyd.plans.detect`); never imports the simulator or ophyd.
"""

from ._evaluation import evaluate_keypoints, plot_evaluation
from ._features import (
    FEATURES,
    CopperAdapterBottomEdge,
    CopperAdapterCentre,
    CopperAdapterTopEdge,
    DetectedFeatures,
    Feature,
    ImageCentre,
    LamellaBottomEdge,
    LamellaCentre,
    LamellaLeftEdge,
    LamellaRightEdge,
    LamellaTopEdge,
    LandingPost,
    NeedleTip,
    NeedleTipBottom,
    Point,
    VolumeBlockBottomEdge,
    VolumeBlockBottomLeftCorner,
    VolumeBlockBottomRightCorner,
    VolumeBlockCentre,
    VolumeBlockTopEdge,
    VolumeBlockTopLeftCorner,
    VolumeBlockTopRightCorner,
    check_keypoint,
    detect_features,
    detect_features_in_mask,
    get_feature,
    get_objects,
)
from ._metrics import iou_per_class, mean_iou_per_class
from ._model import CLASS_NAMES, SHIPPED_MODEL, SegmentationModel, decode_segmap, load_model
from ._plots import plot_bounding_boxes, plot_detection, plot_detections, plot_segmentations

__all__ = [
    "load_model", "SegmentationModel", "SHIPPED_MODEL", "CLASS_NAMES", "decode_segmap",
    "Feature", "Point", "DetectedFeatures", "FEATURES", "get_feature", "detect_features",
    "detect_features_in_mask", "get_objects", "check_keypoint", "iou_per_class",
    "mean_iou_per_class",
    "ImageCentre", "NeedleTip", "NeedleTipBottom", "LamellaCentre", "LamellaLeftEdge",
    "LamellaRightEdge", "LamellaTopEdge", "LamellaBottomEdge", "LandingPost",
    "CopperAdapterCentre", "CopperAdapterTopEdge", "CopperAdapterBottomEdge",
    "VolumeBlockCentre", "VolumeBlockTopEdge", "VolumeBlockBottomEdge",
    "VolumeBlockTopLeftCorner", "VolumeBlockTopRightCorner", "VolumeBlockBottomLeftCorner",
    "VolumeBlockBottomRightCorner",
    "evaluate_keypoints", "plot_evaluation",
    "plot_segmentations", "plot_detection", "plot_detections", "plot_bounding_boxes",
]
