"""The project's words, each defined once and imported everywhere.

Motion models, corruption methods, contrast kinds, clinical thresholds and
the columns of every result table.  This module imports nothing, so the
Slicer module can read it before torch is installed.
"""
from __future__ import annotations

#: The two motion algorithms (training, evaluation, ``compare``).
KSPACE, TORCHIO = "kspace", "torchio"
MOTION_MODELS = (KSPACE, TORCHIO)
#: What ``corrupt`` and the Slicer module offer: the two algorithms, the paper's k-space variant, or either at random.
CORRUPTION_METHODS = (KSPACE, "paper", TORCHIO, "random")
#: Contrast changes (training's augmentation and the teaching panel).
CONTRAST_KINDS = ("gamma", "log", "sigmoid", "ahe")
#: Each kind's main parameter as the teaching panel offers it (``contrast.make_contrast``): (default, lowest,
#: highest, the slider's step).  gamma's gamma (1 changes nothing), log's gain, sigmoid's gain (cut-off 0.5),
#: AHE's clip limit, which must lie in (0, 1].  The panel's one slider takes the kind's range when the kind
#: changes.
CONTRAST_PARAMETERS = {"gamma": (1.8, 0.1, 5.0, 0.05), "log": (1.0, 0.1, 3.0, 0.05),
                       "sigmoid": (8.0, 0.5, 15.0, 0.05), "ahe": (0.02, 0.005, 1.0, 0.005)}

#: Smallest side, in voxels, of a slice the method scores or moves (a volume needs a plane of MIN_SIZE x MIN_SIZE).
MIN_SIZE = 16

#: Lower SSIM bound of the clinical classes "good" and "sufficient"; below the second: "rescan".
CLINICAL_GOOD = 0.85
CLINICAL_SUFFICIENT = 0.60
CLINICAL_NAMES = {1: "good", 2: "sufficient", 3: "rescan"}
#: The class of a slice that was not scored (too little head, or no prediction), in every scheme.
NOT_SCORED = -1

#: One row per slice (``score`` output, the CLI module's table; the Slicer table drops ``file``).
SLICE_COLUMNS = ["file", "axis", "slice", "predicted_ssim", "clinical_class", "class3", "class5", "class10",
                 "foreground"]
#: One row per slice of ``ssimquality corrupt --report`` (and the Slicer module's corruption table).
CORRUPTION_COLUMNS = ["slice", "ssim", "foreground", "method"]
#: A volume's verdict when none of its slices holds enough head to score (otherwise a clinical class name).
VERDICT_NO_FOREGROUND = "no foreground"
#: The verdict in a folder's summary row for a file that could not be scored at all (the reason is in the errors).
VERDICT_NOT_SCORED = "not scored"
#: A volume's verdict: rescan when at least this share of its scored slices is rescan, else good when at least
#: ``VERDICT_GOOD_SHARE`` is good, else sufficient.
VERDICT_RESCAN_SHARE = 0.2
VERDICT_GOOD_SHARE = 0.8
#: The type of each numeric column, as 3D Slicer's tables name them (the other columns are text): written beside a
#: ``.tsv`` table as its ``.schema.tsv``, without which Slicer reads every column as text (no plot, no numeric sort).
COLUMN_TYPES = {"axis": "int", "slice": "int", "predicted_ssim": "double", "clinical_class": "int", "class3": "int",
                "class5": "int", "class10": "int", "slices": "int", "slices_scored": "int",
                "mean_predicted_ssim": "double", "min_predicted_ssim": "double", "fraction_good": "double",
                "fraction_sufficient": "double", "fraction_rescan": "double", "ssim": "double"}
#: At most this many distinct voxel values: a label map or a mask, not an image (an MR image has thousands).
FEW_VALUES = 16
#: Below this correlation of neighbouring pixels (``slices.neighbour_correlation``, the median over a volume's
#: scored slices) a volume is noise, not an image: white noise gives 0 (± 0.01 at 256²), a voxel-shuffled scan
#: the same; the training recipe's inputs, at their acquired matrices, 0.50 at the least, 0.69 at the 0.1 % point
#: and 0.98 at the median (2,048 samples of the factory, seed 3; chosen on them, not on the held-out scans).
MIN_NEIGHBOUR_CORRELATION = 0.25
#: The devices a user picks from (the Slicer panel, the CLI module); "auto" is CUDA when present, else the CPU.
DEVICES = ("auto", "cpu", "cuda")
#: One row per volume; ``note`` says why its scores mean little (noise, signed intensities, a mask: the warning
#: printed while scoring) or, for a file that could not be scored (verdict ``VERDICT_NOT_SCORED``), why not.
SUMMARY_COLUMNS = ["file", "slices", "slices_scored", "mean_predicted_ssim", "min_predicted_ssim", "fraction_good",
                   "fraction_sufficient", "fraction_rescan", "verdict", "note"]
