"""The models people pick today that issue 14 times archprof on (torchvision and timm, from
the test extra): `bench_analysis.py` against the peers, `bench_revisions.py` against an
earlier commit."""

HUB_MODELS = (
    "torchvision:resnet50",
    "timm:mobilenetv3_large_100",
    "torchvision:efficientnet_b0",
    "torchvision:convnext_tiny",
    "torchvision:vit_b_16",
    "timm:regnety_016",
)
