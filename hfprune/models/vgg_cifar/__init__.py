"""The vgg_cifar family (VGG-11/13/16/19 with BN for 32x32 images): its model code and its adapter."""
