"""The paper's published numbers (Hosu et al., CVPR 2019), as printed, for tables set beside ours.

SRCC and PLCC as fractions, accuracy in percent. params/paper/expected.yaml holds the same numbers
with tolerances; tests/test_paper_numbers.py checks that the two agree.
"""

# Table 2: narrow MLSP features of Inception-v3 on 224x224 crops of 256x256 rescaled images.
TABLE2 = {
    "features": {
        "Single-3FC (-aug)": (0.668, 0.676, 79.2),
        "Single-3FC": (0.676, 0.682, 79.3),
        "Multi-3FC": (0.673, 0.681, 79.1),
        "Single-1FC (all)": (0.644, 0.652, 77.9),
        "Single-1FC (5)": (0.570, 0.578, 75.8),
    },
    "finetune": {
        "Single-3FC (-aug)": (0.607, 0.583, 77.1),
        "Single-3FC": (0.658, 0.663, 78.5),
        "Multi-3FC": (0.655, 0.660, 78.4),
        "Single-3FC (+do)": (0.675, 0.682, 79.1),
        "Single-1FC (all)": (0.680, 0.684, 79.5),
        "Single-1FC (5)": (0.675, 0.681, 79.1),
    },
}

# Table 3: features of the original images; (*) = InceptionResNet-v2.
TABLE3 = {
    "inception_v3": {
        "Single-3FC (-aug)": (0.722, 0.726, 80.31),
        "Single-3FC": (0.729, 0.733, 80.65),
        "Pool-3FC": (0.745, 0.748, 81.43),
    },
    "inception_resnet_v2": {
        "Single-3FC (-aug)": (0.740, 0.742, 80.96),
        "Single-3FC": (0.743, 0.745, 81.37),
        "Pool-3FC (-aug)": (0.752, 0.755, 81.61),
        "Pool-3FC": (0.756, 0.757, 81.72),
    },
}



def table3_reference(backbone: str) -> tuple[str, dict]:
    """The paper's Table 3 rows to set beside a backbone's: its own, or, for a backbone the paper did
    not use, InceptionResNet-v2's (the paper's best)."""
    if backbone in TABLE3:
        return backbone, TABLE3[backbone]
    return "inception_resnet_v2", TABLE3["inception_resnet_v2"]


# Section 4.3: resolution alone.
RESOLUTION = {"pixels_mos_srcc": 0.188, "network_accuracy": 72.40, "majority_accuracy": 71.08}

# Table 4: as reported by each work ((*) = retrained by Hosu et al.); None = not reported.
TABLE4 = [
    # (method, reference in the paper, SRCC, PLCC, accuracy %, retrained by the MLSP authors)
    ("Murray et al.", "[17] AVA, CVPR 2012", None, None, 66.70, False),
    ("Kao et al.", "[5] ICIP 2015", None, None, 71.42, False),
    ("Lu et al.", "[12] DMA-Net, ICCV 2015", None, None, 74.46, False),
    ("Lu et al.", "[11] RAPID, ACM MM 2014", None, None, 75.42, False),
    ("Hii et al.", "[4] Multigap, ICIP 2017", None, None, 75.76, False),
    ("Mai et al.", "[15] MNA-CNN, CVPR 2016", None, None, 77.40, False),
    ("Kong et al.", "[9] ECCV 2016", 0.558, None, 77.33, False),
    ("Talebi et al. V2", "[22] NIMA, TIP 2018", 0.612, None, 81.51, False),
    ("Talebi et al. V3", "[22] NIMA with Inception-v3, retrained in the MLSP paper", 0.639, 0.645, 72.30, True),
    ("Ma et al.", "[14] A-Lamp, CVPR 2017", None, None, 81.70, False),
    ("Hosu et al. (Pool-3FC)", "MLSP, CVPR 2019, Table 4", 0.756, 0.757, 81.72, False),
]

TEST_IMAGES_READ = 19928
