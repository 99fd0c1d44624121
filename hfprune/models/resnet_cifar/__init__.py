"""The resnet_cifar family (ResNet-20/32/44/56/110 for 32x32 images): its model code and its adapter."""
