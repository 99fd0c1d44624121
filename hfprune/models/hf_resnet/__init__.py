"""The hf_resnet family (transformers' ResNetForImageClassification, e.g. microsoft/resnet-18 and -50) with a
per-block-width pruned class: its model code and its adapter."""
