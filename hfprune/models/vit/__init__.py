"""The vit family: its model code and its adapter."""
